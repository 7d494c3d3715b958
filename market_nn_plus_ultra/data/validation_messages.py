"""Findings → :class:`ValidationFailure` with the offending keys and a concrete fix.

Every message says how many rows, where (which symbols, from when) and what to do, e.g.
``12 null values for AAPL (10), MSFT (2) from 2021-03-01T14:30:00Z — drop those rows, or
fill them (e.g. forward-fill) and re-import``.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from .validation_checks import Finding, TableLayout, zone_labels
from .validation_report import ValidationFailure

__all__ = [
    "describe",
    "empty_table",
    "gap_failure",
    "missing_column",
    "missing_table",
    "unknown_column",
]

_N_KEYS = 5
_STORED_AS = "2024-01-02T14:30:00Z"

#: check → (what failed, with {n} and {ex}; the fix)
_TEXT: dict[str, tuple[str, str]] = {
    "not_null": (
        "{n} null values",
        "drop those rows, or fill them (e.g. forward-fill) and re-import",
    ),
    "nan": ("{n} NaN values", "drop those rows, or fill them (e.g. forward-fill) and re-import"),
    "numeric": (
        "{n} values are not numbers ({ex})",
        "the column is REAL: correct those values at the source or drop the rows",
    ),
    "integer": ("{n} values are not whole numbers ({ex})", "store integers in this column"),
    "finite": (
        "{n} infinite values",
        "replace ±inf (often a division by zero upstream) or drop those rows",
    ),
    "positive": (
        "{n} prices are zero or negative ({ex})",
        "prices must be > 0: fix the source (bad adjustment?) or drop those rows",
    ),
    "non_negative": ("{n} negative values ({ex})", "values must be >= 0: fix or drop those rows"),
    "ohlc_low": (
        "{n} bars have low above open, close or high",
        "fix the bars (columns swapped on import?) or drop them",
    ),
    "ohlc_high": (
        "{n} bars have high below open or close",
        "fix the bars (columns swapped on import?) or drop them",
    ),
    "duplicate_key": (
        "{n} rows repeat the key ({ex}) of an earlier row",
        "keep one row per key, e.g. frame.drop_duplicates(subset=[{ex}])",
    ),
    "timestamp_order": (
        "{n} rows are earlier than a row before them",
        "sort by ({ex}) before writing; keyed tables keep that order by themselves",
    ),
    "timestamp_format": (
        "{n} timestamps are not ISO-8601 ({ex})",
        f"write them as ISO-8601 UTC text, e.g. {_STORED_AS}",
    ),
    "mixed_timezones": (
        "{n} timestamps are in another time zone than the rest ({ex})",
        f"convert every timestamp to UTC and write it with a Z suffix, e.g. {_STORED_AS}",
    ),
    "unknown_symbol": (
        "{n} rows belong to symbols missing from assets ({ex})",
        "add those symbols to assets or remove their rows",
    ),
    "json": ("{n} values are not JSON ({ex})", "store json.dumps(value)"),
    "annotation_kind": (
        "{n} annotations have a kind other than note, anomaly or veto ({ex})",
        "write kind as note, anomaly or veto",
    ),
    "veto_rationale": (
        "{n} vetoes have no rationale",
        "a veto must say why: fill rationale (plus-ultra annotate add --rationale TEXT)",
    ),
}
_WARNINGS = {"json", "gap", "unknown_column"}


def _examples(values: pd.Series, limit: int = 3) -> str:
    shown = [repr(v) if isinstance(v, str) else str(v) for v in values.drop_duplicates()[:limit]]
    more = ", …" if values.nunique(dropna=False) > limit else ""
    return "e.g. " + ", ".join(shown) + more if shown else "null"


def _first_keys(rows: pd.DataFrame, layout: TableLayout) -> tuple[tuple[str, ...], ...]:
    cols = [c for c in layout.report_keys if c in rows.columns]
    head = rows[cols].head(_N_KEYS).astype(object)
    return tuple(tuple("" if pd.isna(v) else str(v) for v in row) for row in head.to_numpy())


def _where(rows: pd.DataFrame) -> str:
    """``for AAPL (10), MSFT (2) from 2021-03-01T14:30:00Z``."""
    parts = []
    if "symbol" in rows.columns and rows["symbol"].notna().any():
        counts = rows["symbol"].value_counts()
        names = ", ".join(f"{s} ({n:,})" for s, n in counts.head(3).items())
        extra = f" and {len(counts) - 3} more symbols" if len(counts) > 3 else ""
        parts.append(f"for {names}{extra}")
    if "timestamp" in rows.columns and rows["timestamp"].notna().any():
        parts.append(f"from {rows['timestamp'].dropna().iloc[0]}")
    return " ".join(parts)


def _example_text(check: str, column: str, rows: pd.DataFrame, layout: TableLayout) -> str:
    if check in ("duplicate_key", "timestamp_order"):
        cols = (
            column.split(",") if check == "duplicate_key" else [*(layout.order_group or ()), column]
        )
        return ", ".join(cols)
    if check == "unknown_symbol":
        symbols = rows["symbol"].drop_duplicates()
        return ", ".join(map(str, symbols[:5])) + (", …" if len(symbols) > 5 else "")
    if check == "mixed_timezones":
        return "zones " + ", ".join(
            f"{z}: {n:,}" for z, n in zone_labels(rows[column]).value_counts().items()
        )
    if column in rows.columns:
        return _examples(rows[column])
    return ""


def describe(
    table: str, raw: pd.DataFrame, layout: TableLayout, finding: Finding
) -> ValidationFailure:
    """A finding on ``raw`` (positional rows) as a failure with keys and a fix."""
    check, column = finding.check, finding.column
    if finding.mask is None:  # a check that could not run, or a dtype the coercion missed
        return ValidationFailure(
            table, column, check, 0, (), f"the check could not run ({finding.detail})"
        )
    rows = raw.loc[finding.mask] if len(raw) == len(finding.mask) else raw.iloc[:0]
    what, fix = _TEXT.get(check, ("{n} rows fail " + check, "fix or drop those rows"))
    ex = _example_text(check, column, rows, layout)
    if check == "mixed_timezones":  # the zone census of the whole column
        ex = _example_text(check, column, raw, layout)
    text = what.format(n=f"{int(finding.mask.sum()):,}", ex=ex)
    where = _where(rows)
    severity = "warning" if check in _WARNINGS else "error"
    if check == "unknown_symbol" and table != "series":
        severity = "warning"
    return ValidationFailure(
        table=table,
        column=column,
        check=check,
        n_rows=int(finding.mask.sum()),
        first_keys=_first_keys(rows, layout),
        fix=f"{text}{' ' + where if where else ''} — {fix.format(ex=ex)}",
        severity=severity,
    )


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def missing_table(table: str, present: list[str], description: str) -> ValidationFailure:
    fix = (
        f"table `{table}` ({description}) is missing; the database has tables {present}"
        f"{_did_you_mean(table, present)} — create it with `plus-ultra data import` or "
        "`plus-ultra data fixture`"
    )
    return ValidationFailure(table, "*", "missing_table", 0, (), fix)


def missing_column(
    table: str, column: str, present: list[str], layout: TableLayout
) -> ValidationFailure:
    extra = [c for c in present if c not in layout.types]
    fix = (
        f"column `{column}` ({layout.types.get(column, 'TEXT')}) is missing; `{table}` has "
        f"columns {present}{_did_you_mean(column, extra or present)} — add or rename it, "
        "then re-import"
    )
    return ValidationFailure(table, column, "missing_column", 0, (), fix)


def unknown_column(table: str, column: str, layout: TableLayout) -> ValidationFailure:
    fix = (
        f"column `{column}` is not part of `{table}`{_did_you_mean(column, list(layout.types))}"
        f" — rename or drop it; the table's columns are {list(layout.types)}"
    )
    return ValidationFailure(table, column, "unknown_column", 0, (), fix, "warning")


def empty_table(table: str) -> ValidationFailure:
    fix = f"`{table}` has no rows — import data with `plus-ultra data import`"
    return ValidationFailure(table, "*", "empty_table", 0, (), fix)


def _duration(seconds: float) -> str:
    delta = pd.Timedelta(seconds=float(seconds)).round("min")
    days, rest = delta.days, delta - pd.Timedelta(days=delta.days)
    hours, minutes = rest.seconds // 3600, rest.seconds % 3600 // 60
    parts = (
        [f"{days}d"] * (days > 0) + [f"{hours}h"] * (hours > 0) + [f"{minutes}min"] * (minutes > 0)
    )
    return " ".join(parts) or f"{seconds:.0f}s"


def gap_failure(
    table: str, raw: pd.DataFrame, layout: TableLayout, gaps: pd.DataFrame, tolerance: float
) -> ValidationFailure:
    """One warning for all gaps: count, the largest, the first few (capped) as keys."""
    mask = np.zeros(len(raw), dtype=bool)
    mask[gaps["row"].to_numpy(dtype=np.int64)] = True
    rows = raw.loc[mask]
    worst = gaps.loc[gaps["seconds"].idxmax()]
    text = (
        f"{len(gaps):,} gaps in the bars longer than {tolerance:g}× the symbol's usual spacing "
        f"(nights, weekends and other regular closures excluded) {_where(rows)}; largest "
        f"{_duration(worst['seconds'])} before {worst['symbol']} {worst['end']:%Y-%m-%dT%H:%M:%SZ}"
        " — backfill the missing bars, or raise --gap-tolerance if these are real closures"
    )
    return ValidationFailure(
        table, "timestamp", "gap", len(gaps), _first_keys(rows, layout), text, "warning"
    )
