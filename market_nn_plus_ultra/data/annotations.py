"""Analyst annotations: a note, an anomaly flag or a veto attached to what the model did.

An annotation names its target one of three ways, and :func:`add_annotation` fills in
the rest from the prediction log (:mod:`.prediction_log`) or the ``trades`` table:

- a served request: ``request_id`` (plus ``symbol`` when the request served several);
- a bar: ``timestamp`` + ``symbol``, with ``model_version`` for that model's prediction;
- a trade: ``trade_id`` of a ``trades`` table.

A veto rejects the action taken, so it must name a served prediction or a trade and say
why (``rationale``). Every row is checked by the data layer's validation (the same
checks ``plus-ultra data validate`` runs: kind is note | anomaly | veto, a veto has a
rationale, times are ISO-8601) before one transaction writes it. The table's schema is
:data:`~.schema.TABLES` ``["annotations"]``; a table of an older release is extended in
place with the columns it lacks (all nullable).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .prediction_log import find_predictions, log_timestamp, read_trades
from .schema import TABLES, ddl
from .store import (
    StoreError,
    _transaction,
    add_missing_columns,
    connect,
    format_timestamps,
    list_tables,
    table_columns,
)
from .validation import validate_tables
from .validation_checks import ANNOTATION_KINDS

__all__ = [
    "ANNOTATION_COLUMNS",
    "ANNOTATION_KINDS",
    "Annotation",
    "AnnotationError",
    "add_annotation",
    "ensure_annotations_table",
    "read_annotations",
]

_SPEC = TABLES["annotations"]
#: Columns of the ``annotations`` table, in order.
ANNOTATION_COLUMNS = tuple(_SPEC.column_names)
_HOW = (
    "name what it is about: --request-id (a served request), --timestamp with --symbol "
    "(and --model-version for that model's prediction), or --trade-id"
)


class AnnotationError(ValueError):
    """An annotation cannot be written or read; the message names the option and the fix."""


@dataclass(frozen=True)
class Annotation:
    """One stored annotation (a row of ``annotations``)."""

    annotation_id: int
    timestamp: str
    symbol: str | None
    kind: str
    text: str
    rationale: str | None
    author: str | None
    request_id: str | None
    model_version: str | None
    trade_id: int | None
    created: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Target:
    timestamp: str
    symbol: str | None
    request_id: str | None = None
    model_version: str | None = None
    trade_id: int | None = None


def ensure_annotations_table(con: sqlite3.Connection) -> None:
    """Create ``annotations`` (and its indexes) when missing; add the columns an older
    table lacks. Runs inside the caller's transaction."""
    try:
        add_missing_columns(con, ["annotations"])
    except StoreError as err:
        raise AnnotationError(f"{err}, or annotate into another --database") from None
    for statement in ddl(["annotations"]):
        con.execute(statement)


def _utc(value: str | pd.Timestamp, option: str) -> str:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise AnnotationError(
            f"{option}={value!r} is not an ISO-8601 time — write it like 2024-01-02T14:30:00Z"
        )
    return str(format_timestamps(pd.DatetimeIndex([stamp]))[0])


def _one_prediction(rows: pd.DataFrame, what: str, symbol: str | None) -> pd.Series:
    """The row of ``rows`` (one prediction per symbol and model) an annotation is about."""
    if symbol is not None:
        rows = rows[rows["symbol"] == symbol]
        if rows.empty:
            raise AnnotationError(f"{what} served no prediction for {symbol}")
    symbols = sorted(set(rows["symbol"]))
    if len(symbols) > 1:
        raise AnnotationError(f"{what} served {', '.join(symbols)} — pass --symbol (one of them)")
    versions = sorted(set(rows["model_version"]))
    if len(versions) > 1:
        raise AnnotationError(
            f"{what} was predicted by models {', '.join(versions)} — pass --model-version"
        )
    return rows.iloc[0]  # newest first: a bar predicted twice by one model keeps the last


