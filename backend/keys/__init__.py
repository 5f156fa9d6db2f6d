"""Platform key material and what it signs: the key store, platform JWS, status lists, data-key rotation."""
