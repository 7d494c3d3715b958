"""The self-checking Parquet cache behind :func:`~market_nn_plus_ultra.data.panel.read_panel`.

One file per (database, database version, request)::

    <cache dir>/panel-<db stem>-<db id>-<version>-<request>.parquet

- ``db id`` (8 hex) hashes the database's resolved path, so caches of two databases
  with the same name in one shared cache folder never mix;
- ``version`` (12 hex) hashes the database's *fingerprint* (:func:`database_fingerprint`):
  file size, modification and status-change times and inode of the database (and of a
  ``-journal``), plus SQLite's 100-byte header, whose file change counter (bytes
  24..27) every committed write transaction increments in rollback-journal mode. In WAL
  mode that counter stays put, so the bytes of the database and of its ``-wal`` file are
  hashed (CRC-32, about 2-3 GB/s) as well;
- ``request`` (12 hex) hashes the symbols, the time bounds, the indicator switch and
  the cache format.

Every file carries, in its Parquet footer, the CRC-32 of each *decoded* array (times,
symbol codes and names, every value column). A read decodes the file, recomputes them
and compares: any difference, a missing or altered footer entry, or a decode error means
the file is corrupt; the caller is told to read the database instead (with a warning
that names the file), and the fresh panel overwrites the bad file. Checking decoded
arrays rather than file bytes covers everything the reader returns — page headers and
the footer's schema included — at the cost of one CRC pass over the panel.

Writing a new version of a database's cache prunes the files it supersedes: every
file of that database with another version (it can never be hit again), files of the
pre-checksum format, and beyond :data:`KEEP_PER_DATABASE` files of the current version
the least recently used ones (a hit refreshes a file's modification time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_path

__all__ = ["KEEP_PER_DATABASE", "CacheEntry", "Decoded", "cache_key", "database_fingerprint"]

log = logging.getLogger(__name__)

FORMAT = 3  # 3: per-array CRC-32 in the footer, content fingerprint of the database
KEEP_PER_DATABASE = 16  # current-version files kept per database (distinct requests)
_META = b"plus_ultra_panel_cache"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CHUNK = 1 << 23  # bytes per read when hashing a file
_LEGACY = re.compile(r"^[0-9a-f]{24}\.parquet$")  # format 2: panel-<stem>-<key>.parquet


def _crc32_file(path: Path) -> int | None:
    """CRC-32 of a file's bytes, or None when it vanished (a WAL removed at close)."""
    crc = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
    except FileNotFoundError:
        return None
    return crc


def database_fingerprint(db: str | Path) -> dict[str, object]:
    """What changes whenever the database's content changes (JSON-able).

    ``stat``/``stat-journal``: ``[size, mtime_ns, ctime_ns, inode]`` of the database and
    of a ``-journal`` file when present (the status-change time cannot be set back by
    ``os.utime``/``touch``; replacing the file changes the inode). ``header``: SQLite's
    100-byte header (change counter, schema cookie, page count). In WAL mode (header bytes
    18..19 = 2) commits do not touch the header, so ``content`` and ``wal`` hold the CRC-32
    of the database file and of its ``-wal`` file (0 when absent or empty). The ``-wal``
    file's own times are left out: read-only readers create an empty one and touch it.
    """
    db = Path(db)
    out: dict[str, object] = {}
    for suffix in ("", "-journal"):
        try:
            st = os.stat(f"{db}{suffix}")
        except FileNotFoundError:
            continue
        out[f"stat{suffix}"] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    with open(db, "rb") as handle:
        header = handle.read(100)
    out["header"] = header.hex()
    if header.startswith(_SQLITE_MAGIC) and header[18:20] == b"\x02\x02":
        out["content"] = _crc32_file(db)
        out["wal"] = _crc32_file(Path(f"{db}-wal")) or 0
    return out


def _digest(payload: object, size: int) -> str:
    text = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.blake2b(text, digest_size=size).hexdigest()


class Decoded(NamedTuple):
    """A verified cache file's arrays: epoch-ms times, symbol codes and names, columns."""

    ts_ms: np.ndarray  # int64 [N], sorted
    codes: np.ndarray  # int32 [N], index into ``symbols``
    symbols: list[str]
    columns: dict[str, np.ndarray]  # float64 [N] each, in panel column order


