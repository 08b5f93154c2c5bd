"""What a symbol may look like: validated before it reaches a source, a partition or SQL."""

import re

from mltrading_assets.sources.errors import InvalidSymbolError

# Yahoo tickers: letters, digits and . - ^ = (BRK-B, ^GSPC, EURUSD=X, ASAI.L).
_SYMBOL = re.compile(r"[A-Z0-9.\-^=]{1,15}")


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` unchanged if it is 1-15 characters of ``A-Z 0-9 . - ^ =`` with at
    least one letter or digit."""
    if (
        not isinstance(symbol, str)
        or not _SYMBOL.fullmatch(symbol)
        or not any(c.isalnum() for c in symbol)  # "..", "=", "^" alone are no tickers
    ):
        raise InvalidSymbolError(
            f"invalid symbol {symbol!r}: use 1-15 characters of A-Z, 0-9, '.', '-', '^', '=' "
            "with at least one letter or digit "
            "(upper case, as Yahoo Finance writes tickers, e.g. AAPL, BRK-B, ^GSPC)"
            + _suggestion(symbol)
        )
    return symbol


def is_valid_symbol(symbol: str) -> bool:
    try:
        validate_symbol(symbol)
    except InvalidSymbolError:
        return False
    return True


def _suggestion(symbol: object) -> str:
    """ " (did you mean NFLX?)" when the upper-cased, stripped name is a valid symbol."""
    if not isinstance(symbol, str):
        return ""
    guess = symbol.strip().upper()
    if guess == symbol or not _SYMBOL.fullmatch(guess) or not any(c.isalnum() for c in guess):
        return ""
    return f"; did you mean {guess}?"


def normalize_symbols(symbols: list[str]) -> list[str]:
    """Upper-case, strip and validate user-typed symbols, keeping order and dropping repeats."""
    seen: dict[str, None] = {}
    for raw in symbols:
        seen[validate_symbol(raw.strip().upper())] = None
    return list(seen)
