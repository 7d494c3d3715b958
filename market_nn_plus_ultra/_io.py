"""Crash-safe file writes: the one place the product writes a file.

Every file the product writes (databases, Parquet, JSON/YAML, checkpoints, reports,
caches) goes through :func:`atomic_path` (a temporary path to hand to a writer such as
``DataFrame.to_parquet`` or ``torch.save``), :func:`atomic_write` (bytes or text) or
:func:`atomic_dir` (a whole folder). Each follows the same steps:

1. write to a temporary name in the *target's own folder* (a rename across file systems
   would copy), unique per process and call: ``.<name>.<pid>-<8 hex>.tmp``;
2. ``fsync`` the temporary file, so its bytes are on disk before it gets the final name;
3. ``os.replace`` it over the target (atomic on POSIX and Windows): a reader sees the old
   file or the new one, never half of one;
4. ``fsync`` the folder, so the rename itself survives a power cut.

If the writer raises (a full disk, a bug, Ctrl-C), the temporary file is removed and the
target is untouched. A process killed outright (kill -9, OOM killer) cannot clean up, so
each write first removes the temporary files that dead processes left in that folder: a
temporary whose embedded pid is no longer running. Temporaries of live processes are kept.

JSON files go through :func:`write_json`, which first makes a payload JSON-ready with
:func:`json_ready` (NaN/inf → null, numpy/pandas values → plain Python): the one rule for
every JSON file the product writes.

This module sits below every layer (it imports only the standard library).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "exclusive",
    "is_temp_name",
    "json_ready",
    "remove_stale_temps",
    "temp_path",
    "write_json",
]

# ``.<target name>.<pid>-<8 hex>.tmp``: the pid says whose it is, the suffix keeps two
# writes of the same target in one process (threads) apart.
# A SQLite database written under a temporary name has its sidecars beside it.
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp(-journal|-wal|-shm)?$")


def is_temp_name(name: str) -> bool:
    """True for the name of one of this writer's temporary files (or its SQLite sidecars)."""
    return _TEMP.match(name) is not None


def temp_path(target: str | Path) -> Path:
    """A fresh temporary path beside ``target``, unique to this process and call."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    except OSError:
        return True  # unknown: keep the file rather than delete a live writer's work
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporaries in ``folder`` left by processes that no longer run; returns them.

    Only names written by :func:`temp_path` are considered; a temporary of a running
    process (this one included) is kept.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # a missing or unreadable folder has nothing to clean
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another process cleaned it first
        except OSError:
            continue  # not ours to remove (permissions): leave it
        removed.append(path)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file itself is synced
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path for a writer; on success it replaces ``target`` atomically.

    ``with atomic_path(out) as tmp: frame.to_parquet(tmp)``. The folder is created when
    missing. The writer may create the temporary as a file (the usual case) or leave it
    absent (nothing is published then, and ``FileNotFoundError`` is raised). On an
    exception the temporary is removed and ``target`` keeps its old content.
    """
    target = Path(target)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    tmp = temp_path(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writing {target}: the writer produced no file at {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _discard(tmp)
        raise
    _fsync_dir(folder)


def atomic_write(target: str | Path, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text in ``encoding``) to ``target`` atomically; returns it."""
    target = Path(target)
    payload = data.encode(encoding) if isinstance(data, str) else data
    # "x": the temporary name is fresh, so never write through someone else's file.
    with atomic_path(target) as tmp, open(tmp, "xb") as handle:
        handle.write(payload)
    return target


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes ``target`` in one rename.

    Every file inside is fsynced before the rename. ``replace=True`` swaps out an existing
    ``target`` (the old folder is moved aside first and deleted only after the swap);
    ``replace=False`` publishes only when ``target`` is absent and raises
    ``FileExistsError`` otherwise (the caller decides whether the existing one will do).
    """
    target = Path(target)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    staged = temp_path(target)
    staged.mkdir()
    old: Path | None = None
    try:
        yield staged
        for root, _, files in os.walk(staged):
            for name in files:
                _fsync_file(Path(root) / name)
            _fsync_dir(Path(root))
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} already exists")
            old = temp_path(target)  # a temp name: a crash right here leaves nothing stale
            os.replace(target, old)
        try:
            os.replace(staged, target)
        except OSError as err:
            if replace or err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise FileExistsError(f"{target} appeared while it was being written") from err
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous folder back
            old = None
        _discard(staged)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(folder)


@contextlib.contextmanager
def exclusive(target: str | Path) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``target`` for a read-modify-write.

    The lock is ``fcntl.flock`` on a sidecar ``.<name>.lock`` beside ``target`` (kept, empty):
    two processes appending to one file take turns instead of the last writer dropping
    the other's rows. The OS releases the lock when the holder dies, so a kill -9 never
    leaves it stuck. Where ``fcntl`` is missing (Windows) it is a no-op. Yields ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield target
        return
    lock = target.with_name(f".{target.name}.lock")
    with open(lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield target
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON types, recursively; the one NaN→null rule of the product.

    - ``float`` NaN/±inf (and numpy's) → ``None``: JSON has no NaN, and an undefined metric
      (the Sharpe of a flat run) is "no value", not a number;
    - numpy scalars → the Python ``int``/``float``/``bool`` they hold; numpy arrays → lists;
    - ``datetime``/``date`` (``pandas.Timestamp`` included) → ISO-8601 text; ``NaT`` → ``None``;
    - ``Path`` → its text; dict keys → ``str``; tuples, lists and sets → lists;
    - dataclass instances → their fields (``dataclasses.asdict``), then the rules above.

    Anything else is returned as it is (``json.dumps`` then names what it cannot encode).
    Standard library only: numpy and pandas are recognised by duck typing, so this module
    stays below every layer.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum or bool-like subclass → the plain number
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [json_ready(item) for item in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value))
    if isinstance(value, datetime.date | datetime.time):
        # pandas.NaT is a datetime subclass that is unequal to itself: a missing time
        return None if value != value else value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        # numpy scalar (.tolist() → Python scalar) or array (→ nested lists)
        return json_ready(value.tolist())
    if value.__class__.__name__ == "NaTType":
        return None
    return value


def write_json(target: str | Path, payload: Any, *, indent: int | None = 2) -> Path:
    """Write ``payload`` as strict JSON (after :func:`json_ready`) through :func:`atomic_write`.

    ``allow_nan=False``: a non-finite number that :func:`json_ready` could not reach (inside
    an object it does not know) raises ``ValueError`` instead of writing ``NaN``, which
    strict JSON readers reject. The file ends with a newline. Returns ``target``.
    """
    text = json.dumps(json_ready(payload), indent=indent, allow_nan=False)
    return atomic_write(target, text + "\n")
