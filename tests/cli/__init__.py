"""Tests of backend/cli command groups that no business area's tests cover."""
