"""SQLite store: atomic writes and small-table reads.

Every write is atomic. A new database is built in a temporary file beside the target and
renamed over it (:func:`write_database`, through :func:`market_nn_plus_ultra._io.atomic_path`:
fsynced, unique temporary name); changes to an existing database run in one
transaction (:func:`update_database`). A crash leaves either the old file or the new one,
never half of each; a read-only open rolls back the journal a killed writer left
(:func:`recover_journal`). Symbols and names are always bound parameters.

The fast panel reader lives in :mod:`market_nn_plus_ultra.data.panel`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_path
from .schema import ALT_PREFIX, TABLES, alt_table_ddl, ddl

__all__ = [
    "StoreError",
    "connect",
    "format_timestamps",
    "list_tables",
    "parse_timestamps",
    "read_metadata",
    "read_table",
    "recover_journal",
    "table_columns",
    "update_database",
    "write_database",
]


class StoreError(RuntimeError):
    """The database cannot be opened, read or written; the message says which and why."""


def connect(path: str | Path, *, readonly: bool = True) -> sqlite3.Connection:
    """Open a database; read-only by default (a missing file is an error, never created).

    A read-only open first recovers a hot journal (see :func:`recover_journal`), so a
    database whose last writer was killed opens as it was before that write.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(
                f"database {path} does not exist — create one with `plus-ultra data fixture` "
                "or `plus-ultra data import`"
            )
        recover_journal(path)
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    else:
        con = sqlite3.connect(path)
    try:
        con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as err:
        con.close()
        journal = _journal(path)
        if journal.exists():
            raise StoreError(_journal_message(path, journal, err)) from None
        raise StoreError(f"{path} is not a readable SQLite database ({err})") from None
    return con


def _journal(path: Path) -> Path:
    return path.with_name(f"{path.name}-journal")


def _journal_message(path: Path, journal: Path, err: Exception) -> str:
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        return (
            f"{path} cannot be opened ({err}): {journal} belongs to a write that is still "
            "running or could not be rolled back — let the other process finish and run "
            f'the command again; if none runs, `sqlite3 {path} "PRAGMA integrity_check"` '
            "rolls the journal back and checks the file."
        )
    return (
        f"{path} cannot be opened ({err}): {journal} holds a write that did not finish "
        "(the writer was killed or the disk filled up) and rolling it back needs write "
        f"access, which this user lacks. The data is intact: make {path} and its folder "
        f"writable and run the command again, or have the file's owner run "
        f'`sqlite3 {path} "PRAGMA integrity_check"` once (that rolls the journal back).'
    )


def recover_journal(path: str | Path) -> bool:
    """Roll back a hot journal left beside ``path`` by a killed writer; True if one was there.

    A read-only connection cannot roll a hot journal back and fails with "attempt to
    write a readonly database"; a read-write connection rolls it back on its first read.
    A journal that belongs to a live writer is not hot (its writer holds the lock) and
    SQLite leaves it alone, so this is safe to call at any time. When the file or its
    folder is not writable nothing is done: the read-only open then reports the journal.
    """
    path = Path(path)
    journal = _journal(path)
    if not journal.exists():
        return False
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return True
    con = sqlite3.connect(path, timeout=1.0)
    try:
        con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError:
        pass  # a live writer's lock or a damaged file: the read-only open reports it
    finally:
        con.close()
    return True


def _write_error(path: Path, err: sqlite3.Error) -> StoreError:
    """A write that SQLite refused, as a message with the path and the fix."""
    code = getattr(err, "sqlite_errorname", "")
    if code.startswith("SQLITE_FULL"):
        why = f"the disk is full — free space where {path} lives and run the command again"
    elif code.startswith("SQLITE_READONLY"):
        why = f"{path} or its folder is read-only — make both writable for this user"
    elif code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        why = "another process holds the database locked — let it finish, then run again"
    elif code.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        why = f"the operating system refused the write — check the disk and {path.parent}"
    else:
        why = "see the SQLite message above"
    return StoreError(
        f"writing {path} failed ({err}): {why}. Nothing was written: the database "
        "holds what it held before this command."
    )


