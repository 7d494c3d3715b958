"""Killed and starved writers: hot journals recover, full disks say so, rows survive kill -9."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.data import store
from market_nn_plus_ultra.data.importers import import_frames
from market_nn_plus_ultra.data.store import StoreError, read_table, update_database

PLUS_ULTRA = Path(sys.executable).with_name("plus-ultra")


def _bars(n: int, seed: int) -> pd.DataFrame:
    """``n`` hourly bars of a positive random walk, as a CSV reader would give them."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2001-01-01", periods=n, freq="h", tz="UTC").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(100, 1000, n).astype(float),
        }
    )


def _series(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT * FROM series ORDER BY symbol, timestamp").fetchall()


@pytest.fixture
def small_db(tmp_path) -> Path:
    _bars(300, 1).to_csv(tmp_path / "AAA.csv", index=False)
    db = tmp_path / "db.sqlite"
    import_frames(db, tmp_path / "AAA.csv")
    return db


# A writer killed inside its transaction, after SQLite spilled changed pages into the
# database file: the journal holds the originals and is "hot".
_KILLED_WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("PRAGMA cache_size=2")  # pages: spill to the file at once
    con.execute("BEGIN IMMEDIATE")
    con.execute("DELETE FROM series")
    con.executemany(
        "INSERT INTO series VALUES (?, 'ZZZ', 1, 1, 1, 1, 1)",
        [(f"2030-01-01T{i:08d}",) for i in range(20000)],
    )
    print("in transaction", flush=True)
    time.sleep(60)
    """
)


def _leave_hot_journal(db: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "in transaction"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert Path(f"{db}-journal").stat().st_size > 0


def test_a_read_only_open_rolls_back_a_hot_journal(small_db):
    before = _series(small_db)
    _leave_hot_journal(small_db)
    # Before the fix: "db.sqlite is not a readable SQLite database (attempt to write a
    # readonly database)" from every read-only open.
    frame = read_table(small_db, "series", parse_time=False)
    assert len(frame) == 300 and set(frame["symbol"]) == {"AAA"}
    assert not Path(f"{small_db}-journal").exists()
    assert _series(small_db) == before


def test_a_hot_journal_on_a_read_only_database_names_the_journal_and_the_fix(small_db, monkeypatch):
    _leave_hot_journal(small_db)
    monkeypatch.setattr(store.os, "access", lambda path, mode: False)  # root ignores chmod
    with pytest.raises(StoreError) as err:
        store.connect(small_db)
    message = str(err.value)
    assert f"{small_db}-journal" in message
    assert "make" in message and "writable" in message
    assert f'sqlite3 {small_db} "PRAGMA integrity_check"' in message


def test_a_full_disk_during_an_update_is_a_message_and_changes_nothing(small_db, monkeypatch):
    before = _series(small_db)
    real = store.connect

    def full_disk(path, *, readonly=True):
        con = real(path, readonly=readonly)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL
        return con

    monkeypatch.setattr(store, "connect", full_disk)
    new = _bars(5000, 2).assign(symbol="BBB")
    new["timestamp"] = pd.to_datetime(new["timestamp"])
    # Before the fix: sqlite3.OperationalError "cannot rollback - no transaction is active".
    with pytest.raises(StoreError, match="disk is full") as err:
        update_database(small_db, {"series": new})
    assert "cannot rollback" not in str(err.value) and str(small_db) in str(err.value)
    assert "holds what it held before" in str(err.value)
    monkeypatch.setattr(store, "connect", real)
    assert _series(small_db) == before


def _validate(db: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PLUS_ULTRA), "data", "validate", str(db)], capture_output=True, text=True
    )


@pytest.mark.slow  # about 15 s: three CLI runs killed, three validations
def test_kill_9_during_import_append_leaves_a_database_every_command_opens(tmp_path):
    """Kill ``data import --append`` at random moments of its write transaction."""
    _bars(300, 1).to_csv(tmp_path / "AAA.csv", index=False)
    _bars(60000, 3).to_csv(tmp_path / "CCC.csv", index=False)
    db = tmp_path / "db.sqlite"
    import_frames(db, tmp_path / "AAA.csv")
    original = _series(db)
    journal = Path(f"{db}-journal")
    rng = random.Random(11)
    hot = 0
    command = [str(PLUS_ULTRA), "data", "import", str(db), "--csv", str(tmp_path / "CCC.csv")]
    for _ in range(3):
        child = subprocess.Popen(
            [*command, "--append"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not journal.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # the transaction has begun once its journal exists
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        child.wait()
        hot += journal.exists()
        checked = _validate(db)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        rows = _series(db)
        assert [r for r in rows if r[1] == "AAA"] == original  # the original rows, intact
        assert len(rows) - len(original) in (0, 60000)  # all of the append or none of it
        if len(rows) > len(original):  # the kill came after the commit: start over
            with sqlite3.connect(db) as con:
                con.execute("DELETE FROM series WHERE symbol = 'CCC'")
                con.execute("DELETE FROM assets WHERE symbol = 'CCC'")
    assert hot >= 1, "no kill landed inside the write transaction: the test proved nothing"


@pytest.mark.slow  # about 15 s: two in-place builds killed, two validations
def test_kill_9_during_an_in_place_build_leaves_the_original_rows(tmp_path):
    from market_nn_plus_ultra.data.fixtures import write_fixture

    db = write_fixture(tmp_path / "f.db", rows=3000, freq="1D")
    original = _series(db)
    journal = Path(f"{db}-journal")
    rng = random.Random(5)
    hot = 0
    for _ in range(2):
        child = subprocess.Popen(
            [str(PLUS_ULTRA), "data", "build", str(db), "--regime-labels"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not journal.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        hot += journal.exists()
        checked = _validate(db)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert _series(db) == original
    assert hot >= 1, "no kill landed inside the write transaction: the test proved nothing"
