"""The crash-safe writer: unique temporaries, fsync, stale-temp cleanup, no half files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from market_nn_plus_ultra import _io
from market_nn_plus_ultra._io import (
    atomic_dir,
    atomic_path,
    atomic_write,
    remove_stale_temps,
    temp_path,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_names_are_unique_per_process_and_call(tmp_path):
    target = tmp_path / "out.parquet"
    names = {temp_path(target).name for _ in range(200)}
    assert len(names) == 200
    pattern = rf"^\.out\.parquet\.{os.getpid()}-[0-9a-f]{{8}}\.tmp$"
    assert all(re.match(pattern, n) for n in names)
    assert temp_path(target).parent == tmp_path  # same folder: the rename stays atomic


def test_concurrent_writers_of_one_target_never_collide(tmp_path):
    target = tmp_path / "x.txt"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                atomic_write(target, f"writer {i}\n" * 100)
        except BaseException as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = target.read_text().splitlines()
    assert len(lines) == 100 and len(set(lines)) == 1  # one writer's whole file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(_io.os, "fsync", counting)
    target = tmp_path / "a.json"
    atomic_write(target, "{}")
    assert target.read_text() == "{}"
    assert len(synced) == 2
    assert re.search(r"/\.a\.json\.\d+-[0-9a-f]{8}\.tmp$", synced[0])  # the data, before rename
    assert synced[1] == str(tmp_path)  # the folder, after: the rename survives a power cut


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "frame.parquet"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.parquet"]


def test_a_writer_that_writes_nothing_publishes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="produced no file"), atomic_path(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_stale_temps_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".report.html.{dead}-0badc0de.tmp"
    stale.write_text("left by a kill -9")
    stale_db = tmp_path / f".db.sqlite.{dead}-12345678.tmp-journal"  # SQLite's sidecar
    stale_db.write_text("journal")
    stale_dir = tmp_path / f".report_files.{dead}-abcdef01.tmp"
    stale_dir.mkdir()
    (stale_dir / "equity.png").write_bytes(b"png")
    live = tmp_path / f".report.html.{os.getppid()}-0badc0de.tmp"  # our parent runs
    live.write_text("being written")
    mine = temp_path(tmp_path / "report.html")
    mine.write_text("ours")
    user = tmp_path / ".notes.1.tmp"  # not our pattern: never touched
    user.write_text("a user's file")

    atomic_write(tmp_path / "report.html", "<html/>")  # every write cleans its folder

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["report.html", live.name, mine.name, user.name])
    assert remove_stale_temps(tmp_path) == []  # nothing dead is left


def test_atomic_dir_swaps_a_whole_folder(tmp_path):
    target = tmp_path / "report_files"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")
    with atomic_dir(target) as staged:
        (staged / "new.png").write_bytes(b"new")
        assert sorted(p.name for p in target.iterdir()) == ["old.png"]  # untouched until done
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report_files"]

    with pytest.raises(ValueError), atomic_dir(target) as staged:
        (staged / "broken.png").write_bytes(b"x")
        raise ValueError("render failed")
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report_files"]


def test_atomic_dir_without_replace_refuses_an_existing_folder(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "meta.json").write_text("{}")
    with pytest.raises(FileExistsError), atomic_dir(target, replace=False) as staged:
        (staged / "meta.json").write_text('{"new": 1}')
    assert (target / "meta.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