def list_tables(con: sqlite3.Connection) -> list[str]:
    rows = con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    return [r[0] for r in rows]


def table_columns(con: sqlite3.Connection, table: str) -> dict[str, str]:
    """Column name → declared SQL type, in table order."""
    return {r[1]: (r[2] or "").upper() for r in con.execute(f'PRAGMA table_info("{table}")')}


# --------------------------------------------------------------------------------------
# Timestamps: ISO-8601 UTC text in the database, tz-aware UTC in pandas
# --------------------------------------------------------------------------------------


def format_timestamps(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """UTC timestamps → ISO-8601 text (``2024-01-02T14:30:00Z``; ms kept when present)."""
    idx = pd.DatetimeIndex(values)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    else:
        idx = idx.tz_convert("UTC")
    raw = idx.tz_localize(None).to_numpy(dtype="datetime64[ms]")
    unit = "s" if (raw.astype(np.int64) % 1000 == 0).all() else "ms"
    return np.char.add(np.datetime_as_string(raw, unit=unit), "Z")


def parse_timestamps(values: pd.Series | np.ndarray | list[str]) -> pd.DatetimeIndex:
    """ISO-8601 text → tz-aware UTC timestamps (naive text is taken as UTC)."""
    return pd.DatetimeIndex(pd.to_datetime(pd.Series(values), utc=True, format="ISO8601"))


# --------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------


def _prepare(table: str, frame: pd.DataFrame) -> tuple[list[str], list[tuple]]:
    frame = frame.copy()
    if "timestamp" in frame.columns and not pd.api.types.is_string_dtype(frame["timestamp"]):
        frame["timestamp"] = format_timestamps(frame["timestamp"])
    cols = list(frame.columns)
    spec = TABLES.get(table)
    if spec is not None:
        unknown = [c for c in cols if c not in spec.column_names]
        if unknown:
            raise StoreError(
                f"{table}: unknown column(s) {unknown}; the table has {spec.column_names}"
            )
    frame = frame.astype(object).where(frame.notna(), None)
    return cols, list(frame.itertuples(index=False, name=None))


def _insert(con: sqlite3.Connection, table: str, frame: pd.DataFrame, replace: bool) -> None:
    if frame.empty:
        return
    if table.startswith(ALT_PREFIX) and table not in list_tables(con):
        per_symbol = "symbol" in frame.columns
        values = {
            c: "REAL" if pd.api.types.is_numeric_dtype(frame[c]) else "TEXT"
            for c in frame.columns
            if c not in ("timestamp", "symbol")
        }
        for stmt in alt_table_ddl(table, values, per_symbol):
            con.execute(stmt)
    cols, rows = _prepare(table, frame)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join("?" * len(cols))
    con.executemany(f'{verb} INTO "{table}" ({names}) VALUES ({marks})', rows)


def write_database(
    path: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Create a new database holding ``tables``, atomically (temp file, then rename).

    Every table of the schema is created (empty when not given); ``alt_<name>`` frames
    become side tables keyed by timestamp (and symbol when they have one).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists — pass overwrite=True (CLI: --overwrite)")
    try:
        # No journal and no syncs inside SQLite: the temporary file is thrown away on any
        # failure, and atomic_path fsyncs it once before the rename.
        with atomic_path(path) as tmp:
            con = sqlite3.connect(tmp)
            try:
                con.execute("PRAGMA journal_mode=OFF")
                con.execute("PRAGMA synchronous=OFF")
                with con:
                    for stmt in ddl():
                        con.execute(stmt)
                    for name, frame in tables.items():
                        _insert(con, name, frame, replace=False)
                    for key, value in (metadata or {}).items():
                        con.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)", (key, value))
            finally:
                con.close()
    except sqlite3.IntegrityError as err:
        raise StoreError(f"writing {path}: {err} — the rows contain duplicate keys") from None
    except sqlite3.OperationalError as err:
        raise _write_error(path, err) from None
    return path


def add_missing_columns(con: sqlite3.Connection, tables: list[str] | None = None) -> None:
    """Bring tables written by an older release up to the schema: add each nullable column
    a table lacks (before the DDL creates indexes that name them). A missing required
    column cannot be added and is a :class:`StoreError` naming it. Runs inside the
    caller's transaction."""
    present = set(list_tables(con))
    for name in tables or list(TABLES):
        if name not in present:
            continue
        have = table_columns(con, name)
        for col in TABLES[name].columns:
            if col.name in have:
                continue
            if not col.nullable:
                raise StoreError(
                    f"table {name} lacks the required column `{col.name}` (its columns: "
                    f"{list(have)}) — rename that table or rebuild the database"
                )
            con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col.name}" {col.sql_type}')


