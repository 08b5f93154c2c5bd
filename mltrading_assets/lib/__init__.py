"""Dagster-side helpers the domains in ``defs/`` share: the body of a ranged per-symbol step,
batched per-partition events, ranged run requests, and per-symbol asset checks."""
