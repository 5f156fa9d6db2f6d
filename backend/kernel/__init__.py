"""Shared basics with no tables: actors, ids, China time, identifiers (GB/T 36904), holder and organisation codes."""
