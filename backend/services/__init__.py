"""Domain verbs. Services take `actor` and `now`, flush but never commit, and never read request globals."""