class CacheEntry(NamedTuple):
    """Where one (database version, request) is cached, and what identifies it."""

    db: Path
    folder: Path
    prefix: str  # panel-<stem>-<db id>-
    version: str
    request: str
    fingerprint: dict[str, object]
    described: dict[str, object]  # the request, kept in the footer for people reading it

    @classmethod
    def of(cls, db: Path, cache_dir: Path | None, request: dict[str, object]) -> CacheEntry:
        """The entry for ``request`` on the database's current content."""
        db = db.resolve()
        folder = cache_dir if cache_dir is not None else db.parent / ".plus_ultra_cache"
        fingerprint = database_fingerprint(db)
        return cls(
            db=db,
            folder=folder,
            prefix=f"panel-{db.stem}-{_digest(str(db), 4)}-",
            version=_digest(fingerprint, 6),
            request=_digest({"format": FORMAT, **request}, 6),
            fingerprint=fingerprint,
            described=request,
        )

    @property
    def path(self) -> Path:
        return self.folder / f"{self.prefix}{self.version}-{self.request}.parquet"

    # ------------------------------------------------------------------ read

    def load(self) -> Decoded | None:
        """The cached arrays when the file exists and verifies, else None (and a warning
        naming the file when it exists but does not verify; the file is then removed)."""
        path = self.path
        try:
            decoded = _decode(path)
        except FileNotFoundError:
            return None
        except Exception as err:  # any decode failure: the database holds the truth
            problem = f"{type(err).__name__}: {err}"
        else:
            if isinstance(decoded, Decoded):
                # Marks it recently used for the per-database bound (a read-only cache
                # folder still serves hits).
                with contextlib.suppress(OSError):
                    os.utime(path)
                return decoded
            problem = decoded
        log.warning(
            "panel cache %s is corrupt (%s): reading the database instead and rewriting the cache",
            path,
            problem,
        )
        with contextlib.suppress(OSError):  # the rewrite replaces it anyway
            path.unlink()
        return None

    # ----------------------------------------------------------------- write

    def store(self, table: pa.Table) -> Path | None:
        """Write ``table`` (timestamp ns UTC, dictionary symbol, float columns) with its
        checksums, then prune superseded files. Skipped (None) when the database changed
        while it was being read: the panel may mix two versions."""
        if database_fingerprint(self.db) != self.fingerprint:
            log.info("database %s changed during the read; panel cache not written", self.db)
            return None
        meta = {
            "format": FORMAT,
            "db": str(self.db),
            "fingerprint": self.fingerprint,
            "request": self.described,
            "names": table.column_names,
            "crc32": _checksums(_arrays(table)),
        }
        table = table.replace_schema_metadata({_META: json.dumps(meta, default=str).encode()})
        with atomic_path(self.path) as tmp:
            pq.write_table(table, tmp, compression="lz4")
        self.prune()
        return self.path

    def prune(self) -> list[Path]:
        """Remove this database's superseded cache files; returns what was removed."""
        try:
            names = [e.name for e in os.scandir(self.folder) if e.is_file()]
        except OSError:
            return []
        stem_prefix = self.prefix[: self.prefix.rstrip("-").rfind("-") + 1]  # panel-<stem>-
        doomed, current = [], []
        for name in names:
            if name.startswith(self.prefix) and name.endswith(".parquet"):
                version = name[len(self.prefix) :].split("-", 1)[0]
                if version != self.version:
                    doomed.append(name)  # an older version of the database: never hit again
                else:
                    current.append(name)
            elif name.startswith(stem_prefix) and _LEGACY.match(name[len(stem_prefix) :]):
                doomed.append(name)  # unchecked format-2 file of a database with this name
        if len(current) > KEEP_PER_DATABASE:
            by_use = sorted(current, key=lambda n: _mtime(self.folder / n), reverse=True)
            doomed += [n for n in by_use[KEEP_PER_DATABASE:] if n != self.path.name]
        removed = []
        for name in doomed:
            try:
                (self.folder / name).unlink()
            except OSError:
                continue  # gone already, or not ours to remove
            removed.append(self.folder / name)
        if removed:
            log.info("panel cache: removed %d superseded file(s) of %s", len(removed), self.db)
        return removed


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """The arrays the panel is built from, as numpy, keyed like the checksums."""
    sym = table.column("symbol").combine_chunks()
    if len(sym):
        codes = sym.indices.to_numpy(zero_copy_only=False)
        names = np.frombuffer(json.dumps(sym.dictionary.to_pylist()).encode(), np.uint8)
    else:
        codes, names = np.empty(0, np.int32), np.empty(0, np.uint8)
    out = {
        "timestamp": table.column("timestamp").cast(pa.int64()).to_numpy(),
        "symbol": codes,
        "symbol.names": names,
    }
    for name in table.column_names:
        if name not in ("timestamp", "symbol"):
            out[name] = table.column(name).to_numpy()
    return out


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8))


def _checksums(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    # zlib releases the GIL on large buffers: the columns are checked in parallel.
    with ThreadPoolExecutor(min(4, max(1, len(arrays)))) as pool:
        return dict(zip(arrays, pool.map(_crc, arrays.values()), strict=True))


def _decode(path: Path) -> Decoded | str:
    """Read and verify one file: its arrays, or what is wrong with it."""
    with open(path, "rb") as handle:  # the Parquet reader itself ignores the leading magic
        if handle.read(4) != b"PAR1":
            return "not a Parquet file (bad leading magic bytes)"
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(_META)
    if raw is None:
        return "no checksums in its footer"
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        return f"cache format {meta.get('format')}, expected {FORMAT}"
    if table.column_names != meta["names"]:
        return f"columns {table.column_names} differ from the recorded {meta['names']}"
    arrays = _arrays(table)
    actual = _checksums(arrays)
    bad = [name for name, crc in actual.items() if meta["crc32"].get(name) != crc]
    if bad or actual.keys() != meta["crc32"].keys():
        return f"checksum mismatch in {', '.join(bad) or 'the list of arrays'}"
    symbols = json.loads(arrays["symbol.names"].tobytes()) if len(arrays["symbol"]) else []
    columns = {n: a for n, a in arrays.items() if n not in ("timestamp", "symbol", "symbol.names")}
    return Decoded(arrays["timestamp"] // 1_000_000, arrays["symbol"], symbols, columns)


def cache_key(db: str | Path, **request: object) -> str:
    """Hex key of (database content version, request): equal keys ⇒ identical panels."""
    entry = CacheEntry.of(Path(db), None, dict(request))
    return _digest([entry.prefix, entry.version, entry.request], 12)
