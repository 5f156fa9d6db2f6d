"""Tests of backend/catalog: loading the certificate catalog, and reading it through the department API."""
