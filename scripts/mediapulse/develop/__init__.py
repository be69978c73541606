"""A developer's own commands: the main build and read-only queries."""
