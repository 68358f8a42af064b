"""my_rules: a complete user package with its own tfopt optimizer (see README.md)."""
