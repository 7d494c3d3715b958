"""Fast panel reads: SQLite → pandas panel indexed by (timestamp, symbol).

A cold read runs one query per symbol on a small pool of threads through the
Arrow-native SQLite driver (ADBC), so rows go from SQLite's C cursor into Arrow
buffers without a Python object per value; SQLite converts the ISO-8601 text
timestamps to integer milliseconds in the same pass. The result is written to a
self-checking Parquet cache (:mod:`.panel_cache`) keyed by a fingerprint of the
database's content and the request, so the next identical read runs at Parquet speed,
any write to the database invalidates it, and a corrupt cache file is never served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from .panel_cache import CacheEntry, Decoded, cache_key
from .store import StoreError, connect, list_tables

__all__ = ["OHLCV", "cache_key", "read_panel"]

log = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
_BLOCK_ROWS = 1 << 16  # rows per block when interleaving symbols' columns
# Text timestamp → integer ms since the epoch, inside SQLite (handles Z, offsets, .fff).
_TS_MS = "CAST(round((julianday(timestamp) - 2440587.5) * 86400000.0) AS INTEGER)"


def _bounds(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """Inclusive [start, end] in epoch ms; a date-only end covers that whole day."""
    lo = hi = None
    if start is not None:
        lo = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
    if end is not None:
        stamp = pd.Timestamp(end, tz="UTC")
        date_only = len(str(end).strip()) <= 10
        if date_only:
            stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(milliseconds=1)
        hi = int(stamp.value // 1_000_000)
    return lo, hi


def _adbc_connect(db: Path):
    import adbc_driver_sqlite.dbapi as adbc

    con = adbc.connect(f"file:{db}?mode=ro")
    # A WAL-mode database is briefly locked while a first reader rebuilds its index (and
    # the pool opens several readers at once): wait for it rather than fail "locked".
    with contextlib.closing(con.cursor()) as cur:
        cur.execute("PRAGMA busy_timeout = 5000")
    return con


def _fetch(db: Path, sql: str, params: Sequence[object]) -> pa.Table:
    with contextlib.closing(_adbc_connect(db)) as con, contextlib.closing(con.cursor()) as cur:
        cur.execute(sql, parameters=list(params))
        return cur.fetch_arrow_table()


def _range_sql(lo: int | None, hi: int | None) -> tuple[str, list[object]]:
    """Filter on the text key so SQLite uses the primary-key index, then trim exactly."""
    clauses, params = [], []
    if lo is not None:
        # Text comparison on ISO-8601 is a superset filter (one day of slack for offsets).
        clauses.append("timestamp >= ?")
        params.append(pd.Timestamp(lo - 86_400_000, unit="ms").strftime("%Y-%m-%d"))
    if hi is not None:
        clauses.append("timestamp <= ?")
        params.append(pd.Timestamp(hi + 86_400_000, unit="ms").strftime("%Y-%m-%dT23:59:59.999~"))
    return "".join(f" AND {c}" for c in clauses), params


def _epoch_ms(text: pa.ChunkedArray) -> pa.Array | None:
    """ISO-8601 text → epoch ms in Arrow (fast); None when some value needs SQLite's parser."""
    for unit in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):  # zoned, else naive UTC
        try:
            ns = text.cast(unit).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if ns.null_count:
            return None
        return pa.array(np.floor_divide(ns.to_numpy(), 1_000_000))
    return None


def _fetch_timed(db: Path, columns: str, table: str, where: str, params: list[object]) -> pa.Table:
    """Rows of one symbol with ``ts`` in epoch ms: Arrow parses ISO-8601 text ~10x faster
    than SQLite's julianday(); unusual text (dates without a zone offset mixed with
    others, odd separators) falls back to SQLite's own date functions."""
    order = " ORDER BY timestamp" if table == "series" else ""
    sql = f"SELECT {{ts}} AS ts, {columns} FROM {table} WHERE symbol = ?{where}{order}"
    rows = _fetch(db, sql.format(ts="timestamp"), params)
    ms = _epoch_ms(rows.column("ts")) if rows.num_rows else pa.array([], pa.int64())
    if ms is None:
        return _fetch(db, sql.format(ts=_TS_MS), params)
    return rows.set_column(0, "ts", ms)


