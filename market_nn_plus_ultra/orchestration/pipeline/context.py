"""One retrain run folder in use: its options, configs, manifest and input hashes.

A stage is a pair of functions on a :class:`RetrainRun`: ``plan(run) -> StagePlan`` (the
content hashes of what it will read, or why it is skipped) and
``run(run, folder, plan) -> StageResult`` (what it wrote). :mod:`.run` decides from the
plan and the manifest whether the stage runs, is skipped or is unchanged.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..._io import atomic_write
from ...config import Config, config_to_dict
from .manifest import STAGES, Manifest, file_sha256, json_sha256
from .options import RetrainOptions

__all__ = ["CONFIG_FOLDER", "RetrainRun", "StagePlan", "StageResult", "checkpoint_file"]

CONFIG_FOLDER = "configs"
_CHECKPOINTS = ("best.ckpt", "last.ckpt", "policy.pt")


@dataclass(frozen=True)
class StagePlan:
    """What a stage will read (``inputs``: key → SHA-256), or why it does not run.

    ``resumable``: an interrupted run of this stage continues from the checkpoint it
    left in its folder instead of starting over.
    """

    inputs: dict[str, str]
    skip: str | None = None
    resumable: bool = False


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote (paths inside the run folder) and what it found.

    ``skipped``: the stage found nothing to do and says why (recorded as skipped).
    ``external_writes``: files outside the run folder it changed (path → SHA-256 after).
    """

    outputs: tuple[Path, ...] = ()
    note: str | None = None
    skipped: str | None = None
    external_writes: dict[str, str] = field(default_factory=dict)
    #: the inputs actually read, when the stage chose them while running (else the plan's)
    inputs: dict[str, str] | None = None


def checkpoint_file(path: Path) -> Path | None:
    """The checkpoint a run folder predicts with (best.ckpt, last.ckpt, policy.pt) or the
    file itself; None when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    for name in _CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    return None


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` atomically unless the file already holds exactly it (keeps its mtime)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return atomic_write(path, text)


def new_run_dir(root: Path) -> Path:
    """``root/<UTC timestamp>/``, created; ``-2``, ``-3`` … when two runs share a second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{root}: 999 runs started in second {stamp} — wait a second")


class RetrainRun:
    """A run folder with its options, resolved configs and manifest."""

    def __init__(self, options: RetrainOptions, run_dir: Path, manifest: Manifest) -> None:
        self.options = options
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.config: Config = options.train_cfg()
        self._pretrain_config: Config | None = None
        #: stages forced to rerun now (``--from-stage``): they resolve their sources afresh
        self.forced: set[str] = set()

    @classmethod
    def create(cls, options: RetrainOptions) -> RetrainRun:
        """A new run folder under ``options.output_dir``, with run.json and the manifest."""
        run_dir = new_run_dir(Path(options.output_dir))
        run = cls(options, run_dir, Manifest.new(run_dir))
        run.record()
        return run

    @classmethod
    def resume(cls, run_dir: Path, **changes: object) -> RetrainRun:
        """The run in ``run_dir`` with its recorded options (``changes`` replace some)."""
        run_dir = Path(run_dir)
        manifest = Manifest.load(run_dir)
        options = RetrainOptions.load(run_dir, **changes)
        run = cls(options, run_dir, manifest)
        run.record()
        return run

    def record(self) -> None:
        """Save run.json, the resolved configs (only when changed) and the manifest."""
        self.options.save(self.run_dir)
        configs = self.run_dir / CONFIG_FOLDER
        _write_if_changed(configs / "train.yaml", _yaml(self.config))
        if not self.options.skip_pretraining:
            _write_if_changed(configs / "pretrain.yaml", _yaml(self.pretrain_config))
        self.manifest.save()

    @property
    def pretrain_config(self) -> Config:
        if self._pretrain_config is None:
            self._pretrain_config = self.options.pretrain_cfg()
        return self._pretrain_config

    @property
    def database(self) -> Path:
        return Path(self.options.dataset)

    # ----------------------------------------------------------------------------------
    # Folders and stage state
    # ----------------------------------------------------------------------------------

    def folder(self, name: str) -> Path:
        return self.run_dir / name

    def clear(self, name: str) -> Path:
        """The stage's folder, emptied: a stage that reruns starts from nothing."""
        folder = self.folder(name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def done(self, name: str) -> bool:
        return self.manifest.stages[name].status == "done"

    def settled(self, name: str) -> bool:
        """True when stage ``name`` finished and is not forced to rerun: what it chose
        then (its warm start, the champion it was compared with) stands."""
        return self.done(name) and name not in self.forced

    def candidate(self) -> Path | None:
        """The model this run evaluates: the RL policy when fine-tuned, else the trained run."""
        for name in ("rl_finetune", "train"):
            if self.done(name) and checkpoint_file(self.folder(name)) is not None:
                return self.folder(name)
        return None

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder when inside it, else absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.run_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    # ----------------------------------------------------------------------------------
    # Input hashes
    # ----------------------------------------------------------------------------------

    def files(self, *paths: Path | None) -> dict[str, str]:
        """``{key: sha256}`` of existing files (key: relative to the run folder if inside)."""
        return {self.relative(p): file_sha256(p) for p in paths if p is not None and p.is_file()}

    def database_input(self, stage: str) -> dict[str, str]:
        """The database's hash as ``stage`` sees it.

        With ``--regenerate-regimes`` the regimes stage writes labels into the database;
        stages up to it then compare against the hash from before that write (the change
        is the run's own), the later ones against the database as it is.
        """
        key = self.relative(self.database)
        current = file_sha256(self.database)
        regimes = self.manifest.stages["regimes"]
        if (
            STAGES.index(stage) <= STAGES.index("regimes")
            and regimes.status == "done"
            and regimes.external_writes.get(key) == current
            and key in regimes.inputs
        ):
            return {key: regimes.inputs[key]}
        return {key: current}

    def sections(self, which: str, *names: str) -> dict[str, str]:
        """Hashes of config sections: ``configs/<which>.yaml#<section>`` → SHA-256."""
        cfg = self.config if which == "train" else self.pretrain_config
        tree = config_to_dict(cfg)
        return {f"{CONFIG_FOLDER}/{which}.yaml#{name}": json_sha256(tree[name]) for name in names}

    def sections_except(self, which: str, *excluded: str) -> dict[str, str]:
        """Hashes of every section of a config but ``excluded`` (those the stage never
        reads: changing the promotion rules does not retrain)."""
        cfg = self.config if which == "train" else self.pretrain_config
        names = [name for name in config_to_dict(cfg) if name not in excluded]
        return self.sections(which, *names)


def _yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
