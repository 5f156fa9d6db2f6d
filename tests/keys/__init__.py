"""Tests of backend/keys: signing keys and rotation, platform JWS, status lists, data-key rotation."""
