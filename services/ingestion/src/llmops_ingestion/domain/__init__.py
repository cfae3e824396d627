"""The ingestion service's decisions, as pure functions over plain values (no I/O)."""
