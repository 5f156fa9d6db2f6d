"""Tests of backend/core: SQLite writers, lock timeouts, private instance files."""
