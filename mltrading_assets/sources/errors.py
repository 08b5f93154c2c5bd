"""Typed source errors, so callers can tell "retry later" from "this symbol has no data"."""


class SourceError(Exception):
    """Base of every error a bar source raises on purpose."""


class InvalidSymbolError(SourceError, ValueError):
    """The symbol text is not a ticker we accept."""


class SymbolNotFoundError(SourceError):
    """The source has no bars for the symbol (unknown, delisted, or empty download)."""


class BadBarsError(SourceError):
    """The source returned bars that fail validation; nothing of them is written."""


class TransientSourceError(SourceError):
    """Rate limit, timeout or network trouble: worth a retry later."""
