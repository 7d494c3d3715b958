"""watch(): debounced, content-hashed, one run at a time, survives failing runs, stops."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from market_nn_plus_ultra.orchestration.watch import WatchError, sqlite_complete, watch

DEBOUNCE = 0.2


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _sqlite_bytes(tmp_path: Path, rows: int, tag: str = "x") -> bytes:
    """A real SQLite database of several pages, as bytes."""
    path = tmp_path / f"_build_{tag}_{rows}.sqlite-src"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE series (symbol TEXT, close REAL, note TEXT)")
        con.executemany(
            "INSERT INTO series VALUES (?, ?, ?)", [(tag, float(i), "n" * 200) for i in range(rows)]
        )
    con.close()
    data = path.read_bytes()
    path.unlink()
    return data


class Recorder:
    """A fake pipeline: records (name, bytes) per run, can sleep, fail, and count overlap."""

    def __init__(self, sleep: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.sleep, self.fail_on = sleep, fail_on
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> str:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            content = path.read_bytes()
            time.sleep(self.sleep)
            self.calls.append((path.name, content))
            if self.fail_on is not None and path.name == self.fail_on:
                raise RuntimeError(f"pipeline failed on {path.name}")
            return "ok"
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def watching(tmp_path):
    """Start watch() on tmp_path/inbox in a thread; yields (folder, start, stop)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(run, **kwargs) -> threading.Thread:
        kwargs.setdefault("debounce_s", DEBOUNCE)
        thread = threading.Thread(target=watch, args=(folder, run), kwargs={"stop": stop, **kwargs})
        thread.start()
        threads.append(thread)
        time.sleep(0.15)  # let the observer start
        return thread

    yield folder, start, stop
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "watch() did not stop when the stop event was set"


