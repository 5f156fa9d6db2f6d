"""Tests of backend/auth: every route declares its caller, checked before the request is read."""
