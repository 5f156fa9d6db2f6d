"""Plumbing under every area: request context, the request edge, clock, db helpers, small I/O helpers."""
