"""The evaluation gate's decisions, as plain functions over values (no I/O)."""
