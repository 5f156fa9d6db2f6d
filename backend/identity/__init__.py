"""Who is who: citizens and sessions, department clients, staff, identity providers, login nonces."""
