"""Benchmarks for mltrading-assets: `python -m bench --help`."""
