"""Read-only access to the service's prediction log and to a database's trades.

The service writes its log to its own SQLite file (``service.database``, WAL mode):

- ``predictions``: one row per (request, symbol) — ``id, request_id, model_version,
  timestamp`` (the bar predicted from, ISO-8601 UTC), ``symbol, input_last, position``
  (served), ``model_position`` (before the guardrails), ``forecast, outputs`` (JSON),
  ``action`` (none | cap | flatten | reject), ``breaches`` (JSON list of ``{rule, before,
  after, detail}``), ``created``;
- ``outcomes``: ``request_id, symbol, timestamp, model_version, realised_return,
  received`` — the simple return from the predicted bar to the next one.

These readers open the file read-only (a running service keeps writing; WAL readers never
block it) and bind every value. A file without those tables reads as no rows, so the same
code works on a fresh service database and on a market database.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .store import StoreError, connect, list_tables

__all__ = [
    "PREDICTION_COLUMNS",
    "TRADE_COLUMNS",
    "find_predictions",
    "log_timestamp",
    "read_predictions",
    "read_trades",
]

#: Columns of :func:`read_predictions` (the log's, then the outcome's realised return).
PREDICTION_COLUMNS = (
    "id", "request_id", "model_version", "timestamp", "symbol", "input_last", "position",
    "model_position", "forecast", "outputs", "action", "breaches", "created",
    "realised_return",
)  # fmt: skip
TRADE_COLUMNS = ("trade_id", "timestamp", "symbol", "side", "quantity", "price", "fees", "strategy")


def log_timestamp(value: str | pd.Timestamp) -> tuple[str, str]:
    """The two text forms a UTC time may be stored in: the log's ``isoformat()``
    (``2024-01-02T00:00:00+00:00``) and the market store's (``2024-01-02T00:00:00Z``)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    iso = stamp.isoformat()
    return iso, iso.replace("+00:00", "Z")


@contextlib.contextmanager
def _reader(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise StoreError(
            f"{path} does not exist — point to the service's database (service.database, "
            "where `plus-ultra serve` logs its predictions) or pass the right --database"
        )
    con = connect(path)
    try:
        yield con
    finally:
        con.close()


def _frame(con: sqlite3.Connection, sql: str, params: Sequence[object]) -> pd.DataFrame:
    try:
        return pd.read_sql_query(sql, con, params=list(params))
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as err:
        raise StoreError(f"reading the prediction log failed ({err})") from None


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def read_predictions(
    path: str | Path,
    *,
    symbols: Sequence[str] | None = None,
    model_version: str | None = None,
    request_id: str | None = None,
    since: str | pd.Timestamp | None = None,
    until: str | pd.Timestamp | None = None,
    limit: int | None = None,
    include_rejected: bool = True,
) -> pd.DataFrame:
    """Logged predictions (:data:`PREDICTION_COLUMNS`), newest first, with the outcome's
    ``realised_return`` where one was reported (else NaN).

    ``since``/``until`` bound the predicted bar's timestamp (inclusive); ``limit`` keeps
    the newest rows. A database without a ``predictions`` table gives no rows.
    """
    with _reader(path) as con:
        tables = set(list_tables(con))
        if "predictions" not in tables:
            return _empty(PREDICTION_COLUMNS)
        where, params = ["1 = 1"], []
        if symbols is not None:
            where.append(f"p.symbol IN ({', '.join('?' * len(symbols))})")
            params += list(symbols)
        for column, value in (("model_version", model_version), ("request_id", request_id)):
            if value is not None:
                where.append(f"p.{column} = ?")
                params.append(value)
        if since is not None:
            where.append("p.timestamp >= ?")
            params.append(log_timestamp(since)[0])
        if until is not None:
            where.append("p.timestamp <= ?")
            params.append(log_timestamp(until)[0])
        if not include_rejected:
            where.append("p.action != 'reject'")
        joined = "outcomes" in tables
        realised = "o.realised_return" if joined else "NULL"
        join = (
            "LEFT JOIN outcomes o ON o.request_id = p.request_id AND o.symbol = p.symbol"
            if joined
            else ""
        )
        sql = (
            f"SELECT p.*, {realised} AS realised_return FROM predictions p {join} "
            f"WHERE {' AND '.join(where)} ORDER BY p.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        frame = _frame(con, sql, params)
    frame["realised_return"] = pd.to_numeric(frame["realised_return"], errors="coerce")
    return frame


def find_predictions(
    path: str | Path,
    *,
    request_id: str | None = None,
    timestamp: str | pd.Timestamp | None = None,
    symbol: str | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """The logged rows of a request (optionally one ``symbol``), or of one bar
    (``timestamp`` + ``symbol``, optionally one ``model_version``), newest first."""
    with _reader(path) as con:
        if "predictions" not in list_tables(con):
            return _empty(PREDICTION_COLUMNS[:-1])
        where, params = [], []
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        if timestamp is not None:
            where.append("timestamp IN (?, ?)")
            params += list(log_timestamp(timestamp))
        for column, value in (("symbol", symbol), ("model_version", model_version)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if not where:
            raise ValueError("find_predictions needs request_id, or timestamp and symbol")
        sql = f"SELECT * FROM predictions WHERE {' AND '.join(where)} ORDER BY id DESC"
        return _frame(con, sql, params)


def read_trades(
    path: str | Path,
    *,
    trade_id: int | None = None,
    symbols: Sequence[str] | None = None,
    limit: int | None = None,
) -> pd.DataFrame | None:
    """Rows of the ``trades`` table (:data:`TRADE_COLUMNS`), newest first; None when the
    database has no such table."""
    with _reader(path) as con:
        if "trades" not in list_tables(con):
            return None
        where, params = ["1 = 1"], []
        if trade_id is not None:
            where.append("trade_id = ?")
            params.append(int(trade_id))
        if symbols is not None:
            where.append(f"symbol IN ({', '.join('?' * len(symbols))})")
            params += list(symbols)
        sql = f"SELECT * FROM trades WHERE {' AND '.join(where)} ORDER BY timestamp DESC, trade_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return _frame(con, sql, params)
