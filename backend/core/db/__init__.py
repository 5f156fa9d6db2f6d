"""Database helpers: rows, insert-once, paging, bulk inserts, SQLite writer turns, the health probe's read."""
