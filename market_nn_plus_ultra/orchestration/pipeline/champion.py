"""The current champion, as the pipeline reads it: ``champion.json`` under ``--output-dir``.

The promotion rules, ``champion.json`` and its history belong to
:mod:`market_nn_plus_ultra.orchestration.promotion`; this module only finds the champion's
checkpoints for the stages that warm-start from it or compare against it.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .context import checkpoint_file

if TYPE_CHECKING:
    from ..promotion import Champion

__all__ = [
    "champion_checkpoint",
    "champion_training_checkpoint",
    "current_champion",
    "promotion_api",
]

_TRAINING_CHECKPOINTS = ("best.ckpt", "last.ckpt")


def promotion_api() -> ModuleType:
    """:mod:`..promotion` (``decide``, ``promote``, ``read_champion``, ``rollback``)."""
    from .. import promotion

    return promotion


def current_champion(root: Path) -> Champion | None:
    """The champion promoted under ``root`` (the ``--output-dir``), or None."""
    return promotion_api().read_champion(Path(root))


def _training_file(folder: Path) -> Path | None:
    for name in _TRAINING_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    return None


def champion_training_checkpoint(champion: Any | None) -> Path | None:
    """The supervised checkpoint behind ``champion``: its retrain run's ``train/`` folder,
    else its checkpoint when that is a training run (an RL policy has none of its own)."""
    if champion is None:
        return None
    for folder in (Path(champion.run_dir) / "train", Path(champion.checkpoint)):
        if folder.is_file() and folder.suffix == ".ckpt":
            return folder
        found = _training_file(folder) if folder.is_dir() else None
        if found is not None:
            return found
    return None


def champion_checkpoint(champion: Any | None) -> Path | None:
    """The file the champion predicts with (its checkpoint folder's best/last/policy)."""
    if champion is None:
        return None
    return checkpoint_file(Path(champion.checkpoint))
