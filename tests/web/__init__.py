"""Tests of backend/web: the staff console and the scan-to-verify page, also in a real browser."""
