"""Tests of backend/audit: the audit chain and its signed checkpoints."""
