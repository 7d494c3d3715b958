"""Validation where data enters: every command that reads the database checks what it read.

:func:`read_checked_panel` is the one read path of the commands that load bars
(``train``, ``pretrain``, ``features compute``, ``predict``, ``audit``, ``walkforward
--db``). It applies the checks of ``plus-ultra data validate`` in one of two modes,
chosen by ``data.strict_validation``:

- **fast** (default): :func:`check_panel` runs vectorised numpy checks on the rows read
  (finite values, prices > 0, volume >= 0, OHLC consistency, unique and time-ordered
  keys); only when one fails does it run the Pandera checks of
  :func:`~.validation.drop_invalid_rows` to name the failures. Those are logged with
  their counts and the failing rows are dropped, as ``data build`` does without
  ``--strict-validation``.
- **strict**: :func:`check_source` first runs :func:`~.validation.validate_database`
  (every table, raw stored values, time zones, gaps, weekend bars) and halts on any
  error or warning — ``plus-ultra data validate --strict`` — then any failure in the rows
  read halts too.

Values the typed reader cannot parse at all (text such as ``'n/a'`` in a REAL column)
cannot be dropped after the read: :func:`raise_unreadable` turns the reader's parse
error into an :class:`EntryValidationError` in both modes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig
from .store import connect, list_tables, table_columns
from .validation_report import DataValidationError, ValidationReport

__all__ = [
    "EntryValidationError",
    "check_panel",
    "check_source",
    "raise_unreadable",
    "read_checked_panel",
    "unreadable_values",
]

log = logging.getLogger(__name__)

_PRICES = ("open", "high", "low", "close")
_OHLCV = (*_PRICES, "volume")
_N_KEYS = 3  # offending keys quoted per failure in the one-line message
_CHUNK = 500  # symbols per IN (...) list: far below SQLite's bound-parameter limit


class EntryValidationError(DataValidationError):
    """Data a command read fails validation; ``report`` holds every failure.

    The message has one line per failure: ``table.column [check] N rows: what, where —
    fix; first keys: …``, then how to list every offending row.
    """

    def __init__(self, report: ValidationReport, *, source: Path, why: str) -> None:
        super().__init__(report, strict=True)
        shown = report.failures
        lines = [f"{source}: {why} — {len(shown)} failing check{'s' * (len(shown) != 1)}:"]
        for f in sorted(shown, key=lambda f: f.severity != "error"):
            keys = "; ".join(" ".join(k) for k in f.first_keys[:_N_KEYS])
            lines.append(
                f"  - {f.table}.{f.column} [{f.check}] {f.n_rows:,} rows: {f.fix}"
                + (f"; first keys: {keys}" if keys else "")
            )
        lines.append(f"List every offending row with `plus-ultra data validate {source}`.")
        self.args = ("\n".join(lines),)


# --------------------------------------------------------------------------------------
# Fast path: the rows read
# --------------------------------------------------------------------------------------


def _rows_pass(panel: pd.DataFrame) -> bool:
    """True when every row passes the checks ``drop_invalid_rows`` runs on a panel.

    A superset gate: any row the Pandera checks would fail makes it False (it may be
    False for rows they accept, e.g. an index that is not a (timestamp, symbol) panel's).
    """
    if not set(_OHLCV) <= set(panel.columns):
        return False  # the full checks name the missing column
    o, h, low, c, v = (panel[name].to_numpy(dtype=np.float64) for name in _OHLCV)
    with np.errstate(invalid="ignore"):
        values_ok = (
            np.isfinite(v).all()
            and (v >= 0).all()
            and all((p > 0).all() and np.isfinite(p).all() for p in (o, h, low, c))
            and (low <= np.minimum(np.minimum(o, c), h)).all()
            and (h >= np.maximum(o, c)).all()
        )
    return bool(values_ok) and _keys_ordered(panel.index)


def _keys_ordered(index: pd.Index) -> bool:
    """(timestamp, symbol) keys unique and in time order, from the index codes alone."""
    if not isinstance(index, pd.MultiIndex) or list(index.names) != ["timestamp", "symbol"]:
        return False
    times, symbols = index.levels
    ts_codes, sym_codes = (np.asarray(c, dtype=np.int64) for c in index.codes)
    if not len(ts_codes):
        return True
    if ts_codes.min() < 0 or sym_codes.min() < 0 or not times.is_monotonic_increasing:
        return False  # NaT / missing symbol, or levels out of order
    # Strictly increasing (time code, symbol code) ⇒ no repeated key and, within each
    # symbol, strictly increasing timestamps.
    key = ts_codes * len(symbols) + sym_codes
    return bool(np.all(key[1:] > key[:-1]))


def _log(report: ValidationReport, source: Path) -> None:
    for failure in report.failures:
        log.warning("validation of %s: %s [%s]", source, failure.message, failure.check)
    for table, n in report.dropped.items():
        log.warning(
            "dropped %s %s rows of %s that fail validation (set data.strict_validation=true "
            "to halt instead)",
            f"{n:,}",
            table,
            source,
        )


def check_panel(
    panel: pd.DataFrame, *, source: str | Path, strict: bool = False
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate the ``series`` rows of a panel indexed by (timestamp, symbol).

    Returns the panel (minus failing rows when not ``strict``) and the report. Clean
    data costs a few vectorised passes over the OHLCV columns (≈ 5 ms per 10⁵ rows).
    ``strict``: any failure raises :class:`EntryValidationError`.
    """
    source = Path(source)
    if _rows_pass(panel):
        return panel, ValidationReport(rows={"series": len(panel)})
    from .validation import drop_invalid_rows  # Pandera (~0.3 s to import): only when needed

    kept, report = drop_invalid_rows("series", panel, strict=False)
    if strict and report.failures:
        raise EntryValidationError(
            report, source=source, why="the bars read fail validation (data.strict_validation)"
        )
    _log(report, source)
    return kept, report


# --------------------------------------------------------------------------------------
# Strict path: the whole database, as `plus-ultra data validate --strict`
# --------------------------------------------------------------------------------------


def check_source(path: str | Path, *, gap_tolerance: float = 5.0) -> ValidationReport:
    """``data validate --strict`` on ``path``: any error or warning raises.

    Raises :class:`EntryValidationError` (or :class:`~.store.StoreError` when the file
    is missing or not a database); returns the clean report otherwise.
    """
    from .validation import validate_database

    path = Path(path)
    report = validate_database(path, gap_tolerance=gap_tolerance)
    if not report.passed(strict=True):
        raise EntryValidationError(
            report, source=path, why="data validation failed (data.strict_validation)"
        )
    return report


# --------------------------------------------------------------------------------------
# Values the reader cannot parse
# --------------------------------------------------------------------------------------

#: table → (value columns that must hold numbers, columns the report needs)
_NUMERIC = {"series": _OHLCV, "indicators": ("value",)}


def _suspects(con, table: str, columns: Sequence[str], symbols: Sequence[str]) -> pd.DataFrame:
    """Rows of ``symbols`` the reader cannot convert: value columns holding text or blobs
    (Arrow cannot cast them) or times SQLite's date functions cannot parse."""
    bad = " OR ".join(f"typeof({c}) IN ('text', 'blob')" for c in columns)
    bad += " OR typeof(timestamp) != 'text' OR julianday(timestamp) IS NULL"
    frames = []
    for lo in range(0, len(symbols), _CHUNK):
        chunk = list(symbols[lo : lo + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        cursor = con.execute(
            f"SELECT * FROM {table} WHERE symbol IN ({marks}) AND ({bad}) "
            "ORDER BY symbol, timestamp",
            chunk,
        )
        names = [d[0] for d in cursor.description]
        frames.append(pd.DataFrame.from_records(cursor.fetchall(), columns=names))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


#: The reader fetches up to two days beyond the requested bounds before trimming (a text
#: filter that cannot see zone offsets), so values that far out can fail its parse too.
_READ_SLACK_MS = 2 * 86_400_000


def _in_range(raw: pd.DataFrame, lo_ms: int | None, hi_ms: int | None) -> pd.DataFrame:
    """Rows the reader fetches for the epoch-ms bounds; unparseable timestamps are kept."""
    from .validation_checks import parse_times

    if raw.empty or (lo_ms is None and hi_ms is None):
        return raw
    times = pd.DatetimeIndex(parse_times(raw["timestamp"]))
    ms = times.asi8 // 1_000_000
    inside = np.ones(len(raw), dtype=bool)
    if lo_ms is not None:
        inside &= ms >= lo_ms - _READ_SLACK_MS
    if hi_ms is not None:
        inside &= ms <= hi_ms + _READ_SLACK_MS
    return raw[times.isna() | inside].reset_index(drop=True)


def unreadable_values(
    db: str | Path,
    symbols: Sequence[str],
    lo_ms: int | None = None,
    hi_ms: int | None = None,
    *,
    indicators: bool = True,
) -> ValidationReport:
    """Failures of the stored rows of ``symbols`` that a typed reader cannot parse.

    A missing required column is one failure. Otherwise one cheap query per table
    (symbols are bound parameters) finds the rows whose
    ``series`` OHLCV (and ``indicators.value``) are stored as text or blobs, or whose
    times do not parse, among the rows the reader fetches for ``lo_ms`` .. ``hi_ms``
    (epoch ms; it reads up to two days beyond each bound; None = unbounded); the checks
    of ``data validate`` then name them. ``rows`` counts the suspect rows checked.
    """
    from .validation import drop_invalid_rows
    from .validation_checks import layout_for
    from .validation_messages import missing_column

    db = Path(db)
    report = ValidationReport()
    raws = {}
    with contextlib.closing(connect(db)) as con:
        present = list_tables(con)
        for table, columns in _NUMERIC.items():
            if table not in present or not (indicators or table == "series"):
                continue
            declared = list(table_columns(con, table))
            layout = layout_for(table, declared)
            missing = [c for c in layout.required if c not in declared] if layout else []
            report.failures += [missing_column(table, c, declared, layout) for c in missing]
            if not missing:
                raws[table] = _suspects(con, table, columns, symbols)
    for table, raw in raws.items():
        raw = _in_range(raw, lo_ms, hi_ms)
        if raw.empty:
            continue
        _, found = drop_invalid_rows(table, raw)
        report.failures.extend(found.failures)
        report.rows[table] = len(raw)
    return report


def raise_unreadable(
    db: str | Path,
    symbols: Sequence[str],
    lo_ms: int | None = None,
    hi_ms: int | None = None,
    *,
    indicators: bool = True,
) -> None:
    """Raise :class:`EntryValidationError` when :func:`unreadable_values` finds failures.

    Called by the panel reader when Arrow fails to parse a value; returns quietly when
    the stored values are fine (the caller then re-raises its own error) or when the
    check itself cannot run.
    """
    try:
        report = unreadable_values(db, symbols, lo_ms, hi_ms, indicators=indicators)
    except Exception as err:  # the reader's own error is the better report then
        log.debug("stored-type check of %s could not run: %s", db, err)
        return
    if report.failures:
        raise EntryValidationError(
            report,
            source=Path(db),
            why="stored values cannot be read as numbers or times (they halt a read whatever "
            "data.strict_validation says: fix them at the source, or delete those rows)",
        )


# --------------------------------------------------------------------------------------
# The read path of the commands
# --------------------------------------------------------------------------------------


def read_checked_panel(data: DataConfig) -> pd.DataFrame:
    """:func:`~.panel.read_panel` of what ``data`` describes, validated (see the module doc).

    Returns the panel indexed by (timestamp, symbol), without the rows that fail
    validation (non-strict) — or raises :class:`EntryValidationError` (strict, or values
    the reader cannot parse). Pass a ``data.model_copy(update=...)`` to read other
    symbols or dates.
    """
    from .panel import read_panel

    if data.strict_validation:
        check_source(data.sqlite_path, gap_tolerance=data.gap_tolerance)
    panel = read_panel(
        data.sqlite_path,
        data.symbols,
        data.start,
        data.end,
        include_indicators=data.include_indicators,
        cache=data.cache,
        cache_dir=data.cache_dir,
        threads=data.read_threads,
    )
    panel, _ = check_panel(panel, source=data.sqlite_path, strict=data.strict_validation)
    return panel
