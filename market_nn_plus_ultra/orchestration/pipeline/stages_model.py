"""The model stages: pretrain, train (warm-started), RL fine-tune.

Warm start of the **train** stage (``--warm-start``, recorded in ``train/warm_start.json``):

- ``auto`` (default): the current champion's training checkpoint when there is one and
  its backbone fits this config's model and features; else this run's pretrained
  backbone when the pretrain stage ran; else from scratch. A champion that does not
  fit is named in the note with why, and training starts without it.
- ``training``: the champion's training checkpoint — an error when there is no champion
  or it does not fit.
- ``pretrain``: this run's pretrained backbone; with ``--skip-pretraining``, the
  ``backbone.pt`` in ``pretraining.checkpoint_dir`` of ``--pretrain-config`` (an error
  when neither exists).
- ``scratch``: no warm start.

The champion's backbone is copied (the head starts fresh, as with a pretrained
backbone): its weights are written as ``train/warm_start/backbone.pt`` and loaded
through the same checks as ``plus-ultra train --pretrain-checkpoint``.

An interrupted train stage (killed while running) continues from its ``last.ckpt``; an
interrupted RL fine-tune from its ``state.pt``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..._io import write_json
from ...inference.agent import Agent
from ...rl.finetune import finetune
from ...training import WarmStartError, pretrain, save_backbone, train
from .champion import champion_training_checkpoint, current_champion
from .context import StagePlan, StageResult

if TYPE_CHECKING:
    from ...config import Config
    from .context import RetrainRun

__all__ = [
    "plan_pretrain",
    "plan_rl_finetune",
    "plan_train",
    "run_pretrain",
    "run_rl_finetune",
    "run_train",
    "warm_start_source",
]

log = logging.getLogger(__name__)

_TRAIN_OUTPUTS = (
    "best.ckpt",
    "last.ckpt",
    "config.yaml",
    "model_info.json",
    "metrics.json",
    "drift_reference.json",
    "test_predictions.parquet",
    "warm_start.json",
)
#: config sections supervised training and pretraining never read
_NOT_TRAINING = ("evaluation", "guardrails", "orchestration", "reinforcement")
_RL_OUTPUTS = ("policy.pt", "state.pt", "rollouts.parquet", "config.yaml", "model_info.json")


def _present(folder: Path, names: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(folder / n for n in names if (folder / n).is_file())


def device_of(cfg: Config) -> str:
    """The torch device of ``training.accelerator`` for work outside Lightning."""
    if str(cfg.training.accelerator) == "cpu":
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------
# pretrain
# --------------------------------------------------------------------------------------


def plan_pretrain(run: RetrainRun) -> StagePlan:
    if run.options.skip_pretraining:
        return StagePlan({}, skip="--skip-pretraining")
    inputs = run.sections_except("pretrain", *_NOT_TRAINING)
    return StagePlan({**run.database_input("pretrain"), **inputs})


def run_pretrain(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    cfg = run.pretrain_config.model_copy(deep=True)
    cfg.pretraining.checkpoint_dir = folder
    cfg.pretraining.progress_bar = False
    result = pretrain(cfg)
    outputs = (result.backbone_path, result.last_checkpoint, result.config_path)
    note = (
        f"{result.objective}: loss {result.loss_before:.4f} → {result.loss_after:.4f} "
        f"over {result.steps} steps"
    )
    return StageResult((*outputs, result.metrics_path), note=note)


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------


def _pretrained_backbone(run: RetrainRun) -> Path | None:
    if run.done("pretrain") and (run.folder("pretrain") / "backbone.pt").is_file():
        return run.folder("pretrain") / "backbone.pt"
    if run.options.skip_pretraining and run.options.pretrain_config is not None:
        earlier = Path(run.pretrain_config.pretraining.checkpoint_dir) / "backbone.pt"
        return earlier if earlier.is_file() else None
    return None


def warm_start_source(run: RetrainRun) -> tuple[str, Path | None, str]:
    """``(kind, file, why)``: ``champion`` / ``pretrain`` / ``scratch`` and the checkpoint."""
    mode = run.options.warm_start
    if mode == "scratch":
        return "scratch", None, "--warm-start scratch"
    if mode == "pretrain":
        backbone = _pretrained_backbone(run)
        if backbone is None:
            raise ValueError(
                "--warm-start pretrain: no pretrained backbone — the pretrain stage was "
                "skipped (--skip-pretraining) and --pretrain-config names no "
                "pretraining.checkpoint_dir holding a backbone.pt. Drop --skip-pretraining, "
                "or pass --pretrain-config of an earlier `plus-ultra pretrain` run"
            )
        return "pretrain", backbone, "--warm-start pretrain"
    champion = current_champion(run.options.output_dir)
    if champion is not None and Path(champion.run_dir).resolve() == run.run_dir.resolve():
        champion = None  # this run, promoted earlier: not its own warm start
    ckpt = champion_training_checkpoint(champion)
    if ckpt is not None:
        return "champion", ckpt, f"the champion's training checkpoint ({champion.run_dir})"
    if mode == "training":
        where = Path(run.options.output_dir) / "champion.json"
        what = "no champion" if champion is None else f"champion {champion.run_dir} has no"
        raise ValueError(
            f"--warm-start training: {what} training checkpoint ({where}) — run once without "
            "--warm-start to train and promote a first champion"
        )
    backbone = _pretrained_backbone(run)
    if backbone is not None:
        return "pretrain", backbone, "no champion yet; this run's pretrained backbone"
    return "scratch", None, "no champion and no pretrained backbone"


def _train_inputs(run: RetrainRun, source: Path | None) -> dict[str, str]:
    config = run.sections_except("train", *_NOT_TRAINING)
    return {**run.database_input("train"), **config, **run.files(source)}


def plan_train(run: RetrainRun) -> StagePlan:
    if run.options.skip_training:
        return StagePlan({}, skip="--skip-training")
    recorded = run.folder("train") / "warm_start.json"
    if run.settled("train") and recorded.is_file():
        # the warm start chosen when it ran stands (a champion promoted since is no reason
        # to retrain; --from-stage train chooses again)
        source = json.loads(recorded.read_text(encoding="utf-8")).get("source")
        return StagePlan(_train_inputs(run, Path(source) if source else None), resumable=True)
    _, source, _ = warm_start_source(run)
    return StagePlan(_train_inputs(run, source), resumable=True)


def _champion_backbone(ckpt: Path, folder: Path) -> Path:
    """The champion's backbone as a backbone file (checked on load like a pretrained one)."""
    agent = Agent.from_checkpoint(ckpt, device="cpu")
    path = folder / "warm_start" / "backbone.pt"
    return save_backbone(path, agent.model.backbone, agent.config.model, agent.feature_columns)