def _resolve(
    kind: str,
    *,
    request_id: str | None,
    timestamp: str | pd.Timestamp | None,
    symbol: str | None,
    model_version: str | None,
    trade_id: int | None,
    predictions_db: Path | None,
    trades_db: Path | None,
) -> _Target:
    """Fill the annotation's target from the prediction log or the trades table."""
    if trade_id is not None:
        if trades_db is None:
            raise AnnotationError("--trade-id needs the database that holds the trades table")
        trades = read_trades(trades_db, trade_id=trade_id)
        if trades is None or trades.empty:
            where = "has no trades table" if trades is None else f"has no trade {trade_id}"
            raise AnnotationError(f"--trade-id {trade_id}: {trades_db} {where}")
        row = trades.iloc[0]
        return _Target(
            _utc(row["timestamp"], "trades.timestamp"), str(row["symbol"]), trade_id=trade_id
        )
    if request_id is None and (timestamp is None or symbol is None):
        raise AnnotationError(f"an annotation must be attached to something: {_HOW}")
    stamp = None if timestamp is None else _utc(timestamp, "--timestamp")
    rows = pd.DataFrame()
    if predictions_db is not None and Path(predictions_db).is_file():
        if request_id is not None:
            rows = find_predictions(predictions_db, request_id=request_id)
        else:
            rows = find_predictions(
                predictions_db, timestamp=stamp, symbol=symbol, model_version=model_version
            )
    if request_id is not None:
        if rows.empty:
            raise AnnotationError(
                f"--request-id {request_id} is not in the prediction log {predictions_db} — "
                "copy the request_id of a /predict response, or pass the service's --service-db"
            )
        row = _one_prediction(rows, f"request {request_id}", symbol)
        if model_version is not None and row["model_version"] != model_version:
            raise AnnotationError(
                f"request {request_id} was served by model {row['model_version']}, not "
                f"--model-version {model_version} — drop --model-version"
            )
        if stamp is not None and log_timestamp(stamp)[0] != log_timestamp(row["timestamp"])[0]:
            raise AnnotationError(
                f"request {request_id} predicted from the bar {row['timestamp']}, not "
                f"--timestamp {stamp} — drop --timestamp"
            )
    elif rows.empty:
        if kind == "veto":
            version = f" by model {model_version}" if model_version else ""
            raise AnnotationError(
                f"a veto rejects a served action, and {predictions_db} logs no prediction of "
                f"{symbol} at {stamp}{version} — check the bar with `plus-ultra annotate list` "
                "or the review page, or annotate it as a note or an anomaly"
            )
        return _Target(stamp, symbol, model_version=model_version)  # a bar, not a prediction
    else:
        row = _one_prediction(rows, f"the bar {stamp} of {symbol}", symbol)
    return _Target(
        _utc(row["timestamp"], "predictions.timestamp"),
        str(row["symbol"]),
        request_id=str(row["request_id"]),
        model_version=str(row["model_version"]),
    )


