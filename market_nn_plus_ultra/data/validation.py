"""Validate market data once, where it enters: a database file, frames, or a loader's rows.

- :func:`validate_database` reads every table of a SQLite file as raw stored values
  (plain ``sqlite3``: text stays text), so it sees what a typed reader would hide:
  unparseable timestamps, text in REAL columns, mixed time zones.
- :func:`validate_tables` checks frames before they are written or used.
- :func:`drop_invalid_rows` is the non-strict path for loaders: it drops the failing rows,
  counts them in the report and lets the run continue (``strict=True`` raises instead).

The Pandera schemas and checks are in :mod:`.validation_checks`, derived from
:data:`~.schema.TABLES`; gaps are found by :mod:`.validation_gaps`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import ALT_PREFIX, TABLES
from .store import StoreError, connect, list_tables, table_columns
from .validation_calendar import weekend_failure
from .validation_checks import TableLayout, layout_for, parse_times, run_checks
from .validation_gaps import find_gaps
from .validation_messages import (
    describe,
    empty_table,
    gap_failure,
    missing_column,
    missing_table,
    unknown_column,
)
from .validation_report import DataValidationError, ValidationFailure, ValidationReport

__all__ = [
    "DataValidationError",
    "ValidationFailure",
    "ValidationReport",
    "drop_invalid_rows",
    "validate_database",
    "validate_tables",
]

#: Row-level checks that do not make a row unusable (a loader re-sorts instead).
_NOT_DROPPED = {"timestamp_order"}


def _known_symbols(tables: Mapping[str, pd.DataFrame]) -> frozenset[str] | None:
    assets = tables.get("assets")
    if assets is None or "symbol" not in assets.columns:
        return None
    return frozenset(assets["symbol"].dropna().astype(str))


def _check_table(
    table: str,
    raw: pd.DataFrame,
    layout: TableLayout,
    *,
    known_symbols: frozenset[str] | None,
    gap_tolerance: float | None,
    extra_columns: bool = True,
) -> tuple[list[ValidationFailure], np.ndarray]:
    """Failures of one table and the mask of rows an error makes unusable."""
    raw = raw.reset_index(drop=True)
    columns = [str(c) for c in raw.columns]
    failures: list[ValidationFailure] = []
    bad = np.zeros(len(raw), dtype=bool)
    if extra_columns:
        failures += [unknown_column(table, c, layout) for c in columns if c not in layout.types]
    if raw.empty and TABLES.get(table, None) is not None and TABLES[table].required:
        failures.append(empty_table(table))
    for finding in run_checks(raw, layout, known_symbols=known_symbols):
        if finding.check == "missing_column":
            failures.append(missing_column(table, finding.column, columns, layout))
            continue
        failure = describe(table, raw, layout, finding)
        failures.append(failure)
        if (
            finding.mask is not None
            and failure.severity == "error"
            and finding.check not in _NOT_DROPPED
        ):
            bad |= finding.mask
    if gap_tolerance is not None and table == "series" and {"symbol", "timestamp"} <= set(columns):
        # gaps are measured on the usable bars only
        times = parse_times(raw["timestamp"]).where(~bad)
        gaps = find_gaps(raw["symbol"], times, gap_tolerance)
        if len(gaps):
            failures.append(gap_failure(table, raw, layout, gaps, gap_tolerance))
    return failures, bad


def _validate(
    tables: Mapping[str, pd.DataFrame],
    declared: Mapping[str, Mapping[str, str]],
    gap_tolerance: float,
) -> ValidationReport:
    if gap_tolerance <= 0:
        raise ValueError(f"gap_tolerance must be > 0 (got {gap_tolerance}); the default is 5.0")
    report = ValidationReport()
    known = _known_symbols(tables)
    for table, raw in tables.items():
        layout = layout_for(
            table, [str(c) for c in raw.columns], declared=declared.get(table), frame=raw
        )
        if layout is None:
            continue  # a table of the user's own: not ours to judge
        failures, _ = _check_table(
            table, raw, layout, known_symbols=known, gap_tolerance=gap_tolerance
        )
        report.failures.extend(failures)
        report.rows[table] = len(raw)
    if "series" in tables and "assets" in tables:
        # daily bars on a closed weekend day: the trace of day and month read swapped
        weekend = weekend_failure(tables["series"], tables["assets"])
        if weekend is not None:
            report.failures.append(weekend)
    return report


def validate_tables(
    tables: Mapping[str, pd.DataFrame], *, gap_tolerance: float = 5.0
) -> ValidationReport:
    """Validate frames keyed by table name (``series``, ``assets``, ``alt_sentiment``, …).

    Frames hold one row per stored row: timestamps as ISO-8601 text or datetimes (naive
    = UTC), numbers as numbers. Only the tables given are checked; symbols are checked
    against ``assets`` when it is given. Gaps in ``series`` longer than
    ``gap_tolerance`` × the symbol's usual bar spacing (regular closures excluded) are
    warnings, and so are daily bars on a weekend the symbol's ``asset_class`` does not
    trade (given ``assets``; see :mod:`.validation_calendar`). Tables the schema does not know (and not ``alt_*``) are skipped.
    """
    return _validate(tables, {}, gap_tolerance)


def _open(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(
            f"database {path} does not exist — create one with `plus-ultra data fixture` "
            "or `plus-ultra data import`"
        )
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a SQLite database file")
    if path.stat().st_size == 0:
        raise StoreError(
            f"{path} is empty (0 bytes), not a SQLite database — create one with "
            "`plus-ultra data fixture` or `plus-ultra data import`"
        )
    with path.open("rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise StoreError(
                f"{path} is not a SQLite database (its header is not 'SQLite format 3') — "
                "point to the .db/.sqlite file, or import CSV/Parquet with `plus-ultra data import`"
            )
    return connect(path)


def _read_raw(con: sqlite3.Connection, path: Path, table: str) -> pd.DataFrame:
    """Every row of ``table`` with values exactly as stored (text stays text)."""
    try:
        cursor = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=names, coerce_float=False)
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: table `{table}` cannot be read ({err})") from None


def validate_database(path: str | Path, *, gap_tolerance: float = 5.0) -> ValidationReport:
    """Validate every table of a SQLite database; never crashes on malformed content.

    Missing required tables (``assets``, ``series``) and columns, and every bad value,
    become failures in the report. A path that is missing, empty or not a SQLite file
    raises :class:`~.store.StoreError` with the reason.
    """
    path = Path(path)
    with contextlib.closing(_open(path)) as con:
        try:
            present = list_tables(con)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path} is not a readable SQLite database ({err})") from None
        report = ValidationReport()
        for name, spec in TABLES.items():
            if spec.required and name not in present:
                report.failures.append(missing_table(name, present, spec.description))
        ours = [t for t in present if t in TABLES or t.startswith(ALT_PREFIX)]
        tables = {t: _read_raw(con, path, t) for t in ours}
        declared = {t: table_columns(con, t) for t in ours}
    report.extend(_validate(tables, declared, gap_tolerance))
    return report


def drop_invalid_rows(
    table: str,
    frame: pd.DataFrame,
    *,
    strict: bool = False,
    gap_tolerance: float | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Drop the rows of ``frame`` that fail a check; the report counts them.

    ``frame`` may be flat or indexed by ``(timestamp, symbol)`` (a panel); columns the
    table does not know (a panel's indicators) are ignored. Rows out of time order are
    re-sorted rather than dropped. With ``strict`` any error raises
    :class:`DataValidationError` instead. A missing required column cannot be repaired
    by dropping rows and always raises. Gap warnings are added when ``gap_tolerance``
    is given.
    """
    index_names = [n for n in frame.index.names if n is not None]
    flat = frame.reset_index() if index_names else frame
    layout = layout_for(table, [str(c) for c in flat.columns], frame=flat)
    if layout is None:
        raise ValueError(
            f"no schema for table `{table}` — expected one of {sorted(TABLES)} or alt_<name>"
        )
    failures, bad = _check_table(
        table,
        flat[[c for c in flat.columns if c in layout.types]],
        layout,
        known_symbols=None,
        gap_tolerance=gap_tolerance,
        extra_columns=False,
    )
    report = ValidationReport(failures=failures, rows={table: len(frame)})
    if strict or any(f.check == "missing_column" for f in failures):
        report.raise_if_failed()
    kept = frame.iloc[np.flatnonzero(~bad)]
    if any(f.check == "timestamp_order" for f in failures):
        if index_names:
            kept = kept.sort_index(kind="stable")
        else:
            keys = [*(layout.order_group or ()), "timestamp"]
            kept = kept.sort_values(keys, kind="stable")
    if bad.any():
        report.dropped[table] = int(bad.sum())
    return kept, report
