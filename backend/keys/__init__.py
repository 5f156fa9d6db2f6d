"""Platform key material and what it signs: key store, platform JWS, status lists, show-code tokens, data keys."""