def add_annotation(
    database: str | Path,
    *,
    kind: str,
    text: str | None = None,
    rationale: str | None = None,
    author: str | None = None,
    request_id: str | None = None,
    timestamp: str | pd.Timestamp | None = None,
    symbol: str | None = None,
    model_version: str | None = None,
    trade_id: int | None = None,
    predictions_db: str | Path | None = None,
    trades_db: str | Path | None = None,
) -> Annotation:
    """Validate and store one annotation in ``database`` (created when missing); returns it.

    ``predictions_db`` (default: ``database``) holds the service's prediction log that
    ``request_id`` / ``model_version`` refer to; ``trades_db`` (default: ``database``)
    the ``trades`` table of ``trade_id``. A veto's ``text`` defaults to its rationale.
    Raises :class:`AnnotationError` or :class:`~.validation.DataValidationError` naming
    the field and the fix; nothing is written then.
    """
    database = Path(database)
    rationale = rationale.strip() if rationale and rationale.strip() else None
    text = text.strip() if text and text.strip() else (rationale if kind == "veto" else None)
    if kind == "veto" and rationale is None:
        raise AnnotationError("a veto must say why: pass --rationale 'why this action was wrong'")
    if text is None and kind in ANNOTATION_KINDS:
        raise AnnotationError(f"a {kind} needs its text: pass --text 'what you saw'")
    target = _resolve(
        kind,
        request_id=request_id,
        timestamp=timestamp,
        symbol=symbol,
        model_version=model_version,
        trade_id=trade_id,
        predictions_db=Path(predictions_db) if predictions_db is not None else database,
        trades_db=Path(trades_db) if trades_db is not None else database,
    )
    created = _utc(pd.Timestamp.now(tz="UTC"), "created")
    row = {
        "annotation_id": 0,  # a placeholder for validation; SQLite assigns the id
        **asdict(target),
        "author": author,
        "kind": kind,
        "text": text,
        "rationale": rationale,
        "created": created,
    }
    validate_tables({"annotations": pd.DataFrame([row])}).raise_if_failed()
    if database.is_dir():
        raise AnnotationError(f"--database {database} is a folder, not a SQLite file")
    database.parent.mkdir(parents=True, exist_ok=True)
    columns = [c for c in ANNOTATION_COLUMNS if c != "annotation_id"]
    names = ", ".join(f'"{c}"' for c in columns)
    with _transaction(database) as con:
        ensure_annotations_table(con)
        cur = con.execute(
            f"INSERT INTO annotations ({names}) VALUES ({', '.join('?' * len(columns))})",
            [row[c] for c in columns],
        )
        row["annotation_id"] = int(cur.lastrowid or 0)
    return Annotation(**{k: row[k] for k in ANNOTATION_COLUMNS})


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ANNOTATION_COLUMNS})


def _filters(have: Sequence[str], filters: dict[str, Any]) -> tuple[list[str], list[Any]] | None:
    """SQL conditions and their bound values (None: the table cannot match)."""
    where, params = ["1 = 1"], []
    for column, values in (
        ("symbol", filters["symbols"]),
        ("COALESCE(kind, 'note')", filters["kinds"]),
    ):
        if values is not None:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += list(values)
    for column in ("request_id", "model_version"):
        if filters[column] is not None:
            if column not in have:
                return None  # a table from before the column existed
            where.append(f"{column} = ?")
            params.append(filters[column])
    for option, op in (("since", ">="), ("until", "<=")):
        if filters[option] is not None:
            where.append(f"timestamp {op} ?")
            params.append(_utc(filters[option], f"--{option}"))
    return where, params


def read_annotations(
    database: str | Path,
    *,
    symbols: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    request_id: str | None = None,
    model_version: str | None = None,
    since: str | pd.Timestamp | None = None,
    until: str | pd.Timestamp | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Stored annotations (:data:`ANNOTATION_COLUMNS`), newest first.

    Filters combine with AND; ``since``/``until`` bound the annotated bar's time
    (inclusive); a row without a kind (an older table) reads as a note. A database
    without the table gives no rows; a missing file raises :class:`AnnotationError`.
    """
    database = Path(database)
    if not database.is_file():
        raise AnnotationError(
            f"{database} does not exist — add an annotation first (`plus-ultra annotate add`) "
            "or pass the --database that holds them"
        )
    for kind in kinds or ():
        if kind not in ANNOTATION_KINDS:
            raise AnnotationError(f"--kind {kind!r}: use one of {', '.join(ANNOTATION_KINDS)}")
    filters = {
        "symbols": symbols,
        "kinds": kinds,
        "request_id": request_id,
        "model_version": model_version,
        "since": since,
        "until": until,
    }
    with contextlib.closing(connect(database)) as con:
        if "annotations" not in list_tables(con):
            return _empty()
        found = _filters(list(table_columns(con, "annotations")), filters)
        if found is None:
            return _empty()
        where, params = found
        sql = f"SELECT * FROM annotations WHERE {' AND '.join(where)} ORDER BY annotation_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        try:
            frame = pd.read_sql_query(sql, con, params=params)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as err:
            raise StoreError(f"{database}: reading annotations failed ({err})") from None
    for column in ANNOTATION_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["kind"] = frame["kind"].fillna("note")
    return frame[list(ANNOTATION_COLUMNS)]
