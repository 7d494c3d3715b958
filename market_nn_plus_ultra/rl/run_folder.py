"""The RL run folder of ``plus-ultra rl-finetune``: its files, the checks before a run, I/O.

    config.yaml        the resolved config
    model_info.json    the supervised run's, plus kind "rl_policy" and the sources
    policy.pt          POLICY_FORMAT: the policy and what predicting needs (weights only)
    state.pt           everything resume needs (learner, env, curriculum, history)
    rollouts.parquet   one row per update
    tensorboard/       event files

:func:`read_source` reads the supervised run a fine-tune starts from; the ``check_*``
functions refuse, with the fix, a folder holding another run, features that differ from
the checkpoint's and a resume under another config.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path
from ..config import Config, ModelConfig, config_to_dict, load_config
from .market import EnvMarket
from .policy import read_supervised

__all__ = [
    "POLICY_FILE",
    "POLICY_FORMAT",
    "ROLLOUTS_FILE",
    "STATE_FILE",
    "STATE_FORMAT",
    "FinetuneError",
    "Source",
    "check_features",
    "check_folder",
    "check_same_run",
    "normaliser_state",
    "read_source",
    "resolve_device",
    "save",
    "tensorboard_writer",
]

log = logging.getLogger(__name__)

POLICY_FILE, STATE_FILE, ROLLOUTS_FILE = "policy.pt", "state.pt", "rollouts.parquet"
POLICY_FORMAT, STATE_FORMAT = "plus_ultra_policy", "plus_ultra_rl_state"
# a folder holding any of these is a run (an RL one or a supervised one)
_RUN_FILES = ("config.yaml", "model_info.json", POLICY_FILE, STATE_FILE, ROLLOUTS_FILE,
              "best.ckpt", "last.ckpt")  # fmt: skip
_RESUMABLE = {"reinforcement.updates"}  # a resumed run may be extended


class FinetuneError(ValueError):
    """A fine-tuning run cannot start: its inputs, config or output folder do not fit."""


@dataclass(frozen=True)
class Source:
    """The supervised run a fine-tune starts from."""

    model: ModelConfig
    n_features: int
    weights: dict[str, torch.Tensor]
    file: Path
    info: dict[str, Any]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, refusing a CUDA one when no GPU is visible."""
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise FinetuneError(f"--device {device!r}: {err} — use cpu or cuda:0") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FinetuneError(f"--device {device}: no CUDA GPU is visible — use --device cpu")
    return resolved


def check_folder(out: Path, resume: bool) -> None:
    """A new run needs a folder holding no run; a resumed one, the run's ``state.pt``."""
    if resume:
        if not (out / STATE_FILE).is_file():
            raise FinetuneError(
                f"--resume: {out} holds no {STATE_FILE} (nothing to continue) — run without "
                "--resume to start a new run there, or pass the --output-dir of the run"
            )
        return
    present = [name for name in _RUN_FILES if (out / name).exists()]
    if present:
        raise FinetuneError(
            f"--output-dir {out} already holds a run ({', '.join(present)}) — pass --resume "
            "to continue it, or choose another --output-dir"
        )


def read_source(checkpoint: str | Path) -> Source:
    """The ``plus-ultra train`` run at ``checkpoint`` (its folder or a ``.ckpt`` in it)."""
    model, n_features, weights, file = read_supervised(checkpoint)
    for folder in (file.parent, file.parent.parent):  # steps/step-*.ckpt sit one below
        if (folder / "model_info.json").is_file():
            info = json.loads((folder / "model_info.json").read_text())
            break
    else:
        raise FinetuneError(
            f"--checkpoint {file}: no model_info.json beside it — pass the whole run folder "
            "of `plus-ultra train` (its feature columns and splits come from that file)"
        )
    if "feature_columns" not in info or "splits" not in info:
        raise FinetuneError(
            f"--checkpoint {file}: its model_info.json has no feature_columns/splits — it was "
            "not written by `plus-ultra train`; retrain to get a complete run folder"
        )
    return Source(model, n_features, dict(weights), file, info)


def check_features(names: list[str], source: Source, cfg: Config) -> None:
    """The env's feature columns ``names`` must be the checkpoint's, normalised alike."""
    wanted = list(source.info["feature_columns"])
    if names != wanted:
        missing = [c for c in wanted if c not in names]
        extra = [c for c in names if c not in wanted]
        parts = [f"missing in the config: {missing}"] if missing else []
        parts += [f"not in the checkpoint: {extra}"] if extra else []
        what = "; ".join(parts) or f"the same columns in another order: {names}"
        raise FinetuneError(
            f"the config's features differ from the checkpoint's ({source.file}): {what} — "
            "fine-tune with the supervised run's features and data sections (e.g. --config "
            f"{source.file.parent / 'config.yaml'})"
        )
    trained = source.info.get("normalise")
    if trained is not None and trained != cfg.windows.normalise:
        raise FinetuneError(
            f"windows.normalise={cfg.windows.normalise} but the checkpoint was trained with "
            f"{trained} — set windows.normalise={trained}"
        )


def check_same_run(cfg: Config, out: Path) -> None:
    """Refuse to resume a run under another config (only ``updates`` may grow)."""
    saved = config_to_dict(load_config(out / "config.yaml"))
    diff = [k for k in _differences(saved, config_to_dict(cfg)) if k not in _RESUMABLE]
    if diff:
        raise FinetuneError(
            f"--resume: the config differs from the run's ({out / 'config.yaml'}) in "
            f"{', '.join(diff[:8])}{' …' if len(diff) > 8 else ''} — resume with --config "
            f"{out / 'config.yaml'} (only --updates may change)"
        )


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def normaliser_state(market: EnvMarket) -> dict[str, Any] | None:
    """The env's ``train_zscore`` statistics in the checkpoint layout inference reads."""
    norm = market.normaliser
    if norm is None:
        return None

    def tensor(value: Any) -> torch.Tensor | None:
        return None if value is None else torch.as_tensor(value, dtype=torch.float32).clone()

    return {
        "symbols": list(market.tensors.symbols),
        "rows": [norm.rows.start, norm.rows.stop],
        "mean": tensor(norm.mean),
        "std": tensor(norm.std),
        "context_mean": tensor(norm.context_mean),
        "context_std": tensor(norm.context_std),
    }


def tensorboard_writer(enabled: bool, folder: Path, purge_step: int) -> Any | None:
    """A ``SummaryWriter`` into ``folder`` (torch's, else tensorboardX's), or None with a log
    line when neither is installed; events from ``purge_step`` on replace older ones."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info(
                "rl-finetune: no TensorBoard events (neither tensorboard nor tensorboardX is "
                "installed; pip install tensorboardX) — rollouts.parquet has every value"
            )
            return None
    # a resumed run writes a new file; the suffix keeps two in the same second apart
    return SummaryWriter(str(folder), purge_step=purge_step, filename_suffix=f".{purge_step}")


def save(payload: Mapping[str, Any], path: Path) -> Path:
    """``torch.save`` a plain dict atomically (tensors, numbers, strings: weights-only)."""
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)
    return path
