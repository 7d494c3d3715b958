"""Source frames → ``series`` rows: map columns, resolve symbols, read times, one row per bar.

:func:`normalise_frame` handles the *long* layout (one symbol per file, or a symbol
column); :func:`normalise_wide` the *wide* one (a date column plus one close column per
symbol, stored as flat bars). Both read timestamps through
:func:`~.csv_dates.parse_timestamps` (detected date order, daily bars at their session
date) and share the symbol rule: a symbol is its text stripped of surrounding spaces —
from a symbol/ticker column, ``--symbol``, a wide file's header, or the file's stem.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .csv_dates import DataImportError, ParsedTimes, parse_timestamps

__all__ = [
    "COLUMN_ALIASES",
    "PRICES",
    "normalise_frame",
    "normalise_long",
    "normalise_wide",
    "one_row_per_bar",
    "read_source",
]

log = logging.getLogger(__name__)

PRICES = ("open", "high", "low", "close")
_TARGETS = ("timestamp", "symbol", *PRICES, "adj_close", "volume")

#: Source column names recognised without ``--map`` (compared lower-case, letters and
#: digits only, so ``Adj Close``, ``adj_close`` and ``Adj. Close*`` are one name).
COLUMN_ALIASES: dict[str, str] = {
    "date": "timestamp",
    "datetime": "timestamp",
    "time": "timestamp",
    "timestamp": "timestamp",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adjclose": "adj_close",
    "volume": "volume",
    "ticker": "symbol",
    "symbol": "symbol",
}
_PARQUET_MAGIC = b"PAR1"
_FILE_SUFFIXES = {".csv", ".txt", ".gz", ".bz2", ".xz", ".zip", ".parquet", ".pq"}


def _key(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _stem(path: str) -> str:
    """``data/AAPL.csv.gz`` → ``AAPL``: the file name less its data suffixes."""
    name = Path(path).name
    while Path(name).suffix.lower() in _FILE_SUFFIXES:
        name = Path(name).stem
    return name


def _hint(word: str, options: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" — did you mean {match[0]!r}?" if match else ""


def read_source(path: str | Path) -> pd.DataFrame:
    """Read one CSV (plain or .gz) or Parquet file; Parquet is recognised by its magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as fh:
        kind = "parquet" if fh.read(4) == _PARQUET_MAGIC else "csv"
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, comment="#", skipinitialspace=True)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise DataImportError(f"{path}: cannot read it as {kind} ({err})") from None
    # Parquet written from pandas often keeps the time (and symbol) in the index.
    if not isinstance(frame.index, pd.RangeIndex) or any(frame.index.names):
        frame = frame.reset_index()
    return frame


def _map_columns(frame: pd.DataFrame, mapping: Mapping[str, str] | None, where: str) -> dict:
    """Source column → target column: explicit ``mapping`` first, then the aliases."""
    found = [str(c) for c in frame.columns]
    by_lower = {c.lower(): c for c in found}
    by_key = {_key(c): c for c in found}
    chosen: dict[str, str] = {}
    for src, target in (mapping or {}).items():
        if target not in _TARGETS:
            raise DataImportError(
                f"{where}: --map {src}={target}: unknown target {target!r}"
                f"{_hint(target, _TARGETS)} Targets: {', '.join(_TARGETS)}"
            )
        col = by_lower.get(src.lower()) or by_key.get(_key(src))
        if col is None:
            raise DataImportError(
                f"{where}: --map {src}={target}: no column {src!r}{_hint(src, found)} "
                f"Columns found: {found}"
            )
        chosen[col] = target
    taken = set(chosen.values())
    for col in found:
        target = COLUMN_ALIASES.get(_key(col))
        if col in chosen or target is None or target in taken:
            continue
        chosen[col] = target
        taken.add(target)
    if "close" not in taken:
        raise DataImportError(
            f"{where}: no close column. Columns found: {found}. "
            f"Name it with --map, e.g. --map '{found[-1] if found else 'Price'}=close'"
        )
    if "timestamp" not in taken:
        raise DataImportError(
            f"{where}: no timestamp column. Columns found: {found}. "
            f"Name it with --map, e.g. --map '{found[0] if found else 'Date'}=timestamp'"
        )
    return chosen