@contextlib.contextmanager
def _transaction(path: Path) -> Iterator[sqlite3.Connection]:
    con = connect(path, readonly=False)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("COMMIT")
    except BaseException as err:
        # SQLite rolls back by itself after a full disk or an I/O error; a second ROLLBACK
        # would fail with "cannot rollback - no transaction is active" and hide the cause.
        if con.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
        if isinstance(err, sqlite3.OperationalError):
            raise _write_error(path, err) from None
        raise
    finally:
        con.close()


def update_database(
    path: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    replace_tables: tuple[str, ...] = (),
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Upsert ``tables`` into an existing database in one transaction.

    Tables named in ``replace_tables`` are emptied first (so a rebuild is idempotent);
    other rows are inserted or replaced by key.
    """
    path = Path(path)
    with _transaction(path) as con:
        add_missing_columns(con)
        for stmt in ddl():
            con.execute(stmt)
        existing = set(list_tables(con))
        for name in replace_tables:
            if name in existing:
                con.execute(f'DELETE FROM "{name}"')
        for name, frame in tables.items():
            _insert(con, name, frame, replace=True)
        for key, value in (metadata or {}).items():
            con.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)", (key, value))
    return path


# --------------------------------------------------------------------------------------
# Reads of small tables
# --------------------------------------------------------------------------------------


def read_table(
    path: str | Path,
    table: str,
    *,
    symbols: list[str] | None = None,
    parse_time: bool = True,
) -> pd.DataFrame:
    """Read a whole (small) table; ``timestamp`` parsed to UTC when ``parse_time``."""
    with contextlib.closing(connect(path)) as con:
        if table not in list_tables(con):
            raise StoreError(f"{path}: table `{table}` does not exist")
        sql = f'SELECT * FROM "{table}"'
        params: list[str] = []
        if symbols is not None and "symbol" in table_columns(con, table):
            sql += f" WHERE symbol IN ({', '.join('?' * len(symbols))})"
            params = list(symbols)
        frame = pd.read_sql_query(sql, con, params=params)
    if parse_time and "timestamp" in frame.columns:
        frame["timestamp"] = parse_timestamps(frame["timestamp"])
    return frame


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata`` table as a dict (empty when the table is absent)."""
    with contextlib.closing(connect(path)) as con:
        if "metadata" not in list_tables(con):
            return {}
        return dict(con.execute("SELECT key, value FROM metadata").fetchall())


def summarise_series(path: str | Path) -> pd.DataFrame:
    """One row per symbol of ``series``: ``rows``, ``start`` and ``end`` (UTC timestamps)."""
    with contextlib.closing(connect(path)) as con:
        if "series" not in list_tables(con):
            raise StoreError(f"{path}: table `series` does not exist")
        frame = pd.read_sql_query(
            "SELECT symbol, COUNT(*) AS rows, MIN(timestamp) AS start, MAX(timestamp) AS end "
            "FROM series GROUP BY symbol ORDER BY symbol",
            con,
        )
    frame["start"] = parse_timestamps(frame["start"])
    frame["end"] = parse_timestamps(frame["end"])
    return frame
