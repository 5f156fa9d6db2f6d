"""Test suite (a package, so fixtures and helpers are imported once, as tests.*)."""
