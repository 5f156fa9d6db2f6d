"""Database helpers: rows, insert-once, paging, bulk inserts, SQLite writer turns."""
