"""Pandera schemas for every table, derived from :data:`~.schema.TABLES`, and their checks.

Each table is validated in two passes, both lazy (every failure collected at once):

1. the *storage* schema runs on the raw values as SQLite holds them (text, numbers,
   NULL), so it can see unparseable or mixed-zone timestamps and text in REAL columns;
2. the *content* schema runs on the typed frame (UTC timestamps, float64 numbers):
   nulls, ±inf, price and volume ranges, OHLC consistency, duplicate keys, time order
   and symbols unknown to ``assets``.

:func:`run_checks` returns one boolean row mask per failing (column, check); turning
masks into messages with fixes is :mod:`.validation_messages`' job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrorReason, SchemaErrors

from .schema import ALT_PREFIX, TABLES

__all__ = [
    "ANNOTATION_KINDS",
    "Finding",
    "TableLayout",
    "layout_for",
    "parse_times",
    "run_checks",
    "to_typed",
    "zone_labels",
]

#: Checks whose failing rows are reported (pandera's own failure-case text is kept short).
_N_CASES = 5
_PRICE_COLUMNS = ("open", "high", "low", "close")
#: Columns whose values must be > 0 / >= 0, by table.
_POSITIVE = {"series": _PRICE_COLUMNS, "trades": ("price",)}
_NON_NEGATIVE = {"series": ("volume",), "corporate_actions": ("value",)}
#: Tables keyed by an id: their rows need not be in time order.
_UNORDERED = {"assets", "trades", "annotations", "metadata"}
#: TEXT columns besides ``timestamp`` that hold ISO-8601 times (NULL allowed), by table.
_TIME_TEXT = {"annotations": ("created",)}
#: The kinds of analyst annotation (``annotations.kind``; NULL reads as a note).
ANNOTATION_KINDS = ("note", "anomaly", "veto")
_ZONE = re.compile(
    r"[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?P<zone>Z|(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})?)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TableLayout:
    """How one table is checked: column types, required columns, keys and rules."""

    table: str
    types: dict[str, str]  # column -> TEXT | REAL | INTEGER, for every known column
    required: tuple[str, ...]
    nullable: frozenset[str]
    keys: tuple[tuple[str, ...], ...]  # unique keys, primary key first
    order_group: tuple[str, ...] | None  # rows must be in time order within these groups
    report_keys: tuple[str, ...]  # columns shown for an offending row

    def present(self, columns: list[str]) -> list[str]:
        return [c for c in self.types if c in columns]


@dataclass(frozen=True)
class Finding:
    """A failing check: ``mask`` marks the failing rows (None for a table-level failure)."""

    column: str
    check: str
    mask: np.ndarray | None = None
    detail: str = ""


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------


def _report_keys(columns: list[str], key: tuple[str, ...]) -> tuple[str, ...]:
    first = [c for c in ("symbol", "timestamp") if c in columns]
    return tuple(first + [c for c in key if c not in first])


def _order_group(table: str, columns: list[str], key: tuple[str, ...]) -> tuple[str, ...] | None:
    if table in _UNORDERED or "timestamp" not in columns:
        return None
    return tuple(c for c in key if c != "timestamp")


def _alt_type(declared: str | None, values: pd.Series | None) -> str:
    """REAL unless SQLite declares TEXT, or (for a frame) most values are not numbers."""
    if declared is not None:
        return "TEXT" if "CHAR" in declared or "TEXT" in declared or "CLOB" in declared else "REAL"
    if values is None or pd.api.types.is_numeric_dtype(values) or values.isna().all():
        return "REAL"
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce").notna() | _is_nan_text(present)
    return "REAL" if numeric.mean() >= 0.5 else "TEXT"


def layout_for(
    table: str,
    columns: list[str],
    *,
    declared: Mapping[str, str] | None = None,
    frame: pd.DataFrame | None = None,
) -> TableLayout | None:
    """The layout of ``table`` (None for a table the schema does not know).

    ``alt_<name>`` tables are declared by their data: ``timestamp``, an optional
    ``symbol`` and value columns, numeric unless SQLite declares them TEXT (``declared``:
    column → declared type) or, for a frame, most of their values are text.
    """
    spec = TABLES.get(table)
    if spec is not None:
        types = {c.name: c.sql_type for c in spec.columns}
        required = tuple(c.name for c in spec.columns if not c.nullable)
        nullable = frozenset(c.name for c in spec.columns if c.nullable)
        keys = (spec.primary_key, *spec.unique)
        key = spec.primary_key
    elif table.startswith(ALT_PREFIX):
        key = ("symbol", "timestamp") if "symbol" in columns else ("timestamp",)
        types = {c: "TEXT" for c in key}
        for col in columns:
            if col not in key:
                values = frame[col] if frame is not None else None
                types[col] = _alt_type((declared or {}).get(col), values)
        required = key
        nullable = frozenset(c for c in types if c not in key)
        keys = (key,)
    else:
        return None
    return TableLayout(
        table=table,
        types=types,
        required=required,
        nullable=nullable,
        keys=tuple(keys),
        order_group=_order_group(table, list(types), key),
        report_keys=_report_keys(list(types), key),
    )


# --------------------------------------------------------------------------------------
# Raw values → typed frame
# --------------------------------------------------------------------------------------


def _text(raw: pd.Series) -> pd.Series:
    """Non-null values as str (NULL stays NA)."""
    if pd.api.types.is_string_dtype(raw) and not pd.api.types.is_object_dtype(raw):
        return raw
    out = raw.astype(object)
    mask = out.notna()
    out[mask] = out[mask].map(str) if mask.any() else out[mask]
    return out


def _is_nan_text(raw: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(raw):
        return pd.Series(False, index=raw.index)
    return _text(raw).str.strip().str.lower().isin(["nan", "-nan", "+nan"]).fillna(False)


def parse_times(raw: pd.Series) -> pd.Series:
    """Timestamps (ISO-8601 text or datetimes) → datetime64[ns, UTC]; NaT where unparseable.

    Naive values are taken as UTC, offsets are converted.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
    else:
        parsed = pd.to_datetime(_text(raw), utc=True, format="ISO8601", errors="coerce")
    return parsed.dt.as_unit("ns")


