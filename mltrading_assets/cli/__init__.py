"""The ``mltrading`` command and its helpers: the embedded server, launching ranged runs,
``doctor`` and ``stats``."""

from mltrading_assets.cli.main import main

__all__ = ["main"]
