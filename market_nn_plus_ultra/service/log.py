"""The prediction log: every served prediction and every reported outcome, in SQLite.

The log is the service's own database (``service.database``; WAL mode, so readers never
wait on the writer), never the market database. Predictions are written by one
background thread in batches, off the request path; :meth:`PredictionLog.flush` waits
for the queue (``/outcomes`` flushes before it looks predictions up).

``predictions``: one row per (request, symbol) — ``request_id, model_version,
timestamp`` (the bar predicted from), ``symbol, input_last`` (the newest bar of the
request's inputs), ``position`` (served), ``model_position`` (before the guardrails),
``forecast, outputs`` (JSON: probabilities, quantiles), ``action`` (none | cap | flatten
| reject), ``breaches`` (JSON list of {rule, before, after, detail}), ``created``.
``outcomes``: one row per (request, symbol) with the ``realised_return`` reported.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ServiceError

__all__ = ["PredictionLog"]

log = logging.getLogger(__name__)

_DDL = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, model_version TEXT NOT NULL,
        timestamp TEXT NOT NULL, symbol TEXT NOT NULL, input_last TEXT NOT NULL,
        position REAL NOT NULL, model_position REAL NOT NULL, forecast REAL,
        outputs TEXT NOT NULL, action TEXT NOT NULL, breaches TEXT NOT NULL,
        created TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id, symbol)",
    "CREATE INDEX IF NOT EXISTS predictions_cell ON predictions (symbol, timestamp)",
    """CREATE TABLE IF NOT EXISTS outcomes (
        request_id TEXT NOT NULL, symbol TEXT NOT NULL, timestamp TEXT NOT NULL,
        model_version TEXT NOT NULL, realised_return REAL NOT NULL, received TEXT NOT NULL,
        PRIMARY KEY (request_id, symbol))""",
)
_COLUMNS = (
    "request_id, model_version, timestamp, symbol, input_last, position, model_position, "
    "forecast, outputs, action, breaches, created"
)
_STOP = object()


class PredictionLog:
    """Append predictions in the background; look them up and record outcomes."""

    def __init__(self, path: str | Path, *, market_db: str | Path | None = None) -> None:
        self.path = Path(path)
        if market_db is not None and _same_file(self.path, Path(market_db)):
            raise ServiceError(
                422,
                f"service.database {self.path} is the market database — give the service "
                "its own file, e.g. --set service.database=outputs/service/service.db",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect()) as con:
                con.execute("PRAGMA journal_mode=WAL")
                for statement in _DDL:
                    con.execute(statement)
                con.commit()
        except (OSError, sqlite3.Error) as err:
            raise ServiceError(
                422,
                f"service.database {self.path}: cannot open it ({err}) — pass a writable path "
                "with --set service.database=PATH",
            ) from None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="prediction-log", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    # ----------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------

    def append(self, rows: list[tuple[Any, ...]]) -> None:
        """Queue prediction rows (the ``_COLUMNS`` values, in order) for the writer."""
        self._queue.put(rows)

    def flush(self) -> None:
        """Wait until every queued row is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join()

    def _write_loop(self) -> None:
        con = self._connect()
        sql = f"INSERT INTO predictions ({_COLUMNS}) VALUES ({', '.join('?' * 12)})"
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while not self._queue.empty() and item is not _STOP:  # group what waits
                    item = self._queue.get()
                    batch.append(item)
                rows = [row for rows in batch if rows is not _STOP for row in rows]
                try:
                    with con:
                        con.executemany(sql, rows)
                except sqlite3.Error as err:  # the log must never take the service down
                    log.error(
                        "prediction log %s: %d rows not written (%s)",
                        self.path,
                        len(rows),
                        err,
                        extra={"fields": {"event": "prediction_log_error", "rows": len(rows)}},
                    )
                for _ in batch:
                    self._queue.task_done()
                if any(rows is _STOP for rows in batch):
                    return
        finally:
            con.close()

    # ----------------------------------------------------------------------------------
    # Reading and outcomes
    # ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            yield con
        finally:
            con.close()

    def predictions_of(self, request_id: str) -> list[sqlite3.Row]:
        """The rows a request served (one per symbol)."""
        with self._reader() as con:
            return con.execute(
                "SELECT * FROM predictions WHERE request_id = ? ORDER BY symbol", (request_id,)
            ).fetchall()

    def prediction_at(self, timestamp: str, symbol: str) -> sqlite3.Row | None:
        """The newest served prediction of ``symbol`` at bar ``timestamp`` (ISO-8601 UTC)."""
        with self._reader() as con:
            return con.execute(
                "SELECT * FROM predictions WHERE symbol = ? AND timestamp = ? "
                "AND action != 'reject' ORDER BY id DESC LIMIT 1",
                (symbol, timestamp),
            ).fetchone()

    def add_outcome(self, row: sqlite3.Row, realised: float, received: str) -> bool:
        """Record the outcome of a logged prediction; False when it was already recorded."""
        with self._reader() as con, con:
            cur = con.execute(
                "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row["request_id"],
                    row["symbol"],
                    row["timestamp"],
                    row["model_version"],
                    realised,
                    received,
                ),
            )
            return cur.rowcount == 1

    def served_rows(self, limit: int) -> list[sqlite3.Row]:
        """The newest ``limit`` served cells, oldest first, with their reported returns
        (to rebuild the guardrails' live book at start)."""
        with self._reader() as con:
            rows = con.execute(
                "SELECT p.timestamp, p.symbol, p.position, o.realised_return FROM predictions p "
                "LEFT JOIN outcomes o ON o.request_id = p.request_id AND o.symbol = p.symbol "
                "WHERE p.action != 'reject' ORDER BY p.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return rows[::-1]

    def outcome_rows(self) -> list[sqlite3.Row]:
        """Every outcome with its prediction (to rebuild the live statistics at start)."""
        with self._reader() as con:
            return con.execute(
                "SELECT o.model_version, o.realised_return, p.position, p.forecast, p.outputs "
                "FROM outcomes o JOIN predictions p ON p.request_id = o.request_id "
                "AND p.symbol = o.symbol"
            ).fetchall()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False
