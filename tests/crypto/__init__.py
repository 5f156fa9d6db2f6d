"""Tests of backend/crypto: field encryption, JWS, SD-JWT and presentations."""
