"""Shared basics with no tables: actors, identifiers (GB/T 36904), holder and organisation codes."""
