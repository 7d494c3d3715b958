"""Watch a folder and run a pipeline on every new or changed SQLite dump that lands in it.

:func:`watch` blocks until ``stop`` is set. A file whose name matches ``patterns`` (hidden
files never do) has **landed** when

1. its size and modification time (and those of a ``-journal``/``-wal`` sidecar) have not
   changed for ``debounce_s`` seconds, and
2. when it is a SQLite database, it is as long as its header says (page size × page count):
   a copy still in flight is shorter, so a half file never starts a run even when the
   writer pauses for longer than the debounce.

A landed file runs ``run(path)`` when its content (SHA-256) differs from the content last
run or seen at start: a rewrite with the same bytes (``touch``, a re-copy) does not run
again, a new dump under the same name does. Files already in the folder at start are the
baseline and do not run unless ``run_existing``; a file that is deleted and lands again
counts as new.

Runs happen one at a time, in this thread, in the order the files landed. Changes that
arrive during a run wait for it; several changes to one file coalesce into one run on its
final content. If ``run`` raises, the error is logged and watching goes on (the same
content is not retried; the next change is).

File events come from watchdog: the OS's notifications (inotify, FSEvents, …), or with
``polling=True`` a polling observer for network file systems where those events do not
arrive. The folder is also rescanned at least once a second, so a missed event delays a
run but never loses it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WatchError", "sqlite_complete", "watch"]

log = logging.getLogger(__name__)

_SIDECARS = ("-journal", "-wal")
_SQLITE_MAGIC = b"SQLite format 3\x00"
Signature = tuple[tuple[str, int, int], ...]


class WatchError(ValueError):
    """The watch cannot start (missing folder, bad setting); the message names the fix."""


def sqlite_complete(path: Path) -> bool:
    """False when ``path`` is a SQLite file shorter than its header's page size × page count.

    Files that are not SQLite (or whose header's size field is not valid, as in files
    from SQLite before 3.7.0) count as complete; an empty or sub-header file does not.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
        size = Path(path).stat().st_size
    except OSError:
        return False
    if len(header) < 100:
        return False
    if not header.startswith(_SQLITE_MAGIC):
        return True
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96] and pages > 0  # "version-valid-for" = change counter
    return not valid or size >= page_size * pages


def _signature(path: Path) -> Signature | None:
    """(name, size, mtime_ns) of the file and its sidecars; None when the file is gone."""
    parts = []
    for suffix in ("", *_SIDECARS):
        try:
            st = Path(f"{path}{suffix}").stat()
        except FileNotFoundError:
            if not suffix:
                return None
            continue
        except OSError:
            return None
        parts.append((suffix, st.st_size, st.st_mtime_ns))
    return tuple(parts)


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass
class _Tracked:
    signature: Signature | None = None  # last observed
    since: float = 0.0  # monotonic time that signature was first observed
    checked: Signature | None = None  # signature whose content was last hashed
    seen: str | None = None  # the content at ``checked``
    digest: str | None = None  # content last run (or the baseline's)


