"""What a retrain run was asked to do: :class:`RetrainOptions`, saved as ``run.json``.

The options are recorded in the run folder when it is created, so ``--resume RUN`` needs
no other flag: the recorded options are reused, and any option given again replaces
the recorded one (a changed input then reruns the stages that read it).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..._io import write_json
from ...config import Config, load_config
from .manifest import STAGES

__all__ = ["RUN_FILE", "WARM_STARTS", "RetrainOptions", "check_stage_name"]

RUN_FILE = "run.json"
#: ``auto``: the champion's training checkpoint when compatible, else this run's pretrained
#: backbone, else from scratch; ``training``: the champion's (an error when there is none
#: or it does not fit); ``pretrain``: this run's pretrained backbone; ``scratch``: none.
WARM_STARTS = ("auto", "training", "pretrain", "scratch")


def check_stage_name(name: str) -> str:
    """``name`` when it is a stage; otherwise an error listing them with a "did you mean"."""
    if name in STAGES:
        return name
    guess = difflib.get_close_matches(name.replace("-", "_"), STAGES, n=1)
    hint = f" — did you mean {guess[0]!r}?" if guess else ""
    raise ValueError(f"--from-stage {name!r} is not a stage{hint} Stages: {', '.join(STAGES)}.")


@dataclass(frozen=True)
class RetrainOptions:
    """The ``plus-ultra retrain`` options (see ``docs/retrain.md`` for each).

    ``dataset`` replaces ``data.sqlite_path`` of both configs; ``overrides`` are ``--set``
    items applied to both configs before it.
    """

    dataset: Path
    train_config: Path | None
    pretrain_config: Path | None = None
    overrides: tuple[str, ...] = ()
    run_reinforcement: bool = False
    warm_start: str = "auto"
    regenerate_regimes: bool = False
    skip_pretraining: bool = False
    skip_training: bool = False
    output_dir: Path = Path("automation_runs")
    push: str | None = None

    def __post_init__(self) -> None:
        # Absolute paths, as run.json records them: a resumed run resolves the same configs
        # (and the same input hashes) as the run that wrote them, from any directory.
        for key in ("dataset", "train_config", "pretrain_config", "output_dir"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, Path(value).resolve())
        if self.warm_start not in WARM_STARTS:
            raise ValueError(
                f"--warm-start {self.warm_start!r}: choose one of {', '.join(WARM_STARTS)}"
            )
        if not Path(self.dataset).is_file():
            raise FileNotFoundError(
                f"--dataset {self.dataset}: no such file — pass the SQLite database to "
                "retrain on (`plus-ultra data fixture` or `data import` writes one)"
            )
        for option, path in (
            ("--train-config", self.train_config),
            ("--pretrain-config", self.pretrain_config),
        ):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{option} {path}: no such file — pass a YAML config")

    # ----------------------------------------------------------------------------------
    # Configs
    # ----------------------------------------------------------------------------------

    def _load(self, path: Path | None) -> Config:
        return load_config(path, [*self.overrides, f"data.sqlite_path={self.dataset}"])

    def train_cfg(self) -> Config:
        """The training config: ``--train-config`` + ``--set`` + ``--dataset``."""
        return self._load(self.train_config)

    def pretrain_cfg(self) -> Config:
        """The pretraining config: ``--pretrain-config`` (else the training config)."""
        return self._load(self.pretrain_config or self.train_config)

    # ----------------------------------------------------------------------------------
    # run.json
    # ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        for key in ("dataset", "train_config", "pretrain_config", "output_dir"):
            raw[key] = None if raw[key] is None else str(Path(raw[key]).resolve())
        raw["overrides"] = list(self.overrides)
        return raw

    def save(self, run_dir: Path) -> Path:
        return write_json(Path(run_dir) / RUN_FILE, self.to_dict())

    @classmethod
    def load(cls, run_dir: Path, **given: Any) -> RetrainOptions:
        """The options recorded in ``run_dir/run.json``; ``given`` values that are not None
        replace them."""
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"--resume {run_dir}: no {RUN_FILE} in this folder — pass a run folder that "
                "`plus-ultra retrain` wrote"
            )
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(f"RetrainOptions has no option(s) {unknown}")
        values = {k: v for k, v in raw.items() if k in names}
        values.update({k: v for k, v in given.items() if v is not None})
        for key in ("dataset", "train_config", "pretrain_config", "output_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        values["overrides"] = tuple(values.get("overrides") or ())
        return cls(**values)

    def with_dataset(self, dataset: Path) -> RetrainOptions:
        """The same options on another database (``--watch`` runs one per new dump)."""
        return replace(self, dataset=Path(dataset))
