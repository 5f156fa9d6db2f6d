"""Flask commands, one module per group."""