def run_train(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    cfg = run.config.model_copy(deep=True)
    cfg.training.checkpoint_dir = folder
    cfg.training.progress_bar = False
    last = folder / "last.ckpt"
    kind, source, why = warm_start_source(run)
    if last.is_file():  # an interrupted run of this stage: continue it
        kind, why, backbone = "resumed", f"continued from {last} ({why})", None
        result = train(cfg, resume=last)
    else:
        backbone = _champion_backbone(source, folder) if kind == "champion" else source
        try:
            result = train(cfg, pretrain_checkpoint=backbone)
        except WarmStartError as err:
            if kind != "champion" or run.options.warm_start != "auto":
                raise
            reason = str(err).splitlines()[0]
            log.warning("champion does not fit this model (%s); training from scratch", reason)
            kind, why, backbone = "scratch", f"the champion does not fit: {reason}", None
            result = train(cfg)
    write_json(
        folder / "warm_start.json",
        {"kind": kind, "source": source, "backbone": backbone, "why": why},
    )
    metrics = ", ".join(
        f"{k} {result.metrics[k]:.4f}" for k in ("val_ic", "test_ic") if k in result.metrics
    )
    note = f"warm start: {kind} ({why}); {result.epochs} epochs; {metrics}"
    inputs = _train_inputs(run, source)
    return StageResult(_present(folder, _TRAIN_OUTPUTS), note=note, inputs=inputs)


# --------------------------------------------------------------------------------------
# RL fine-tune
# --------------------------------------------------------------------------------------


def _rl_source(run: RetrainRun) -> Path:
    if run.done("train"):
        return run.folder("train")
    ckpt = champion_training_checkpoint(current_champion(run.options.output_dir))
    if ckpt is None:
        raise ValueError(
            "--run-reinforcement: no supervised checkpoint to fine-tune — the train stage "
            "did not run (--skip-training) and there is no champion; drop --skip-training"
        )
    return ckpt


def plan_rl_finetune(run: RetrainRun) -> StagePlan:
    if not run.options.run_reinforcement:
        return StagePlan(
            {}, skip="--run-reinforcement not given: the supervised model is the candidate"
        )
    source = _rl_source(run)
    ckpt = source if source.is_file() else source / "best.ckpt"
    config = run.sections_except("train", *_NOT_TRAINING[:-1])  # reinforcement included
    inputs = {**run.database_input("rl_finetune"), **config}
    inputs.update(run.files(ckpt if ckpt.is_file() else source / "last.ckpt"))
    return StagePlan(inputs, resumable=True)


def run_rl_finetune(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    cfg = run.config.model_copy(deep=True)
    resume = (folder / "state.pt").is_file()
    result = finetune(
        cfg,
        _rl_source(run),
        device=device_of(cfg),
        output_dir=folder,
        resume=resume,
    )
    final = result.final
    note = (
        f"{len(result.history)} PPO updates"
        + (f" (resumed after {result.resumed_from})" if result.resumed_from else "")
        + f"; final mean reward {final.mean_reward:.5f}"
    )
    return StageResult(_present(folder, _RL_OUTPUTS), note=note)
