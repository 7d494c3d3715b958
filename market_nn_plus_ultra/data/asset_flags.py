"""Marks of what a symbol's bars lack, kept in the ``asset_flags`` table.

A source with closes only (a wide file of closes, FRED's WTI, the VIX close) is stored as
flat bars, open = high = low = close, and a source without volume as volume 0: valid
``series`` rows, but an ATR or a volume z-score computed on them measures nothing. Every
importer marks such symbols when it writes them, from the rows themselves:

- ``close_only`` — every written bar of the symbol is flat (open = high = low = close);
- ``no_volume`` — every written bar has volume 0.

A mark is added when an import writes such rows and is never removed by a later append.
The feature pipeline skips features whose inputs a marked symbol lacks
(:func:`unknown_inputs`). The ``assets`` table is left as it is (its columns are a public
contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from .store import connect, list_tables

__all__ = [
    "CLOSE_ONLY",
    "FLAG_COLUMNS",
    "NO_VOLUME",
    "detect_flags",
    "read_flags",
    "unknown_inputs",
]

CLOSE_ONLY = "close_only"
NO_VOLUME = "no_volume"
#: flag → the ``series`` columns that hold placeholders for a symbol with that flag.
FLAG_COLUMNS: dict[str, tuple[str, ...]] = {
    CLOSE_ONLY: ("open", "high", "low"),
    NO_VOLUME: ("volume",),
}
_NOTES = {
    CLOSE_ONLY: "closes only: open = high = low = close on every imported bar",
    NO_VOLUME: "no volume: 0 on every imported bar",
}


def detect_flags(series: pd.DataFrame, sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """``asset_flags`` rows (``symbol, flag, note``) for the symbols of ``series`` that need one.

    ``series`` holds normalised bars (``symbol``, float ``open, high, low, close, volume``);
    ``sources`` (symbol → where its rows came from) prefixes the note.
    """
    close = series["close"]
    flat = (series["open"] == close) & (series["high"] == close) & (series["low"] == close)
    marks = (
        pd.DataFrame({CLOSE_ONLY: flat, NO_VOLUME: series["volume"] == 0}, index=series.index)
        .groupby(series["symbol"], sort=True)
        .all()
    )
    rows = [
        {"symbol": str(sym), "flag": flag, "note": _note(str(sym), flag, sources or {})}
        for sym, row in marks.iterrows()
        for flag in (CLOSE_ONLY, NO_VOLUME)
        if row[flag]
    ]
    return pd.DataFrame(rows, columns=["symbol", "flag", "note"])


def _note(symbol: str, flag: str, sources: Mapping[str, str]) -> str:
    where = sources.get(symbol)
    return f"{where}: {_NOTES[flag]}" if where else _NOTES[flag]


def read_flags(path: str | Path) -> pd.DataFrame:
    """The ``asset_flags`` rows of a database (empty when it predates the table)."""
    with contextlib.closing(connect(path)) as con:
        if "asset_flags" not in list_tables(con):
            return pd.DataFrame(columns=["symbol", "flag", "note"])
        return pd.read_sql_query(
            "SELECT symbol, flag, note FROM asset_flags ORDER BY symbol, flag", con
        )


def unknown_inputs(
    path: str | Path, symbols: Iterable[str] | None = None
) -> dict[str, frozenset[str]]:
    """``series`` column → the symbols (of ``symbols``, or all) whose values there are placeholders.

    E.g. ``{"open": {"^VIX"}, "high": {"^VIX"}, "low": {"^VIX"}, "volume": {"^VIX"}}``.
    """
    flags = read_flags(path)
    if symbols is not None:
        flags = flags[flags["symbol"].isin(set(symbols))]
    out: dict[str, set[str]] = {}
    for sym, flag in zip(flags["symbol"], flags["flag"], strict=True):
        for column in FLAG_COLUMNS.get(flag, ()):
            out.setdefault(column, set()).add(str(sym))
    return {column: frozenset(syms) for column, syms in out.items()}
