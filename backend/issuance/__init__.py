"""Issuing certificates and their lifecycle: the Issuer, department verbs, expiry and reminders, verification."""
