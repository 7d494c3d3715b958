"""The run folder's ``manifest.json``: one record per stage, rewritten atomically.

::

    {"run": "20250301T120000Z",
     "stages": [{"name": "validate", "status": "done",
                 "inputs": {"/data/market.db": "9f2c…", "configs/train.yaml#data": "41ab…"},
                 "outputs": ["validate/report.json", "validate/failures.csv"],
                 "started": "2025-03-01T12:00:00+00:00", "finished": "…", "seconds": 0.41,
                 "note": "0 errors, 0 warnings in 14 tables (18,079 rows checked)"}, …],
     "versions": {"package": "0.1.0", "python": "3.12.3", "torch": "2.13.0", …}}

``status`` is one of :data:`STATUSES`. ``inputs`` maps every file a stage reads (the
database, artefacts of earlier stages, checkpoints) to its SHA-256; a config section
is keyed ``configs/<name>.yaml#<section>`` and hashed as canonical JSON, so changing the
training epochs does not invalidate validation. ``outputs`` are paths relative to the
run folder. ``reason`` says why a stage was skipped; ``note`` what it found;
``external_writes`` the files outside the run folder it changed (path → SHA-256 after).

Every status change rewrites the whole file through the crash-safe writer
(:func:`~market_nn_plus_ultra._io.write_json`): a reader, or a run killed at any point,
sees the previous manifest or the next one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ..._io import write_json

__all__ = [
    "MANIFEST_FILE",
    "STAGES",
    "STATUSES",
    "Manifest",
    "StageRecord",
    "file_sha256",
    "json_sha256",
    "utc_now",
    "versions",
]

MANIFEST_FILE = "manifest.json"
#: The stages in order; each writes into the run folder's sub-folder of the same name.
STAGES = (
    "validate",
    "regimes",
    "pretrain",
    "train",
    "rl_finetune",
    "evaluate",
    "report",
    "promote",
    "push",
)
STATUSES = ("pending", "running", "done", "failed", "skipped")
_CHUNK = 1 << 20
_LIBRARIES = ("torch", "numpy", "pandas", "pyarrow", "lightning", "pydantic", "scipy")


def utc_now() -> str:
    """The current time, ISO-8601 UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), cached per (path, size, mtime) in this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _HASHES.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def json_sha256(payload: Any) -> str:
    """SHA-256 of ``payload`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _git_commit() -> str | None:
    """The commit of the checkout the package runs from, when it is a git checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def versions() -> dict[str, Any]:
    """The package, Python and library versions (and git commit) a run was made with."""
    from ... import __version__

    found: dict[str, Any] = {"package": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["platform"] = platform.platform()
    found["git_commit"] = _git_commit()
    return found


@dataclass(frozen=True)
class StageRecord:
    """One stage's entry in the manifest (see the module doc for the fields)."""

    name: str
    status: str = "pending"
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    reason: str | None = None
    note: str | None = None
    #: files outside the run folder the stage changed (the database with
    #: ``--regenerate-regimes``): path → SHA-256 after the write
    external_writes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: Path) -> StageRecord:
        name = raw.get("name")
        if name not in STAGES or raw.get("status") not in STATUSES:
            raise ValueError(
                f"{where}: stage entry {raw!r} is not one this release writes (stages "
                f"{', '.join(STAGES)}; statuses {', '.join(STATUSES)}) — start a new run "
                "instead of --resume"
            )
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


@dataclass
class Manifest:
    """The manifest of one run folder; :meth:`update` changes a stage and saves."""

    run_dir: Path
    stages: dict[str, StageRecord]
    versions: dict[str, Any]
    created: str

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_FILE

    @classmethod
    def new(cls, run_dir: Path) -> Manifest:
        stages = {name: StageRecord(name) for name in STAGES}
        return cls(Path(run_dir), stages, versions(), utc_now())

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        """Read ``run_dir/manifest.json``; errors name the file and the fix."""
        path = Path(run_dir) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"--resume {run_dir}: no {MANIFEST_FILE} in this folder — pass a run folder "
                "that `plus-ultra retrain` wrote (automation_runs/<UTC timestamp>/)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}) — start a new run") from None
        records = {r.name: r for r in (StageRecord.from_dict(s, path) for s in raw["stages"])}
        stages = {name: records.get(name, StageRecord(name)) for name in STAGES}
        return cls(Path(run_dir), stages, dict(raw.get("versions") or {}), raw.get("created", ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_dir.name,
            "created": self.created,
            "stages": [self.stages[name].to_dict() for name in STAGES],
            "versions": self.versions,
        }

    def save(self) -> Path:
        return write_json(self.path, self.to_dict())

    def update(self, name: str, **changes: Any) -> StageRecord:
        """Replace fields of stage ``name`` and rewrite the manifest atomically."""
        self.stages[name] = replace(self.stages[name], **changes)
        self.save()
        return self.stages[name]

    def outputs_exist(self, name: str) -> bool:
        """True when every output the stage recorded is still in the run folder."""
        return all(os.path.exists(self.run_dir / rel) for rel in self.stages[name].outputs)