@pytest.mark.parametrize("kind", ["sqlite", "opaque"])
def test_a_dump_written_in_pieces_runs_once_on_the_whole_file(watching, tmp_path, kind):
    # opaque bytes have no SQLite header: only the debounce keeps the half file back
    folder, start, _ = watching
    run = Recorder()
    start(run)
    data = _sqlite_bytes(tmp_path, 300) if kind == "sqlite" else os.urandom(200_000)
    target = folder / "market.db"
    with open(target, "wb") as handle:
        for i in range(0, len(data), len(data) // 4 + 1):  # pauses shorter than the debounce
            handle.write(data[i : i + len(data) // 4 + 1])
            handle.flush()
            time.sleep(0.05)
    assert _wait(lambda: len(run.calls) == 1)
    time.sleep(3 * DEBOUNCE)
    assert run.calls == [("market.db", data)]


def test_a_half_copied_sqlite_file_waits_even_past_the_debounce(watching, tmp_path):
    folder, start, _ = watching
    run = Recorder()
    start(run)
    data = _sqlite_bytes(tmp_path, 400)
    target = folder / "market.db"
    target.write_bytes(data[: len(data) // 2])  # the writer stalls for 4× the debounce
    assert not sqlite_complete(target)
    time.sleep(4 * DEBOUNCE)
    assert run.calls == []
    with open(target, "ab") as handle:
        handle.write(data[len(data) // 2 :])
    assert sqlite_complete(target)
    assert _wait(lambda: len(run.calls) == 1)
    assert run.calls[0] == ("market.db", data)


def test_changed_content_runs_again_and_unchanged_does_not(watching, tmp_path):
    folder, start, _ = watching
    run = Recorder()
    start(run)
    first, second = _sqlite_bytes(tmp_path, 50, "a"), _sqlite_bytes(tmp_path, 60, "b")
    target = folder / "market.db"
    target.write_bytes(first)
    assert _wait(lambda: len(run.calls) == 1)
    target.write_bytes(first)  # same bytes, new mtime
    os.utime(target, None)
    time.sleep(4 * DEBOUNCE)
    assert len(run.calls) == 1
    target.write_bytes(second)
    assert _wait(lambda: len(run.calls) == 2)
    assert [c for _, c in run.calls] == [first, second]


def test_other_files_and_hidden_temporaries_are_ignored(watching, tmp_path):
    folder, start, _ = watching
    run = Recorder()
    start(run, patterns=("*.db",))
    data = _sqlite_bytes(tmp_path, 20)
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    (folder / ".market.db.123-abcdef01.tmp").write_bytes(data)
    (folder / ".hidden.db").write_bytes(data)
    (folder / "other.sqlite").write_bytes(data)  # not in patterns here
    time.sleep(4 * DEBOUNCE)
    assert run.calls == []
    os.replace(folder / ".market.db.123-abcdef01.tmp", folder / "market.db")  # atomic landing
    assert _wait(lambda: len(run.calls) == 1)
    assert run.calls == [("market.db", data)]


def test_one_run_at_a_time_and_changes_during_a_run_coalesce(watching, tmp_path):
    folder, start, _ = watching
    run = Recorder(sleep=0.6)
    start(run)
    a, b, c = (_sqlite_bytes(tmp_path, n, t) for n, t in ((30, "a"), (40, "b"), (50, "c")))
    target = folder / "market.db"
    target.write_bytes(a)
    assert _wait(lambda: run.active == 1)  # the first run is in progress
    target.write_bytes(b)
    time.sleep(0.1)
    target.write_bytes(c)  # two changes during the run: one more run, on the final content
    (folder / "second.db").write_bytes(a)  # another dump: queued behind
    assert _wait(lambda: len(run.calls) == 3, timeout=15)
    time.sleep(4 * DEBOUNCE)
    assert run.max_active == 1
    assert sorted((name, content) for name, content in run.calls) == sorted(
        [("market.db", a), ("market.db", c), ("second.db", a)]
    )
    assert run.calls[0] == ("market.db", a)


def test_a_failing_run_is_logged_and_watching_goes_on(watching, tmp_path, caplog):
    folder, start, _ = watching
    run = Recorder(fail_on="bad.db")
    caplog.set_level(logging.ERROR, logger="market_nn_plus_ultra.orchestration.watch")
    start(run)
    data = _sqlite_bytes(tmp_path, 20)
    (folder / "bad.db").write_bytes(data)
    assert _wait(lambda: len(run.calls) == 1)
    (folder / "good.db").write_bytes(data)
    assert _wait(lambda: len(run.calls) == 2)
    assert [name for name, _ in run.calls] == ["bad.db", "good.db"]
    assert _wait(lambda: "the run on" in caplog.text and "bad.db" in caplog.text)
    assert "pipeline failed on bad.db" in caplog.text  # the traceback is in the log


def test_existing_dumps_are_the_baseline_unless_asked(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    data = _sqlite_bytes(tmp_path, 20)
    (folder / "old.db").write_bytes(data)
    for run_existing, expected in ((False, []), (True, [("old.db", data)])):
        run, stop = Recorder(), threading.Event()
        thread = threading.Thread(
            target=watch,
            args=(folder, run),
            kwargs={"debounce_s": DEBOUNCE, "stop": stop, "run_existing": run_existing},
        )
        thread.start()
        if expected:
            assert _wait(lambda run=run: len(run.calls) == 1)
        time.sleep(4 * DEBOUNCE)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert run.calls == expected


def test_polling_observer_sees_new_dumps(watching, tmp_path):
    folder, start, _ = watching
    run = Recorder()
    start(run, polling=True)
    data = _sqlite_bytes(tmp_path, 20)
    (folder / "market.sqlite3").write_bytes(data)
    assert _wait(lambda: len(run.calls) == 1)


def test_stop_ends_the_watch_promptly(tmp_path):
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(tmp_path, Recorder()), kwargs={"stop": stop})
    thread.start()
    time.sleep(0.2)
    began = time.monotonic()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - began < 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folder": "missing"}, "is not a folder"),
        ({"debounce_s": 0}, "debounce_s must be > 0"),
        ({"patterns": ()}, "patterns must be file-name globs"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, kwargs, message):
    folder = tmp_path / kwargs.pop("folder", "")
    with pytest.raises(WatchError, match=message):
        watch(folder, Recorder(), stop=threading.Event(), **kwargs)


def test_sqlite_complete_reads_the_header(tmp_path):
    data = _sqlite_bytes(tmp_path, 100)
    path = tmp_path / "x.db"
    for size, expected in ((0, False), (50, False), (4096, False), (len(data), True)):
        path.write_bytes(data[:size])
        assert sqlite_complete(path) is expected, size
    path.write_bytes(b"not a database, just a long enough text file " * 5)
    assert sqlite_complete(path)  # not SQLite: the pipeline's own checks judge it
