"""Copy a run folder to object storage (or another folder) through an fsspec URL.

``push(run_dir, url)`` copies every file under ``run_dir`` to ``<url>/<run_dir.name>/``
so that a reader never sees half a push:

- a **local** URL (a plain path or ``file://``) is written with the crash-safe folder
  writer: the copy is staged beside the target, fsynced, and renamed into place in one
  step (a previous push of the same run is swapped out only then);
- any **other** URL (``memory://``, ``s3://`` through s3fs, ``gcs://``, …) is uploaded to a
  temporary prefix ``<url>/.<name>.<pid>-<hex>.tmp/``, checked (every object's size), then
  copied object by object (server-side on S3) to ``<url>/<name>/`` and the temporary prefix
  removed; a previous push's marker is deleted before its objects are replaced.

Either way the completion marker ``_SUCCESS`` is written last: a JSON manifest with every
file's relative path, size and SHA-256 and anything skipped. **A pushed run is complete
when ``_SUCCESS`` exists.** Skipped, and listed in the manifest (never silently): the
temporary files of unfinished atomic writes, lock sidecars, folder symlinks and broken
links.

Storage options: the ``storage_options`` argument (from ``orchestration.push_storage_options``,
which refuses credentials), then fsspec's own environment configuration
(``FSSPEC_S3_ENDPOINT_URL=...``, ``FSSPEC_S3='{"client_kwargs": {...}}'``). Credentials
come from the storage library's environment: for S3, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``) or ``AWS_PROFILE``, and
``AWS_ENDPOINT_URL`` for an S3-compatible server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._io import atomic_dir, is_temp_name, json_ready, write_json

__all__ = ["PUSH_MARKER", "PushError", "push"]

log = logging.getLogger(__name__)

#: The completion marker (a JSON manifest), written last in every pushed run folder.
PUSH_MARKER = "_SUCCESS"
_LOCK = re.compile(r"^\..+\.lock$")
_HINT_SCHEMES = "a local folder, memory://PATH, s3://BUCKET/PREFIX (needs s3fs)"
# Object stores have no folders; their makedirs would create a missing *bucket*, which a
# push must never do behind the user's back.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


class PushError(RuntimeError):
    """A push failed; the message names the URL (or folder) and the fix."""


def _skip_reason(name: str) -> str | None:
    if is_temp_name(name):
        return "temporary file of an unfinished write"
    if _LOCK.match(name):
        return "lock sidecar of the crash-safe writer"
    return None


def _inventory(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Relative POSIX paths of the files to push (sorted), and what is skipped and why."""
    files: list[str] = []
    skipped: list[dict[str, str]] = []
    for folder, dirs, names in os.walk(run_dir):
        here = Path(folder)
        for name in list(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                rel = (here / name).relative_to(run_dir).as_posix()
                skipped.append({"path": rel, "reason": "symbolic link to a folder (not followed)"})
        for name in names:
            path = here / name
            rel = path.relative_to(run_dir).as_posix()
            reason = _skip_reason(name)
            if reason is None and not path.is_file():
                reason = "broken symbolic link" if path.is_symlink() else "not a regular file"
            if reason is None:
                files.append(rel)
            else:
                skipped.append({"path": rel, "reason": reason})
    for item in skipped:
        log.warning("push: skipping %s/%s (%s)", run_dir, item["path"], item["reason"])
    return sorted(files), sorted(skipped, key=lambda item: item["path"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(run_dir: Path, files: list[str], skipped: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "run": run_dir.name,
        "source": str(run_dir.resolve()),
        "pushed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "files": [
            {"path": rel, "bytes": (run_dir / rel).stat().st_size, "sha256": _sha256(run_dir / rel)}
            for rel in files
        ],
        "skipped": skipped,
    }


def _filesystem(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    import fsspec

    scheme = url.split("://", 1)[0] if "://" in url else "file"
    try:
        return fsspec.core.url_to_fs(url, **dict(options))
    except ImportError as err:
        raise PushError(
            f"push URL {url!r}: the {scheme}:// scheme needs a package that is not installed "
            f"({err}) — install it (pip install s3fs for s3://, gcsfs for gs://, adlfs for az://)"
        ) from None
    except ValueError as err:
        if "protocol" in str(err).lower():
            known = ", ".join(sorted(fsspec.available_protocols())[:40])
            raise PushError(
                f"push URL {url!r}: unknown storage scheme {scheme!r} — use {_HINT_SCHEMES}, "
                f"or another fsspec protocol ({known}, …)"
            ) from None
        raise PushError(f"push URL {url!r}: {err}") from None
    except TypeError as err:
        raise PushError(
            f"push URL {url!r}: the storage options {sorted(options)} do not fit the "
            f"{scheme}:// file system ({err}) — fix orchestration.push_storage_options"
        ) from None


def _explain(url: str, err: BaseException) -> str:
    """A failed storage call in words, with the likely fix."""
    kind = type(err).__name__
    text = f"push to {url!r} failed ({kind}: {err})"
    lowered = f"{kind} {err}".lower()
    if "credential" in lowered or "signature" in lowered or "accessdenied" in lowered:
        return (
            f"{text} — check the credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) in the environment, and AWS_ENDPOINT_URL for an S3-compatible "
            "server"
        )
    if isinstance(err, PermissionError):
        return f"{text} — the credentials may not write there: grant write access or push elsewhere"
    if isinstance(err, FileNotFoundError) or "nosuchbucket" in lowered:
        return f"{text} — the bucket or folder does not exist: create it first"
    if isinstance(err, ConnectionError | TimeoutError) or "connect" in lowered:
        return f"{text} — the storage endpoint is unreachable: check the URL and endpoint_url"
    return text


def _push_local(run_dir: Path, root: Path, files: list[str], manifest: dict[str, Any]) -> list[str]:
    target = root / run_dir.name
    if target.resolve() == run_dir.resolve() or run_dir.resolve() in target.resolve().parents:
        raise PushError(
            f"push: the destination {target} is inside the run folder {run_dir} — push to a "
            "folder outside it"
        )
    try:
        with atomic_dir(target, replace=True) as staged:
            for rel in files:
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / rel, staged / rel)
            write_json(staged / PUSH_MARKER, manifest)  # last
    except OSError as err:
        raise PushError(f"{_explain(str(root), err)}") from err
    return [str(target / rel) for rel in files] + [str(target / PUSH_MARKER)]


def _make_parents(fs: Any, prefix: str, files: list[str]) -> None:
    """Create the folders of ``prefix/files`` on file systems that have folders."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    if _OBJECT_STORES.intersection(protocols):
        return
    for folder in sorted({f"{prefix}/{rel}".rsplit("/", 1)[0] for rel in files}):
        fs.makedirs(folder, exist_ok=True)


def _copy_files(fs: Any, source: str, dest: str, files: list[str]) -> None:
    """Copy ``files`` from one prefix to another, object by object (server-side on S3)."""
    _make_parents(fs, dest, files)
    for rel in files:
        fs.cp_file(f"{source}/{rel}", f"{dest}/{rel}")


def _publish(fs: Any, staging: str, dest: str, files: list[str], marker: bytes) -> None:
    """Replace ``dest`` with the staged files; the old marker goes first, the new one last."""
    if fs.exists(f"{dest}/{PUSH_MARKER}"):
        fs.rm_file(f"{dest}/{PUSH_MARKER}")  # readers stop trusting the old copy first
    if fs.exists(dest):
        fs.rm(dest, recursive=True)
    _copy_files(fs, staging, dest, files)
    fs.pipe_file(f"{dest}/{PUSH_MARKER}", marker)
    fs.rm(staging, recursive=True)


def _push_remote(
    fs: Any, root: str, url: str, run_dir: Path, files: list[str], manifest: dict[str, Any]
) -> list[str]:
    base = root.rstrip("/")
    dest = f"{base}/{run_dir.name}"
    staging = f"{base}/.{run_dir.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    sizes = {item["path"]: item["bytes"] for item in manifest["files"]}
    try:
        _make_parents(fs, staging, files)
        for rel in files:
            fs.put_file(str(run_dir / rel), f"{staging}/{rel}")
        fs.invalidate_cache()
        for rel in files:
            got = fs.size(f"{staging}/{rel}")
            if got != sizes[rel]:
                raise OSError(f"{rel}: uploaded {got} bytes of {sizes[rel]}")
        marker = json.dumps(json_ready(manifest), indent=2, allow_nan=False).encode() + b"\n"
        _publish(fs, staging, dest, files, marker)
    except PushError:
        raise
    except Exception as err:
        try:
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
        except Exception:  # the original error matters more than the clean-up's
            log.warning("push: could not remove the temporary prefix %s", staging)
        raise PushError(_explain(url, err)) from err
    return [fs.unstrip_protocol(f"{dest}/{rel}") for rel in [*files, PUSH_MARKER]]


def push(run_dir: Path, url: str, *, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Copy every file of ``run_dir`` to ``<url>/<run_dir.name>/``, marker last.

    ``url``: a local folder, ``file://``, ``memory://`` or any fsspec URL (``s3://bucket/
    prefix`` with s3fs). ``storage_options``: keyword arguments of the file system.
    Returns the destination of every file (URLs for remote storage, paths for local),
    the ``_SUCCESS`` manifest last. Raises :class:`PushError` naming the URL and the fix.
    """
    run_dir = Path(run_dir)
    if not isinstance(url, str) or not url.strip():
        raise PushError(f"push: the URL is empty — pass a folder or a URL such as {_HINT_SCHEMES}")
    if not run_dir.is_dir():
        raise PushError(f"push: run folder {run_dir} does not exist — pass a finished run folder")
    files, skipped = _inventory(run_dir)
    if not files:
        raise PushError(f"push: run folder {run_dir} has no files to push")
    if PUSH_MARKER in files:
        raise PushError(
            f"push: {run_dir / PUSH_MARKER} exists, but {PUSH_MARKER} is the push's own "
            "completion marker — rename that file"
        )
    fs, root = _filesystem(url.strip(), storage_options or {})
    manifest = _manifest(run_dir, files, skipped)
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        pushed = _push_local(run_dir, Path(root), files, manifest)
    else:
        pushed = _push_remote(fs, root, url, run_dir, files, manifest)
    log.info("push: %d files of %s → %s", len(files), run_dir, url)
    return pushed