class _Part(NamedTuple):
    """One symbol's rows, already numpy: epoch-ms times, OHLCV floats, raw indicator rows."""

    ts: np.ndarray
    columns: dict[str, np.ndarray]
    indicators: pa.Table | None


def _read_symbol(db: Path, symbol: str, lo: int | None, hi: int | None, indicators: bool) -> _Part:
    """Fetch and convert one symbol (run on the pool: Arrow releases the GIL)."""
    where, params = _range_sql(lo, hi)
    series = _fetch_timed(db, "open, high, low, close, volume", "series", where, [symbol, *params])
    if series.column("ts").null_count:
        raise StoreError(
            f"series.timestamp: unparseable timestamps for {symbol} — "
            "run `plus-ultra data validate` to list them"
        )
    series = series.combine_chunks()
    ts = series.column("ts").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    columns = {c: _as_float(series.column(c)) for c in OHLCV}
    if lo is not None or hi is not None:
        keep = _trim(ts, lo, hi)
        if not keep.all():
            ts, columns = ts[keep], {c: v[keep] for c, v in columns.items()}
    ind = None
    if indicators:
        ind = _fetch_timed(db, "name, value", "indicators", where, [symbol, *params])
    return _Part(ts, columns, ind)


def _as_float(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    return column.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _trim(ts: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    keep = np.ones(len(ts), dtype=bool)
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts <= hi
    return keep


def _interleave(columns: list[np.ndarray]) -> np.ndarray:
    """``[a, b, …]`` → ``a0 b0 … a1 b1 …``, copied in cache-sized row blocks.

    Writing each column with a stride over the whole output touches every cache line
    once per column; blocks of rows keep the output block in cache instead.
    """
    n = len(columns[0])
    out = np.empty((n, len(columns)))
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(n, lo + _BLOCK_ROWS)
        for k, column in enumerate(columns):
            out[lo:hi, k] = column[lo:hi]
    return out.ravel()


def _assemble(
    symbols: list[str], parts: list[_Part], pool: ThreadPoolExecutor | None = None
) -> pd.DataFrame:
    lengths = [len(part.ts) for part in parts]
    first = parts[0].ts if parts else np.empty(0, np.int64)
    shared = (
        bool(parts)
        and bool(np.all(first[1:] > first[:-1]))  # unique times (two texts can be one ms)
        and all(len(part.ts) == lengths[0] and np.array_equal(part.ts, first) for part in parts)
    )
    n_syms = len(parts)
    ind_frames, offset = [], 0
    for code, part in enumerate(parts):
        if part.indicators is not None and part.indicators.num_rows and len(part.ts):
            ind_frames.append((code, offset, part.ts, part.indicators))
        offset += len(part.ts)
    if shared:
        # Every symbol on one calendar: (timestamp, symbol) order is a plain interleave.
        columns = [[part.columns[c] for part in parts] for c in OHLCV]
        mapper = pool.map if pool is not None else map  # numpy copies release the GIL
        data = dict(zip(OHLCV, mapper(_interleave, columns), strict=True))
        ts_codes = np.repeat(np.arange(lengths[0], dtype=np.int64), n_syms)
        codes = np.tile(np.arange(n_syms, dtype=np.int32), lengths[0])
        index = _index_from_codes(first, ts_codes, codes, symbols)
        if ind_frames:
            order = np.arange(offset).reshape(n_syms, lengths[0]).T.ravel()
            data.update(_pivot_indicators(ind_frames, offset, order))
    else:
        # Rows arrive symbol-major, each symbol sorted by time: a stable sort on time
        # alone yields (timestamp, symbol) order (timsort merges the sorted runs).
        ts_all = np.concatenate([part.ts for part in parts]) if parts else first
        order = np.argsort(ts_all, kind="stable")
        ts_sorted = ts_all[order]
        codes = np.repeat(np.arange(n_syms, dtype=np.int32), lengths)[order]
        rank = np.empty(offset, dtype=np.int64)  # where each concatenated row lands
        rank[order] = np.arange(offset)
        bounds = np.cumsum([0, *lengths])
        data = {}
        for c in OHLCV:
            out = np.empty(offset)
            for k, part in enumerate(parts):
                out[rank[bounds[k] : bounds[k + 1]]] = part.columns[c]
            data[c] = out
        data.update(_pivot_indicators(ind_frames, offset, order))
        index = _make_index(ts_sorted, codes, symbols)
    return pd.DataFrame(data, index=index, copy=False)


def _pivot_indicators(
    frames: list[tuple[int, int, np.ndarray, pa.Table]], n_rows: int, order: np.ndarray
) -> dict[str, np.ndarray]:
    """Long indicator rows → wide columns aligned to the (unsorted) concatenated rows."""
    if not frames:
        return {}
    names = sorted({n for *_, t in frames for n in t.column("name").unique().to_pylist()})
    wide = np.full((len(names), n_rows), np.nan)
    name_pos = {n: i for i, n in enumerate(names)}
    for _code, offset, ts_sym, table in frames:
        its = table.column("ts").to_numpy(zero_copy_only=False).astype(np.int64)
        rows = np.searchsorted(ts_sym, its)
        ok = (rows < len(ts_sym)) & (ts_sym[np.minimum(rows, len(ts_sym) - 1)] == its)
        name_idx = np.array([name_pos[n] for n in table.column("name").to_pylist()])
        values = _as_float(table.column("value"))
        wide[name_idx[ok], offset + rows[ok]] = values[ok]
    return {n: wide[i][order] for n, i in name_pos.items()}


def _make_index(ts_ms: np.ndarray, codes: np.ndarray, symbols: list[str]) -> pd.MultiIndex:
    """(timestamp, symbol) MultiIndex from sorted epoch-ms and symbol codes, no hashing."""
    if len(ts_ms):
        new = np.empty(len(ts_ms), dtype=bool)
        new[0] = True
        np.not_equal(ts_ms[1:], ts_ms[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        levels_ts = ts_ms[starts]
        run_lengths = np.diff(starts, append=len(ts_ms))
        ts_codes = np.repeat(np.arange(len(starts), dtype=np.int64), run_lengths)
    else:
        ts_codes = np.empty(0, np.int64)
        levels_ts = np.empty(0, np.int64)
    return _index_from_codes(levels_ts, ts_codes, codes, symbols)


def _index_from_codes(
    levels_ts: np.ndarray, ts_codes: np.ndarray, codes: np.ndarray, symbols: list[str]
) -> pd.MultiIndex:
    """(timestamp, symbol) MultiIndex from unique sorted epoch-ms levels and both codes."""
    ts_level = pd.DatetimeIndex(levels_ts.astype("datetime64[ms]").astype("datetime64[ns]"))
    return pd.MultiIndex(
        levels=[ts_level.tz_localize("UTC"), pd.Index(symbols, dtype=object)],
        codes=[ts_codes, codes],
        names=["timestamp", "symbol"],
        verify_integrity=False,
    )


def _resolve_symbols(db: Path, symbols: Sequence[str] | None) -> tuple[list[str], bool]:
    with contextlib.closing(connect(db)) as con:
        tables = list_tables(con)
        if "series" not in tables:
            raise StoreError(
                f"{db}: table `series` is missing (tables: {', '.join(tables) or 'none'}) — "
                "import data with `plus-ultra data import` or `plus-ultra data fixture`"
            )
        # Skip-scan of the (symbol, timestamp) key: one index seek per symbol, not a scan.
        present = [
            r[0]
            for r in con.execute(
                "WITH RECURSIVE s(sym) AS (SELECT MIN(symbol) FROM series UNION ALL "
                "SELECT (SELECT MIN(symbol) FROM series WHERE symbol > s.sym) FROM s "
                "WHERE s.sym IS NOT NULL) SELECT sym FROM s WHERE sym IS NOT NULL"
            )
        ]
        has_indicators = "indicators" in tables
    if symbols is None:
        return present, has_indicators
    missing = [s for s in symbols if s not in set(present)]
    if missing:
        import difflib

        hints = {m: difflib.get_close_matches(m, present, n=1) for m in missing}
        detail = ", ".join(f"{m} (did you mean {h[0]}?)" if h else m for m, h in hints.items())
        raise StoreError(f"series.symbol: no rows for {detail} in {db}")
    return sorted(set(symbols)), has_indicators  # the panel is sorted by time, then symbol


def _panel_table(panel: pd.DataFrame) -> pa.Table:
    """The panel as the Arrow table the cache stores (index levels become columns)."""
    ts = panel.index.get_level_values(0)
    sym = panel.index.get_level_values(1)
    arrays = {
        "timestamp": pa.array(ts.asi8, type=pa.timestamp("ns", tz="UTC")),
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(panel.index.codes[1], type=pa.int32()),
            pa.array(panel.index.levels[1].astype(str)),
        )
        if len(sym)
        else pa.array([], type=pa.dictionary(pa.int32(), pa.string())),
    }
    arrays.update({c: pa.array(panel[c].to_numpy()) for c in panel.columns})
    return pa.table(arrays)


def _panel_from_cache(decoded: Decoded) -> pd.DataFrame:
    index = _make_index(decoded.ts_ms, decoded.codes, decoded.symbols)
    return pd.DataFrame(decoded.columns, index=index, copy=False)


def read_panel(
    db: str | Path,
    symbols: Sequence[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    *,
    include_indicators: bool = True,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    threads: int = 2,
) -> pd.DataFrame:
    """Read OHLCV (+ wide indicators) for ``symbols`` between ``start`` and ``end``.

    Returns a DataFrame indexed by (``timestamp`` UTC, ``symbol``), sorted by time then
    symbol, with float64 columns ``open, high, low, close, volume`` followed by one
    column per indicator name. Calendars may differ between symbols (a row exists only
    where the symbol traded). ``start``/``end`` are inclusive; a date-only ``end``
    includes that whole day.
    """
    db = Path(db)
    if not db.is_file():
        raise StoreError(
            f"database {db} does not exist — create one with `plus-ultra data fixture` "
            "or `plus-ultra data import`"
        )
    lo, hi = _bounds(start, end)
    # The key is the request itself plus the database's content fingerprint, so a hit
    # never opens the database: the same request on the same content gives the same panel.
    entry = None
    if cache:
        request = {
            "symbols": list(symbols) if symbols is not None else None,
            "lo": lo,
            "hi": hi,
            "indicators": include_indicators,
        }
        try:
            entry = CacheEntry.of(db, Path(cache_dir) if cache_dir else None, request)
        except OSError as err:  # unreadable header: the database open below says why
            log.warning("panel cache off for %s: cannot fingerprint it (%s)", db, err)
        decoded = entry.load() if entry is not None else None  # None: absent or corrupt
        if decoded is not None:
            return _panel_from_cache(decoded)

    symbol_list, has_indicators = _resolve_symbols(db, symbols)
    include_indicators = include_indicators and has_indicators
    workers = max(1, min(threads, len(symbol_list)))
    with ThreadPoolExecutor(workers) as pool:
        try:
            parts = list(
                pool.map(lambda s: _read_symbol(db, s, lo, hi, include_indicators), symbol_list)
            )
            panel = _assemble(symbol_list, parts, pool)
        except Exception:
            # Text in a REAL column ('n/a') fails in Arrow's cast or ADBC's type check, a
            # missing column in ADBC's prepare, an unparseable time in _read_symbol: name
            # the rows as `data validate` does; anything else is re-raised as it was.
            from .validation_entry import raise_unreadable

            raise_unreadable(db, symbol_list, lo, hi, indicators=include_indicators)
            raise
    if entry is not None:
        try:
            entry.store(_panel_table(panel))
        except OSError as err:
            log.warning("could not write panel cache %s (%s)", entry.path, err)
    return panel
