"""The one rule for what a symbol may be, applied by every front door that names symbols.

``data import`` (files, samples, Yahoo), ``data fixture`` and the ``--symbols`` lists of
the commands all call :func:`check_symbols`, so a symbol one of them accepts, the others
accept too. A symbol is its text without surrounding spaces and must be:

* non-empty and at most :data:`MAX_SYMBOL_LENGTH` characters;
* free of commas (they separate symbols in ``--symbols SPY,QQQ`` and in config lists)
  and of control characters (tabs, newlines);

anything else is allowed — ``BRK.B``, ``BRK B``, ``^GSPC``, ``EURUSD=X``, ``ES=F``,
``BTC-USD``, ``BTC/USDT``, ``6758.T``. Symbols are always bound SQL parameters, so no
character needs escaping. Kept free of pandas so CLI help can import it cheaply.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["MAX_SYMBOL_LENGTH", "SYMBOL_RULE", "SymbolError", "check_symbols", "split_symbols"]

MAX_SYMBOL_LENGTH = 64
SYMBOL_RULE = (
    f"a symbol is 1 to {MAX_SYMBOL_LENGTH} characters without commas or control characters "
    "(e.g. SPY, BRK.B, ^GSPC, BTC-USD)"
)


class SymbolError(ValueError):
    """A symbol breaks :data:`SYMBOL_RULE`; the message names it, where it came from and the fix."""


def _problem(symbol: str) -> str | None:
    if not symbol:
        return "is empty"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"has {len(symbol)} characters (at most {MAX_SYMBOL_LENGTH})"
    if "," in symbol:
        return "contains a comma (commas separate symbols in lists)"
    if any(unicodedata.category(ch) == "Cc" for ch in symbol):
        return "contains a control character (tab, newline, …)"
    return None


def check_symbols(symbols: Iterable[str], where: str) -> list[str]:
    """``symbols`` stripped of surrounding spaces, in order; raises :class:`SymbolError`.

    ``where`` names the source in the message (``"--symbols"``, a file path). Every symbol
    must follow :data:`SYMBOL_RULE` and appear once.
    """
    cleaned = [str(s).strip() for s in symbols]
    bad = [(s, problem) for s in cleaned if (problem := _problem(s)) is not None]
    if bad:
        listed = "; ".join(f"{s!r} {problem}" for s, problem in bad[:5])
        raise SymbolError(f"{where}: {listed} — {SYMBOL_RULE}")
    dupes = sorted({s for s in cleaned if cleaned.count(s) > 1})
    if dupes:
        raise SymbolError(f"{where}: {dupes} given more than once — list each symbol once")
    return cleaned


def split_symbols(values: Iterable[str] | None, option: str = "--symbols") -> list[str] | None:
    """Symbols given on the command line (repeated flags and/or comma lists), checked.

    ``None`` when the option was not given (the command's default applies); an option given
    with nothing in it (``--symbols ","``) is an error naming ``option``, never a silent
    fall-back to the default symbols. Duplicates are dropped, first occurrence kept.
    """
    given = list(values or [])
    if not given:
        return None
    names = [part.strip() for value in given for part in value.split(",") if part.strip()]
    if not names:
        raise SymbolError(
            f"{option} {' '.join(repr(v) for v in given)}: no symbol in it — name at least one "
            f"(e.g. {option} SPY QQQ or {option} SPY,QQQ), or leave {option} out for the default"
        )
    return check_symbols(dict.fromkeys(names), option)
