"""The per-symbol work and the worker processes that isolate it (no Dagster here)."""