class _Folder:
    """The tracked dumps of one folder: which changed, which settled, which to run."""

    def __init__(self, folder: Path, patterns: tuple[str, ...], debounce_s: float) -> None:
        self.folder, self.patterns, self.debounce_s = folder, patterns, debounce_s
        self.tracked: dict[Path, _Tracked] = {}
        self.pending: list[Path] = []
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()

    def matches(self, name: str) -> bool:
        if name.startswith("."):
            return False
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.patterns)

    def poke(self, raw: str | bytes) -> None:
        """An event named ``raw`` (a dump or its sidecar): look at that dump soon."""
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        name = path.name
        for suffix in _SIDECARS:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if path.parent == self.folder and self.matches(name):
            with self._lock:
                self._dirty.add(self.folder / name)

    def rescan(self) -> None:
        try:
            names = [p.name for p in self.folder.iterdir() if p.is_file()]
        except OSError as err:
            log.warning("watch: cannot list %s (%s)", self.folder, err)
            return
        with self._lock:
            self._dirty.update(self.folder / n for n in names if self.matches(n))
            self._dirty.update(self.tracked)  # notice deletions too

    def baseline(self, run_existing: bool) -> None:
        self.rescan()
        with self._lock:
            found, self._dirty = sorted(self._dirty), set()
        now = time.monotonic()
        for path in found:
            sig = _signature(path)
            if run_existing or sig is None:
                with self._lock:
                    self._dirty.add(path)
                continue
            digest = _sha256(path)
            self.tracked[path] = _Tracked(sig, now, sig, digest, digest)
        log.info(
            "watch: %d existing dump(s) in %s taken as the baseline", len(self.tracked), self.folder
        )

    def update(self, now: float) -> None:
        """Re-stat the changed dumps; queue those that settled with new content."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for path in sorted(
            dirty | {p for p, t in self.tracked.items() if t.signature != t.checked}
        ):
            self._settle(path, now)

    def _settle(self, path: Path, now: float) -> None:
        sig = _signature(path)
        if sig is None:  # deleted: forget it, a file landing under this name is new
            self.tracked.pop(path, None)
            if path in self.pending:
                self.pending.remove(path)
            return
        item = self.tracked.setdefault(path, _Tracked())
        if sig != item.signature:
            item.signature, item.since = sig, now
            return
        if sig == item.checked or now - item.since < self.debounce_s:
            return
        if not sqlite_complete(path):
            log.debug("watch: %s is shorter than its SQLite header says; waiting", path)
            return
        item.checked, item.seen = sig, _sha256(path)
        if item.seen is not None and item.seen != item.digest and path not in self.pending:
            self.pending.append(path)

    def next_run(self) -> Path | None:
        """The oldest queued dump still unchanged since it settled (its content then recorded)."""
        while self.pending:
            path = self.pending.pop(0)
            item = self.tracked.get(path)
            if item is None or _signature(path) != item.checked:
                continue  # changed again: it settles anew before running
            item.digest = item.seen  # unchanged since hashed: no second read of the dump
            return path
        return None


def _run_one(run: Callable[[Path], object], path: Path) -> None:
    log.info("watch: %s landed; running", path)
    started = time.monotonic()
    try:
        run(path)
    except Exception:  # a failed run must not end the watch
        log.exception("watch: the run on %s failed; watching goes on", path)
        return
    log.info("watch: run on %s finished in %.1f s", path, time.monotonic() - started)


def _observer(polling: bool, timeout: float):
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    return PollingObserver(timeout=timeout) if polling else Observer(timeout=timeout)


def _handler(folder: _Folder):
    from watchdog.events import FileSystemEventHandler

    class _Events(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            folder.poke(event.src_path)
            if getattr(event, "dest_path", ""):
                folder.poke(event.dest_path)  # an atomic rename lands under this name

    return _Events()


def watch(
    folder: Path,
    run: Callable[[Path], object],
    *,
    debounce_s: float = 5.0,
    stop: threading.Event | None = None,
    patterns: tuple[str, ...] = ("*.db", "*.sqlite", "*.sqlite3"),
    polling: bool = False,
    run_existing: bool = False,
) -> None:
    """Call ``run(path)`` for every new or changed dump landing in ``folder``, until ``stop``.

    ``debounce_s``: seconds a file must stay unchanged to count as landed. ``patterns``:
    file-name globs (not recursive). ``polling``: poll instead of OS file events.
    ``run_existing``: also run the dumps present at start. See the module docstring for
    the exact semantics; raises :class:`WatchError` for a missing folder or bad settings.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WatchError(
            f"watch: {folder} is not a folder — create it or pass the folder dumps land in"
        )
    if not debounce_s > 0:
        raise WatchError(f"watch: debounce_s must be > 0 seconds, got {debounce_s}")
    patterns = tuple(patterns) if not isinstance(patterns, str) else (patterns,)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise WatchError(
            f"watch: patterns must be file-name globs such as '*.db', got {patterns!r}"
        )
    stop = stop if stop is not None else threading.Event()
    tick = max(0.01, min(debounce_s / 4.0, 0.5))
    rescan_every = min(max(debounce_s, tick), 1.0)
    tracked = _Folder(folder.resolve(), patterns, debounce_s)
    tracked.baseline(run_existing)
    observer = _observer(polling, tick)
    observer.schedule(_handler(tracked), str(tracked.folder), recursive=False)
    observer.start()
    log.info("watch: watching %s for %s (debounce %.1f s)", folder, ", ".join(patterns), debounce_s)
    try:
        _loop(tracked, run, stop, tick, rescan_every)
    finally:
        observer.stop()
        observer.join(timeout=5.0)
    log.info("watch: stopped watching %s", folder)


def _loop(
    tracked: _Folder,
    run: Callable[[Path], object],
    stop: threading.Event,
    tick: float,
    rescan: float,
) -> None:
    next_scan = time.monotonic() + rescan
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_scan:
            tracked.rescan()
            next_scan = now + rescan
        tracked.update(now)
        path = tracked.next_run()
        if path is not None:
            _run_one(run, path)
            continue  # look again at once: changes may have queued up during the run
        stop.wait(tick)
