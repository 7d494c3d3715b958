"""CSV / Parquet import: map columns, resolve symbols, convert times to UTC, validate, write.

Every front door (files, package-shipped samples, the Yahoo bootstrap) goes through the
same two steps: :func:`normalise_frame` turns one source frame into ``series`` rows
(UTC ``timestamp``, ``symbol``, float OHLCV), and :func:`write_series` validates them
with the ``assets`` rows and writes atomically — a new file through ``write_database``,
an append through ``update_database`` in one transaction, upserting by (symbol,
timestamp) so re-importing the same data changes nothing.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .store import StoreError, read_table, update_database, write_database
from .validation import validate_tables

__all__ = [
    "ASSET_COLUMNS",
    "COLUMN_ALIASES",
    "DataImportError",
    "ImportResult",
    "import_frames",
    "normalise_frame",
    "read_source",
    "write_series",
]

log = logging.getLogger(__name__)

PRICES = ("open", "high", "low", "close")
ASSET_COLUMNS = ("asset_id", "symbol", "name", "sector", "asset_class", "currency", "exchange")
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
_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})$")
_PARQUET_MAGIC = b"PAR1"
_FILE_SUFFIXES = {".csv", ".txt", ".gz", ".bz2", ".xz", ".zip", ".parquet", ".pq"}


class DataImportError(ValueError):
    """Source data cannot be imported; the message names the file, the column and the fix."""


@dataclass(frozen=True)
class ImportResult:
    """What one import wrote: the database, row count, symbols and the time range (UTC)."""

    path: Path
    rows: int
    symbols: tuple[str, ...]
    new_symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        return (
            f"{self.rows:,} rows for {len(self.symbols)} symbol(s) "
            f"({', '.join(self.symbols[:8])}{' …' if len(self.symbols) > 8 else ''}) "
            f"from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        )


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


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise DataImportError(
            f"--timezone {name!r} is not an IANA time zone (e.g. 'America/New_York', 'UTC')"
            f"{_hint(name, sorted(zoneinfo.available_timezones()))}"
        ) from None
    return name


def _bad_values(text: pd.Series, parsed: pd.Series | pd.DatetimeIndex) -> list[str]:
    bad = np.asarray(pd.isna(parsed)) & text.notna().to_numpy() & (text.str.len() > 0).to_numpy()
    return [f"row {i + 2}: {text.iloc[i]!r}" for i in np.flatnonzero(bad)[:3]]


def _parse_text_times(text: pd.Series, where: str) -> pd.DatetimeIndex:
    text = text.astype("string").str.strip()
    aware = text.str.contains(_OFFSET, na=False).to_numpy()
    if aware.any() and not aware.all():
        first = text.iloc[int(np.flatnonzero(~aware)[0])]
        raise DataImportError(
            f"{where}: mixes times with and without a UTC offset (e.g. {first!r}) — "
            "write every time with an offset, or none and pass --timezone"
        )
    try:
        return pd.DatetimeIndex(pd.to_datetime(text, utc=bool(aware.all())))
    except (ValueError, TypeError):
        # A file whose rows use several layouts: parse each on its own, report the bad ones.
        parsed = pd.to_datetime(text, utc=bool(aware.all()), format="mixed", errors="coerce")
    bad = _bad_values(text, parsed)
    if bad:
        raise DataImportError(
            f"{where}: unreadable timestamps ({'; '.join(bad)}) — use ISO-8601 "
            "like 2024-01-02 or 2024-01-02T14:30:00Z"
        )
    return pd.DatetimeIndex(parsed)


def _to_utc(values: pd.Series, timezone: str, where: str) -> pd.DatetimeIndex:
    """Any timestamp column → tz-aware UTC; naive times are wall-clock in ``timezone``."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise DataImportError(
            f"{where}: holds numbers ({values.iloc[0]!r}, …), not dates — convert epoch "
            "numbers to ISO-8601 text or datetimes before importing"
        )
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        stamps = pd.DatetimeIndex(values)
    else:
        stamps = _parse_text_times(values, where)
    if stamps.isna().any():
        raise DataImportError(
            f"{where}: {int(stamps.isna().sum())} empty timestamps — drop those rows"
        )
    if stamps.tz is not None:
        return stamps.tz_convert("UTC")
    try:
        local = stamps.tz_localize(_timezone(timezone), ambiguous="raise", nonexistent="raise")
    except (ValueError, TypeError) as err:
        raise DataImportError(
            f"{where}: {err} — this wall-clock time does not exist or repeats in {timezone} "
            "(a daylight-saving change); export the file with UTC offsets to remove the doubt"
        ) from None
    return local.tz_convert("UTC")


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
    chosen = symbol or stem
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


def normalise_frame(
    frame: pd.DataFrame,
    *,
    source: str = "frame",
    symbol: str | None = None,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    adjust: bool = True,
) -> pd.DataFrame:
    """One source frame → ``series`` rows sorted by (symbol, timestamp).

    Returns columns ``timestamp`` (datetime64, UTC), ``symbol`` (str), ``open, high,
    low, close, volume`` (float64). Rows with no price at all (holidays, dividend rows)
    are dropped; exact duplicate rows are dropped; conflicting duplicates are an error.
    With ``adjust`` and an adjusted-close column, OHLC are scaled by ``adj_close / close``
    so returns include dividends and splits. A close-only source becomes flat bars
    (open = high = low = close); a missing volume becomes 0.
    """
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    chosen = _map_columns(frame, mapping, source)
    mapped = frame[list(chosen)].rename(columns=chosen)
    where = f"{source}: column {next(c for c, t in chosen.items() if t == 'timestamp')}"
    out = pd.DataFrame(index=mapped.index)
    out["timestamp"] = _to_utc(mapped["timestamp"], timezone, where)
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
    return _one_row_per_bar(out[["timestamp", "symbol", *PRICES, "volume"]], source)


