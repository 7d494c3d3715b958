"""The panel cache checks itself: byte flips, restored mtimes, pruning, concurrent writes."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import market_nn_plus_ultra.data.panel as panel_module
import market_nn_plus_ultra.data.panel_cache as panel_cache
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.data.panel_cache import CacheEntry, database_fingerprint
from market_nn_plus_ultra.data.store import update_database, write_database
from tests.data.test_panel import _series as daily_series

CACHE_LOG = "market_nn_plus_ultra.data.panel_cache"


def _series(symbol: str, n: int, seed: int) -> pd.DataFrame:
    return daily_series(symbol, n, "D", seed, price=250.0)


@pytest.fixture()
def db(tmp_path):
    series = pd.concat([_series("SPY", 300, 1), _series("QQQ", 300, 2)])
    indicators = series[["timestamp", "symbol"]].assign(name="sma", value=np.arange(600.0))
    path = tmp_path / "m.db"
    write_database(path, {"series": series, "indicators": indicators})
    return path


def _cache_files(folder):
    return sorted(p.name for p in folder.glob("*.parquet"))


def _refuse(*_args, **_kwargs):
    raise AssertionError("the database was read although the cache should have served")


def _no_database(monkeypatch):
    """Make any database access fail, so a passing read proves it was a cache hit."""
    monkeypatch.setattr(panel_module, "_resolve_symbols", _refuse)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _offsets(path):
    """Named offsets in one cache file: magic, column chunks, footer fields, footer length."""
    size = path.stat().st_size
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(0)
    chunks = {}
    for i in range(group.num_columns):
        column = group.column(i)
        start = column.dictionary_page_offset or column.data_page_offset
        chunks[column.path_in_schema] = start + column.total_compressed_size // 2
    data = path.read_bytes()
    footer_len = int.from_bytes(data[-8:-4], "little")
    footer = size - 8 - footer_len
    return {
        "header magic": 1,
        "first page header": 5,
        "timestamp data": chunks["timestamp"],
        "high data": chunks["high"],
        "close data": chunks["close"],
        "sma data": chunks["sma"],
        "column name 'close' in the footer": data.index(b"close", footer) + 4,
        "arrow schema in the footer": data.index(b"ARROW:schema", footer) + 40,
        "footer length": size - 8,
        "trailing magic": size - 2,
    }


@pytest.mark.parametrize(
    "where",
    [
        "header magic",
        "first page header",
        "timestamp data",
        "high data",
        "close data",
        "sma data",
        "column name 'close' in the footer",
        "arrow schema in the footer",
        "footer length",
        "trailing magic",
    ],
)
def test_a_flipped_byte_falls_back_to_the_database_and_rewrites(db, tmp_path, caplog, where):
    cache_dir = tmp_path / "cache"
    truth = read_panel(db, cache=False)
    read_panel(db, cache_dir=cache_dir)  # writes the cache
    (path,) = cache_dir.glob("*.parquet")
    good = path.read_bytes()
    _flip(path, _offsets(path)[where])

    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        served = read_panel(db, cache_dir=cache_dir)
    pd.testing.assert_frame_equal(served, truth, check_exact=True)
    warnings = [r.getMessage() for r in caplog.records if r.name == CACHE_LOG]
    assert len(warnings) == 1 and str(path) in warnings[0] and "corrupt" in warnings[0]
    assert path.read_bytes() == good  # rewritten from the database, byte for byte

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        pd.testing.assert_frame_equal(read_panel(db, cache_dir=cache_dir), truth, check_exact=True)
    assert not caplog.records  # the rewritten file verifies


def test_the_data_flip_of_the_report_decodes_silently_without_the_checksum(db, tmp_path):
    """The measured defect: a flip in the `high` column decodes to another number."""
    cache_dir = tmp_path / "cache"
    read_panel(db, cache_dir=cache_dir)
    (path,) = cache_dir.glob("*.parquet")
    before = pq.read_table(path).column("high").to_numpy()
    _flip(path, _offsets(path)["high data"])
    after = pq.read_table(path).column("high").to_numpy()  # Parquet itself does not notice
    assert (before != after).sum() >= 1
    truth = read_panel(db, cache=False)
    np.testing.assert_array_equal(read_panel(db, cache_dir=cache_dir)["high"], truth["high"])


def test_a_recorded_checksum_that_does_not_match_is_refused(db, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    truth = read_panel(db, cache=False)
    read_panel(db, cache_dir=cache_dir)
    (path,) = cache_dir.glob("*.parquet")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"plus_ultra_panel_cache"])
    meta["crc32"]["close"] ^= 1
    pq.write_table(
        table.replace_schema_metadata({b"plus_ultra_panel_cache": json.dumps(meta).encode()}),
        path,
    )
    with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
        pd.testing.assert_frame_equal(read_panel(db, cache_dir=cache_dir), truth, check_exact=True)
    assert "checksum mismatch in close" in caplog.text and str(path) in caplog.text


def test_every_single_byte_flip_serves_the_database_values(db, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    truth = read_panel(db, cache=False)
    read_panel(db, cache_dir=cache_dir)
    (path,) = cache_dir.glob("*.parquet")
    good = path.read_bytes()
    offsets = np.linspace(0, len(good) - 1, 60).astype(int)
    warned = 0
    for offset in offsets:
        path.write_bytes(good)
        _flip(path, int(offset))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=CACHE_LOG):
            served = read_panel(db, cache_dir=cache_dir)
        pd.testing.assert_frame_equal(served, truth, check_exact=True)
        warned += bool(caplog.records)
    # Flips in bytes the reader never uses (min/max statistics, the writer's name) are
    # harmless and not reported; nearly every other byte is.
    assert warned >= 45


def test_update_then_restored_mtime_serves_fresh_closes(db, tmp_path):
    cache_dir = tmp_path / "cache"
    stale = read_panel(db, cache_dir=cache_dir)
    before = db.stat()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE series SET close = close + 1 WHERE symbol = 'SPY'")
    con.close()
    os.utime(db, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = db.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    fresh = read_panel(db, cache_dir=cache_dir)
    pd.testing.assert_frame_equal(fresh, read_panel(db, cache=False), check_exact=True)
    spy = pd.IndexSlice[:, "SPY"]
    np.testing.assert_allclose(fresh.loc[spy, "close"], stale.loc[spy, "close"] + 1)


def test_the_header_change_counter_alone_detects_a_rollback_journal_commit(db):
    before = database_fingerprint(db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE series SET close = close + 1 WHERE symbol = 'SPY'")
    con.close()
    after = database_fingerprint(db)
    counter = slice(48, 56)  # bytes 24..27 of the header, as hex
    assert int(after["header"][counter], 16) == int(before["header"][counter], 16) + 1
    assert "content" not in after  # rollback-journal mode: no file hashing needed


@pytest.mark.parametrize("keep_open", [False, True])
def test_wal_mode_changes_are_detected_with_a_restored_mtime(db, tmp_path, monkeypatch, keep_open):
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA journal_mode=WAL")
    con.close()
    cache_dir = tmp_path / "cache"
    read_panel(db, cache_dir=cache_dir)
    before_stat, before = db.stat(), database_fingerprint(db)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE series SET close = close * 2 WHERE symbol = 'QQQ'")
    if not keep_open:
        con.close()  # checkpointed into the database file; the -wal file goes away
    os.utime(db, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    after = database_fingerprint(db)
    assert after["header"] == before["header"]  # WAL commits leave the header alone ...
    if not keep_open:
        assert after["content"] != before["content"]  # ... the content hash sees them
    try:
        fresh = read_panel(db, cache_dir=cache_dir)
        pd.testing.assert_frame_equal(fresh, read_panel(db, cache=False), check_exact=True)
        _no_database(monkeypatch)
        hit = read_panel(db, cache_dir=cache_dir)  # readers' side effects keep the key
        pd.testing.assert_frame_equal(hit, fresh, check_exact=True)
    finally:
        con.close()


def test_a_hit_never_opens_the_database(db, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = read_panel(db, ["SPY"], start="2024-02-01", end="2024-03-01", cache_dir=cache_dir)
    _no_database(monkeypatch)
    second = read_panel(db, ["SPY"], start="2024-02-01", end="2024-03-01", cache_dir=cache_dir)
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_pruning_keeps_one_file_per_query_of_the_current_version(db, tmp_path):
    cache_dir = tmp_path / "cache"
    other = tmp_path / "other" / "m.db"  # same name, another database, same cache folder
    other.parent.mkdir()
    write_database(other, {"series": _series("SPY", 10, 9)})
    read_panel(other, cache_dir=cache_dir)
    legacy = cache_dir / f"panel-m-{'ab' * 12}.parquet"  # the unchecked format-2 name
    legacy.write_bytes(b"old")

    read_panel(db, cache_dir=cache_dir)
    read_panel(db, ["SPY"], cache_dir=cache_dir)
    assert not legacy.exists()
    assert len(_cache_files(cache_dir)) == 3  # two queries of db, one of other
    for _ in range(3):
        update_database(db, {"series": _series("SPY", 1, 5).assign(close=1.0)})
        read_panel(db, cache_dir=cache_dir)
        read_panel(db, ["SPY"], cache_dir=cache_dir)
        read_panel(db, cache_dir=cache_dir)  # a hit: nothing new
        assert len(_cache_files(cache_dir)) == 3
    other_entry = CacheEntry.of(other, cache_dir, {})
    assert sum(n.startswith(other_entry.prefix) for n in _cache_files(cache_dir)) == 1
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]


def test_the_least_recently_used_queries_beyond_the_bound_are_pruned(db, tmp_path, monkeypatch):
    monkeypatch.setattr(panel_cache, "KEEP_PER_DATABASE", 2)
    cache_dir = tmp_path / "cache"
    read_panel(db, end="2024-02-01", cache_dir=cache_dir)
    (first,) = _cache_files(cache_dir)
    read_panel(db, end="2024-03-01", cache_dir=cache_dir)
    (second,) = set(_cache_files(cache_dir)) - {first}
    os.utime(cache_dir / first, ns=(1, 1))  # the first query is now the least recently used
    read_panel(db, end="2024-04-01", cache_dir=cache_dir)
    remaining = _cache_files(cache_dir)
    assert len(remaining) == 2 and first not in remaining and second in remaining
    (third,) = set(remaining) - {second}
    os.utime(cache_dir / second, ns=(1, 1))
    os.utime(cache_dir / third, ns=(5, 5))
    read_panel(db, end="2024-03-01", cache_dir=cache_dir)  # a hit: `second` is now the newest
    read_panel(db, end="2024-02-01", cache_dir=cache_dir)  # re-created; `third` goes
    assert set(_cache_files(cache_dir)) == {first, second}


def test_concurrent_cold_reads_publish_one_verified_file(db, tmp_path):
    cache_dir = tmp_path / "cache"
    truth = read_panel(db, cache=False)
    results, errors = [], []

    def work():
        try:
            results.append(read_panel(db, cache_dir=cache_dir, threads=1))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for panel in results:
        pd.testing.assert_frame_equal(panel, truth, check_exact=True)
    assert len(_cache_files(cache_dir)) == 1
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".parquet")] == []
    entry = CacheEntry.of(db, cache_dir, {})
    assert _cache_files(cache_dir)[0].startswith(entry.prefix)


def test_a_database_changed_during_the_read_is_not_cached(db, tmp_path):
    request = {"symbols": None, "lo": None, "hi": None, "indicators": True}
    entry = CacheEntry.of(db, tmp_path / "cache", request)
    panel = read_panel(db, cache=False)
    update_database(db, {"series": _series("SPY", 1, 5).assign(close=1.0)})
    assert entry.store(panel_module._panel_table(panel)) is None
    assert not entry.path.exists()