def to_typed(raw: pd.DataFrame, layout: TableLayout) -> pd.DataFrame:
    """The known columns of ``raw`` with their types: UTC timestamps, float64 numbers.

    Values that do not convert become NaT/NaN; the storage checks report them.
    """
    typed = {}
    for col in layout.present(list(raw.columns)):
        if col == "timestamp":
            typed[col] = parse_times(raw[col])
        elif layout.types[col] in ("REAL", "INTEGER"):
            typed[col] = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        else:
            typed[col] = raw[col]
    return pd.DataFrame(typed, index=raw.index)


# --------------------------------------------------------------------------------------
# Check functions (True = the row passes)
# --------------------------------------------------------------------------------------


def _parseable(raw: pd.Series) -> pd.Series:
    return parse_times(raw).notna()


def zone_labels(raw: pd.Series) -> pd.Series:
    """'UTC', '+HH:MM' or 'naive' for each parseable timestamp text (others left out)."""
    text = _text(raw)[parse_times(raw).notna()].astype(str)
    labels = pd.Series("UTC", index=text.index, dtype=object)
    other = ~text.str.endswith("Z")
    if not other.any():
        return labels
    parts = text[other].str.extract(_ZONE)
    minutes = parts["hh"].astype(float) * 60 + parts["mm"].astype(float).fillna(0)
    shifted = parts["sign"].notna() & (minutes != 0)
    label = pd.Series(
        np.where(parts["zone"].notna(), "UTC", "naive"), index=parts.index, dtype=object
    )
    if shifted.any():
        whole = minutes[shifted].astype(int)
        label[shifted] = (
            parts["sign"][shifted].astype(str)
            + (whole // 60).astype(str).str.zfill(2)
            + ":"
            + (whole % 60).astype(str).str.zfill(2)
        )
    labels[other] = label
    return labels


def _single_zone(raw: pd.Series) -> pd.Series:
    """Rows whose time zone differs from the table's most common one fail."""
    ok = pd.Series(True, index=raw.index)
    if pd.api.types.is_datetime64_any_dtype(raw):
        return ok  # one dtype, one zone
    zones = zone_labels(raw)
    if zones.nunique() > 1:
        ok[zones.index] = zones == zones.value_counts().idxmax()
    return ok


def _numeric(raw: pd.Series) -> pd.Series:
    return pd.to_numeric(raw, errors="coerce").notna() | _is_nan_text(raw)


def _not_nan_text(raw: pd.Series) -> pd.Series:
    return ~_is_nan_text(raw)


def _integral(raw: pd.Series) -> pd.Series:
    num = pd.to_numeric(raw, errors="coerce")
    return num.notna() & np.isfinite(num) & (num == np.floor(num))


def _finite(values: pd.Series) -> pd.Series:
    return ~np.isinf(values)


def _json(values: pd.Series) -> pd.Series:
    import json

    def parses(text: object) -> bool:
        try:
            json.loads(str(text))
        except ValueError:
            return False
        return True

    # metadata is a handful of key/value rows; element-wise is fine here
    return values.map(parses).astype(bool)


def _annotation_kind(values: pd.Series) -> pd.Series:
    return values.isin(ANNOTATION_KINDS)


def _veto_has_rationale(frame: pd.DataFrame) -> pd.Series:
    """A veto without a rationale (missing, or blank text) fails."""
    veto = frame["kind"] == "veto"
    why = frame["rationale"] if "rationale" in frame else pd.Series(None, index=frame.index)
    blank = why.isna() | (why.astype(object).map(lambda v: str(v).strip()) == "")
    return ~(veto & blank)


def _unique(key: tuple[str, ...]) -> Callable[[pd.DataFrame], pd.Series]:
    def check(frame: pd.DataFrame) -> pd.Series:
        complete = frame[list(key)].notna().all(axis=1)
        return ~(frame.duplicated(subset=list(key), keep="first") & complete)

    return check


def _in_time_order(group: tuple[str, ...]) -> Callable[[pd.DataFrame], pd.Series]:
    """Rows earlier than a row before them (within the group) fail."""

    def check(frame: pd.DataFrame) -> pd.Series:
        ts = frame["timestamp"]
        ns = pd.Series(ts.to_numpy(dtype="datetime64[ns]").view(np.int64), index=frame.index)
        ns = ns.where(ts.notna(), np.iinfo(np.int64).min)
        if group:
            keys = [frame[c] for c in group]
            before = ns.groupby(keys, sort=False, dropna=False).cummax()
            before = before.groupby(keys, sort=False, dropna=False).shift()
        else:
            before = ns.cummax().shift()
        return ~((ns < before) & ts.notna())

    return check


def _low_consistent(frame: pd.DataFrame) -> pd.Series:
    low = frame["low"]
    return ~((low > frame["open"]) | (low > frame["close"]) | (low > frame["high"]))


def _high_consistent(frame: pd.DataFrame) -> pd.Series:
    high = frame["high"]
    return ~((high < frame["open"]) | (high < frame["close"]))


def _known_symbol(symbols: frozenset[str]) -> Callable[[pd.DataFrame], pd.Series]:
    def check(frame: pd.DataFrame) -> pd.Series:
        return frame["symbol"].isin(symbols) | frame["symbol"].isna()

    return check


# --------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------


def _check(fn: Callable, name: str, **kwargs: object) -> pa.Check:
    return pa.Check(fn, name=name, n_failure_cases=_N_CASES, **kwargs)


def storage_schema(layout: TableLayout, columns: list[str]) -> pa.DataFrameSchema:
    """Checks on raw stored values: presence of required columns and value formats."""
    cols: dict[str, pa.Column] = {}
    for col, sql_type in layout.types.items():
        checks = []
        if col == "timestamp":
            checks = [
                _check(_parseable, "timestamp_format"),
                _check(_single_zone, "mixed_timezones"),
            ]
        elif col in _TIME_TEXT.get(layout.table, ()):
            checks = [_check(_parseable, "timestamp_format")]
        elif sql_type == "REAL":
            checks = [_check(_numeric, "numeric")]
            if col not in layout.nullable:
                checks.append(_check(_not_nan_text, "nan"))
        elif sql_type == "INTEGER":
            checks = [_check(_integral, "integer")]
        cols[col] = pa.Column(
            nullable=True, required=col in layout.required, checks=checks, name=col
        )
    return pa.DataFrameSchema(cols, name=layout.table)


def content_schema(
    layout: TableLayout, columns: list[str], known_symbols: frozenset[str] | None
) -> pa.DataFrameSchema:
    """Checks on typed values; only the rules whose columns are present."""
    table = layout.table
    cols: dict[str, pa.Column] = {}
    for col in layout.present(columns):
        checks = []
        dtype: object = None
        if col == "timestamp":
            dtype = pd.DatetimeTZDtype("ns", "UTC")
        elif layout.types[col] in ("REAL", "INTEGER"):
            dtype = "float64"
            checks.append(_check(_finite, "finite"))
        if col in _POSITIVE.get(table, ()):
            checks.append(pa.Check.gt(0, name="positive", n_failure_cases=_N_CASES))
        if col in _NON_NEGATIVE.get(table, ()):
            checks.append(pa.Check.ge(0, name="non_negative", n_failure_cases=_N_CASES))
        if table == "metadata" and col == "value":
            checks.append(_check(_json, "json"))
        if table == "annotations" and col == "kind":
            checks.append(_check(_annotation_kind, "annotation_kind"))
        cols[col] = pa.Column(dtype, nullable=col in layout.nullable, checks=checks, name=col)

    frame_checks = []
    for key in layout.keys:
        if set(key) <= set(columns):
            frame_checks.append(_check(_unique(key), f"duplicate_key@{','.join(key)}"))
    group = layout.order_group
    if group is not None and {"timestamp", *group} <= set(columns):
        frame_checks.append(_check(_in_time_order(group), "timestamp_order@timestamp"))
    if table == "series" and set(_PRICE_COLUMNS) <= set(columns):
        frame_checks.append(_check(_low_consistent, "ohlc_low@low"))
        frame_checks.append(_check(_high_consistent, "ohlc_high@high"))
    if table == "annotations" and "kind" in columns:
        frame_checks.append(_check(_veto_has_rationale, "veto_rationale@rationale"))
    if known_symbols is not None and "symbol" in columns and table != "assets":
        frame_checks.append(_check(_known_symbol(known_symbols), "unknown_symbol@symbol"))
    return pa.DataFrameSchema(cols, checks=frame_checks, name=table)


# --------------------------------------------------------------------------------------
# Running the schemas
# --------------------------------------------------------------------------------------


def _failing_rows(err: pa.errors.SchemaError, n: int) -> np.ndarray:
    """Boolean mask over row positions (the frame has a RangeIndex)."""
    mask = np.zeros(n, dtype=bool)
    if err.check_output is not None:
        out = err.check_output
        if isinstance(out, pd.DataFrame):  # element-wise frame output: a row fails if any cell does
            out = out.all(axis=1)
        failed = out.index[~out.to_numpy(dtype=bool)]
        mask[np.asarray(failed, dtype=np.int64)] = True
    elif isinstance(err.failure_cases, pd.DataFrame) and "index" in err.failure_cases:
        idx = pd.to_numeric(err.failure_cases["index"], errors="coerce").dropna()
        mask[idx.to_numpy(dtype=np.int64)] = True
    return mask


def _findings(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> list[Finding]:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        found = []
        for err in errors.schema_errors:
            name = getattr(err.check, "name", None) or str(err.check)
            check, _, column = name.partition("@")
            column = column or getattr(err.schema, "name", None) or "*"
            if err.reason_code == SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME:
                found.append(Finding(str(err.failure_cases), "missing_column"))
            elif err.reason_code == SchemaErrorReason.CHECK_ERROR:
                found.append(Finding(column, f"{check}_error", detail=str(err.failure_cases)))
            elif err.reason_code == SchemaErrorReason.SERIES_CONTAINS_NULLS:
                found.append(Finding(column, "not_null", _failing_rows(err, len(frame))))
            elif err.reason_code == SchemaErrorReason.WRONG_DATATYPE:
                found.append(Finding(column, "dtype", detail=str(err.failure_cases)))
            else:
                found.append(Finding(column, check, _failing_rows(err, len(frame))))
        return found
    return []


def run_checks(
    raw: pd.DataFrame, layout: TableLayout, *, known_symbols: frozenset[str] | None = None
) -> list[Finding]:
    """Run both schemas on ``raw`` (positional index); one finding per failing check.

    A cell that fails a storage check (unparseable timestamp, text in a REAL column) is
    not reported again by the content checks of the same column (as a null, say).
    """
    raw = raw.reset_index(drop=True)
    columns = list(raw.columns)
    stored = _findings(storage_schema(layout, columns), raw)
    bad_cells: dict[str, np.ndarray] = {}
    for f in stored:
        if f.mask is not None:
            bad_cells[f.column] = bad_cells.get(f.column, np.zeros(len(raw), bool)) | f.mask
    typed = to_typed(raw, layout)
    content = []
    for f in _findings(content_schema(layout, columns, known_symbols), typed):
        if f.mask is not None:
            key_cols = f.column.split(",") if f.check == "duplicate_key" else [f.column]
            seen = np.zeros(len(raw), bool)
            for col in key_cols:
                seen |= bad_cells.get(col, seen)
            f = Finding(f.column, f.check, f.mask & ~seen, f.detail)
            if not f.mask.any():
                continue
        content.append(f)
    return stored + content