def _one_row_per_bar(series: pd.DataFrame, where: str) -> pd.DataFrame:
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


def _new_assets(symbols: list[str], info: pd.DataFrame | None, first_id: int) -> pd.DataFrame:
    rows = pd.DataFrame({"symbol": symbols})
    if info is not None and not info.empty:
        known = info.drop(columns="asset_id", errors="ignore").drop_duplicates("symbol")
        rows = rows.merge(known, on="symbol", how="left")
    rows.insert(0, "asset_id", np.arange(first_id, first_id + len(rows), dtype=np.int64))
    for col in ASSET_COLUMNS:
        if col not in rows.columns:
            rows[col] = None
    return rows[list(ASSET_COLUMNS)]


def _validate(series: pd.DataFrame, assets: pd.DataFrame, where: Path) -> tuple[str, ...]:
    report = validate_tables({"series": series, "assets": assets})
    report.raise_if_failed()
    notes = tuple(
        f"{f.table}.{f.column}: {f.check} on {f.n_rows} rows (first {f.first_keys}) — {f.fix}"
        for f in report.failures
        if f.severity == "warning"
    )
    for note in notes:
        log.warning("%s: %s", where.name, note)
    return notes


def write_series(
    out_db: str | Path,
    series: pd.DataFrame,
    *,
    assets: pd.DataFrame | None = None,
    sources: Mapping[str, object] | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> ImportResult:
    """Validate normalised ``series`` rows and write them with ``assets`` rows for new symbols.

    ``series`` is :func:`normalise_frame`'s output. ``assets`` may describe the symbols
    (``symbol, name, sector, asset_class, currency, exchange``); it is used only for
    symbols the database does not have yet, whose ``asset_id`` continues after the largest
    one there. ``sources`` (symbol → JSON-able provenance) goes to ``metadata`` under
    ``source:<symbol>``. A new file is written atomically; ``append`` upserts by
    (symbol, timestamp) in one transaction; ``overwrite`` rebuilds the file.
    """
    path = Path(out_db)
    if append and overwrite:
        raise DataImportError(
            "--append and --overwrite exclude each other: append upserts into the "
            "database, overwrite rebuilds it — pass one"
        )
    if series.empty:
        raise DataImportError(f"{path}: nothing to import — the sources hold no price rows")
    updating = append and path.exists()
    if path.exists() and not (append or overwrite):
        raise StoreError(
            f"{path} already exists — pass --append to add rows (re-importing the same "
            "data changes nothing) or --overwrite to rebuild it"
        )
    have = read_table(path, "assets") if updating else pd.DataFrame(columns=list(ASSET_COLUMNS))
    symbols = sorted(series["symbol"].unique())
    fresh = sorted(set(symbols) - set(have["symbol"]))
    first_id = int(have["asset_id"].max()) + 1 if len(have) else 1
    added = _new_assets(fresh, assets, first_id)
    every = added if have.empty else pd.concat([have[list(ASSET_COLUMNS)], added])
    notes = _validate(series, every.reset_index(drop=True), path)
    metadata = {
        f"source:{sym}": json.dumps(info, sort_keys=True, default=str)
        for sym, info in (sources or {}).items()
    }
    if updating:
        update_database(path, {"series": series, "assets": added}, metadata=metadata)
    else:
        write_database(
            path, {"series": series, "assets": every}, overwrite=overwrite, metadata=metadata
        )
    return ImportResult(
        path=path,
        rows=len(series),
        symbols=tuple(symbols),
        new_symbols=tuple(fresh),
        start=series["timestamp"].min(),
        end=series["timestamp"].max(),
        warnings=notes,
    )


def import_frames(
    out_db: str | Path,
    frame: pd.DataFrame | str | Path | Sequence[pd.DataFrame | str | Path],
    *,
    symbol: str | None = None,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    append: bool = False,
    overwrite: bool = False,
    adjust: bool = True,
) -> ImportResult:
    """Import CSV/Parquet files or DataFrames of OHLCV bars into ``out_db``.

    Each input is one symbol (``symbol`` or, for a file, its stem) or a long frame with a
    symbol/ticker column. Column names follow :data:`COLUMN_ALIASES` unless ``mapping``
    (source → target) says otherwise. Naive times are wall-clock in ``timezone`` and are
    stored in UTC; times with offsets are converted. See :func:`write_series` for modes.
    """
    inputs = [frame] if isinstance(frame, pd.DataFrame | str | Path) else list(frame)
    if not inputs:
        raise DataImportError("nothing to import — give at least one file or frame")
    parts, files = [], {}
    for item in inputs:
        name = "frame" if isinstance(item, pd.DataFrame) else str(item)
        raw = item if isinstance(item, pd.DataFrame) else read_source(item)
        part = normalise_frame(
            raw, source=name, symbol=symbol, mapping=mapping, timezone=timezone, adjust=adjust
        )
        parts.append(part)
        for sym in part["symbol"].unique():
            files.setdefault(sym, set()).add(Path(name).name)
    sources = {
        sym: {"kind": "import", "files": sorted(names), "timezone": timezone, "adjusted": adjust}
        for sym, names in files.items()
    }
    series = _one_row_per_bar(pd.concat(parts, ignore_index=True), "inputs")
    return write_series(out_db, series, sources=sources, append=append, overwrite=overwrite)