def _resolve_symbol(frame: pd.DataFrame, symbol: str | None, stem: str | None, where: str):
    if "symbol" in frame.columns:
        if symbol is not None:
            raise DataImportError(
                f"{where}: has a symbol column and --symbol {symbol} was given — drop one of them"
            )
        values = frame["symbol"].astype("string").str.strip()
        if values.isna().any() or (values == "").any():
            raise DataImportError(
                f"{where}: column symbol has empty values — fill or drop those rows"
            )
        return values.astype(object)
    chosen = (symbol or stem or "").strip()  # the one symbol rule: text without edge spaces
    if not chosen:
        raise DataImportError(f"{where}: no symbol column — pass a symbol (CLI: --symbol SYM)")
    return chosen


def _numeric(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    text_bad = values.isna() & frame[column].notna()
    if text_bad.any():
        rows = np.flatnonzero(text_bad.to_numpy())[:3]
        sample = ", ".join(f"row {i + 2}: {frame[column].iloc[i]!r}" for i in rows)
        raise DataImportError(
            f"{where}: column {column}: {int(text_bad.sum())} values are not numbers ({sample})"
        )
    return values


def normalise_long(
    frame: pd.DataFrame,
    *,
    source: str,
    symbol: str | None,
    mapping: Mapping[str, str] | None,
    timezone: str,
    date_format: str | None,
    adjust: bool,
) -> tuple[pd.DataFrame, ParsedTimes]:
    """:func:`normalise_frame`, plus how the timestamps were read."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    chosen = _map_columns(frame, mapping, source)
    mapped = frame[list(chosen)].rename(columns=chosen)
    where = f"{source}: column {next(c for c, t in chosen.items() if t == 'timestamp')}"
    out = pd.DataFrame(index=mapped.index)
    times = parse_timestamps(
        mapped["timestamp"], timezone=timezone, date_format=date_format, where=where
    )
    out["timestamp"] = times.utc
    stem = _stem(source) if source != "frame" else None
    out["symbol"] = _resolve_symbol(mapped, symbol, stem, source)
    for col in (*PRICES, "adj_close", "volume"):
        if col in mapped.columns:
            out[col] = _numeric(mapped, col, source)
    present = [c for c in ("open", "high", "low") if c in out.columns]
    if present and len(present) < 3:
        missing = sorted({"open", "high", "low"} - set(present))
        raise DataImportError(
            f"{source}: has {present} but no {missing} — map them with --map, or drop the "
            "partial columns to import close-only bars"
        )
    out = out.dropna(subset=[c for c in (*PRICES, "adj_close") if c in out.columns], how="all")
    if not present:
        log.warning("%s: close only — open, high and low set equal to close", source)
        for col in ("open", "high", "low"):
            out[col] = out["close"]
    if "volume" not in out.columns:
        log.warning("%s: no volume column — volume set to 0", source)
        out["volume"] = 0.0
    if "adj_close" in out.columns:
        if adjust:
            factor = out["adj_close"] / out["close"]
            out[list(PRICES)] = out[list(PRICES)].mul(factor, axis=0)
        out = out.drop(columns="adj_close")
    return one_row_per_bar(out[["timestamp", "symbol", *PRICES, "volume"]], source), times


def normalise_frame(
    frame: pd.DataFrame,
    *,
    source: str = "frame",
    symbol: str | None = None,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    date_format: str | None = None,
    adjust: bool = True,
) -> pd.DataFrame:
    """One source frame → ``series`` rows sorted by (symbol, timestamp).

    Returns columns ``timestamp`` (datetime64, UTC), ``symbol`` (str), ``open, high,
    low, close, volume`` (float64). Timestamps are read by
    :func:`~.csv_dates.parse_timestamps`: the date order is detected (or given as
    ``date_format``), dates are daily bars at 00:00 UTC of their date, other naive times
    are wall-clock in ``timezone``. Rows with no price at all (holidays, dividend rows)
    are dropped; exact duplicate rows are dropped; conflicting duplicates are an error.
    With ``adjust`` and an adjusted-close column, OHLC are scaled by ``adj_close / close``
    so returns include dividends and splits. A close-only source becomes flat bars
    (open = high = low = close); a missing volume becomes 0.
    """
    series, _ = normalise_long(
        frame,
        source=source,
        symbol=symbol,
        mapping=mapping,
        timezone=timezone,
        date_format=date_format,
        adjust=adjust,
    )
    return series


def _wide_time_column(frame: pd.DataFrame, mapping: Mapping[str, str] | None, where: str) -> str:
    found = [str(c) for c in frame.columns]
    for src, target in (mapping or {}).items():
        if target != "timestamp":
            raise DataImportError(
                f"{where}: --map {src}={target}: a wide file has one date column and one "
                "close column per symbol, so only --map COLUMN=timestamp applies"
            )
        col = next((c for c in found if _key(c) == _key(src)), None)
        if col is None:
            raise DataImportError(
                f"{where}: --map {src}=timestamp: no column {src!r}{_hint(src, found)} "
                f"Columns found: {found}"
            )
        return col
    dates = [c for c in found if COLUMN_ALIASES.get(_key(c)) == "timestamp"]
    if len(dates) != 1:
        raise DataImportError(
            f"{where}: a wide file needs one date column (Date, Datetime, Time or Timestamp); "
            f"columns found: {found} — name it with --map, e.g. --map "
            f"'{found[0] if found else 'Day'}=timestamp'"
        )
    return dates[0]


def normalise_wide(
    frame: pd.DataFrame,
    *,
    source: str,
    mapping: Mapping[str, str] | None,
    timezone: str,
    date_format: str | None,
) -> tuple[pd.DataFrame, ParsedTimes]:
    """A date column plus one close column per symbol → flat ``series`` rows (volume 0).

    Symbols are the column headers, stripped of surrounding spaces (the rule for symbol
    values in a long file); an empty cell is a bar the symbol does not have (ragged
    calendars).
    """
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    frame = frame.reset_index(drop=True)
    time_col = _wide_time_column(frame, mapping, source)
    times = parse_timestamps(
        frame[time_col],
        timezone=timezone,
        date_format=date_format,
        where=f"{source}: column {time_col}",
    )
    closes = {}
    for col in frame.columns:
        name = str(col).strip()
        if str(col) == time_col:
            continue
        if not name or name.startswith("Unnamed:"):
            raise DataImportError(
                f"{source}: a column has no header (found {list(map(str, frame.columns))}) — "
                "in a wide file every column after the date is named by its symbol"
            )
        if name in closes:
            raise DataImportError(f"{source}: symbol {name!r} heads two columns — keep one")
        closes[name] = _numeric(frame, col, source)
    if not closes:
        raise DataImportError(
            f"{source}: only a date column — a wide file needs one column per symbol"
        )
    wide = pd.DataFrame(closes).assign(timestamp=times.utc)
    long = wide.melt(id_vars="timestamp", var_name="symbol", value_name="close").dropna(
        subset=["close"]
    )
    price = long["close"]
    long = long.assign(open=price, high=price, low=price, volume=0.0)
    return one_row_per_bar(long[["timestamp", "symbol", *PRICES, "volume"]], source), times


def one_row_per_bar(series: pd.DataFrame, where: str) -> pd.DataFrame:
    """Drop exact duplicate bars, refuse conflicting ones, sort by (symbol, timestamp)."""
    series = series.drop_duplicates()
    clash = series.duplicated(["symbol", "timestamp"], keep=False)
    if clash.any():
        first = series.loc[clash].iloc[0]
        raise DataImportError(
            f"{where}: {int(clash.sum())} rows share a (symbol, timestamp) with different "
            f"values, first {first['symbol']} at {first['timestamp']:%Y-%m-%dT%H:%M:%SZ} — "
            "keep one row per bar (trim overlapping files)"
        )
    return series.sort_values(["symbol", "timestamp"], kind="stable", ignore_index=True)
