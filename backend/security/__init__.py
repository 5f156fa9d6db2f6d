"""Security helpers: identifier validation, masking, cryptography."""
