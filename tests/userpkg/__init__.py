"""A user's package, outside fedetf, holding a custom strategy (see README)."""
