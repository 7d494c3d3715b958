"""Which exceptions are the user's to fix (a message, exit 2) and which are bugs (exit 3).

A message is printed for:

* the library's own error types (``ConfigError``, ``StoreError``, pydantic's
  ``ValidationError``), and any ``ValueError`` or ``KeyError`` — ``CheckpointError``,
  ``DataValidationError``, ``FeatureError``, ... included — that the package raises on
  purpose, with a ``raise`` statement in its own code;
* operating-system errors (``OSError``: read-only folders, full disks, a path that is a
  folder, a missing file) and SQLite's (a locked, read-only, full or damaged database),
  each said with the path, what failed and the fix.

Anything else — a ``KeyError`` from a dict lookup, a ``ValueError`` that numpy or pandas
raised, a ``TypeError`` — is a bug: :func:`bug_report` shows the last frames of the
traceback and asks for a report. Exit codes: 2 for a message, 3 for a bug (1 stays
"a check failed", as in ``data validate`` and ``audit``).
"""

from __future__ import annotations

import dis
import errno
import os
import re
import sqlite3
import traceback
from pathlib import Path
from types import TracebackType

import market_nn_plus_ultra

__all__ = ["BUG_EXIT_CODE", "bug_report", "user_message"]

BUG_EXIT_CODE = 3
_PACKAGE = str(Path(market_nn_plus_ultra.__file__).parent) + os.sep
# Names the package's writers and readers give the file they work on: where the OS or
# SQLite does not name the file (a failed write() on an open handle, a locked database),
# the innermost package frame holding one of these names it.
_PATH_NAMES = ("target", "tmp", "path", "output", "out", "db", "db_path", "sqlite_path", "source")
# The crash-safe writer's temporary names: ``.<name>.<pid>-<8 hex>.tmp``, shown as ``<name>``.
_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp$")
_TRACEBACK_FRAMES = 6


def _innermost(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _raised_on_purpose(err: BaseException) -> bool:
    """True when a ``raise`` statement in the package's own code raised ``err``."""
    tb = _innermost(err.__traceback__)
    if tb is None or not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        return False
    code = tb.tb_frame.f_code
    op = next((i.opname for i in dis.get_instructions(code) if i.offset == tb.tb_lasti), "")
    return op == "RAISE_VARARGS"


def _shown(path: str | os.PathLike[str]) -> str:
    """The path a user knows: a writer's temporary name becomes its target's."""
    path = Path(path)
    match = _TEMP.match(path.name)
    return str(path.with_name(match["name"]) if match else path)


def _path_of(err: BaseException) -> str | None:
    """The file ``err`` is about: its own ``filename``, else the package's local variable."""
    filename = getattr(err, "filename", None)
    if filename:
        return _shown(filename)
    frames = list(traceback.walk_tb(err.__traceback__))
    for frame, _ in reversed(frames):
        if not frame.f_code.co_filename.startswith(_PACKAGE):
            continue
        for name in _PATH_NAMES:
            value = frame.f_locals.get(name)
            if isinstance(value, Path) or (isinstance(value, str) and os.sep in value):
                return _shown(value)
    return None


def _os_message(err: OSError) -> str:
    if err.errno is None:  # raised by the package with a message of its own
        return str(err.args[0] if err.args else err)
    path = _path_of(err) or "an output file"
    folder = str(Path(path).parent) if path != "an output file" else "the output folder"
    reason = err.strerror or str(err)
    if isinstance(err, IsADirectoryError):
        return f"{path} is a folder, not a file — give a file name (e.g. {path}/<name>) instead"
    if isinstance(err, NotADirectoryError):
        return f"{path}: part of this path is a file, not a folder — choose another path"
    if isinstance(err, FileNotFoundError):
        return f"{path}: no such file or folder — check the path (relative to {Path.cwd()})"
    if isinstance(err, FileExistsError):
        return f"{path} already exists — remove it or choose another name"
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (
            f"no space left on the disk holding {folder} ({reason}) while writing {path} — "
            f"free space (see `df -h {folder}`) or write to another disk, then re-run"
        )
    if err.errno == errno.EROFS:
        return f"{path}: the file system is read-only ({reason}) — write the output elsewhere"
    if isinstance(err, PermissionError):
        return (
            f"{path}: permission denied ({reason}) — make {folder} and the file writable "
            f"for this user (e.g. `chmod u+w {folder}`) or choose a path elsewhere"
        )
    return f"{path}: {reason} (errno {errno.errorcode.get(err.errno, err.errno)}) — check the path"


# (phrase in SQLite's message, what it means and the fix); ``{db}`` is the database path.
_SQLITE = (
    (
        "locked",
        "the database is locked — another process (a running plus-ultra command, a notebook "
        "or a SQLite browser) holds a lock on it; let it finish or close it, then re-run",
    ),
    (
        "database or disk is full",
        "no space left on the disk holding the database — free space (`df -h`) or move the "
        "database to another disk, then re-run",
    ),
    (
        "readonly database",
        "the database is read-only for this user — make the file and its folder writable "
        "(SQLite writes a journal beside it) or copy it somewhere writable",
    ),
    (
        "unable to open database file",
        "SQLite cannot open the file — check that it and its folder exist and are readable "
        "(and writable for commands that write), then re-run",
    ),
    (
        "disk i/o error",
        "a disk I/O error — the disk failed or filled up; check it (`df -h`, `dmesg`), then re-run",
    ),
    (
        "not a database",
        "the file is not a SQLite database — pass the database `plus-ultra data import` or "
        "`data fixture` wrote",
    ),
    (
        "malformed",
        "the database file is damaged — restore it from a copy or rebuild it with "
        "`plus-ultra data import`",
    ),
)


def _sqlite_message(err: sqlite3.Error) -> str | None:
    text = str(err).lower()
    for phrase, meaning in _SQLITE:
        if phrase in text:
            db = _path_of(err) or "the database"
            return f"{db}: {meaning} (SQLite: {err})"
    return None


def _store_message(err: BaseException) -> str:
    """A ``StoreError``; one that wraps a SQLite error but gives no fix (no " — ") gets one."""
    message = str(err)
    context = err.__context__
    if " — " not in message and isinstance(context, sqlite3.Error):
        meaning = next((m for p, m in _SQLITE if p in str(context).lower()), None)
        if meaning is not None:
            return f"{message}: {meaning}"
    return message


def user_message(err: BaseException) -> str | None:
    """The message for an error the user can fix, or None when ``err`` is a bug."""
    from pydantic import ValidationError

    from ..config import ConfigError
    from ..data.store import StoreError

    if isinstance(err, StoreError):
        return _store_message(err)
    if isinstance(err, ConfigError | ValidationError):
        return str(err)
    if isinstance(err, OSError):
        return _os_message(err)
    if isinstance(err, sqlite3.Error):
        return _sqlite_message(err)
    if isinstance(err, ValueError | KeyError) and _raised_on_purpose(err):
        return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return None


def bug_report(err: BaseException) -> str:
    """The last frames of ``err``'s traceback and a request to report it."""
    frames = traceback.format_exception(type(err), err, err.__traceback__, limit=-_TRACEBACK_FRAMES)
    return (
        "".join(frames).rstrip()
        + f"\n\nThis is a bug in plus-ultra, not a problem with your input ({type(err).__name__}"
        " is not an error the commands report). Please report it with the command you ran, "
        "the traceback above and `plus-ultra --version`."
    )
