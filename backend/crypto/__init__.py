"""Pure cryptography, no models: canonical JSON, JWS, JWK, SD-JWT, presentations, encryption, masking."""
