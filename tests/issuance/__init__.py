"""Tests of backend/issuance: issuing and the certificate lifecycle, expiry and reminders, verification."""
