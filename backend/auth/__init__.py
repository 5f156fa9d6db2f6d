"""Who is calling: department clients (bearer tokens), later citizens and staff; scope checks."""
