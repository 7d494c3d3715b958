"""``build_trainer(section, out)``: the one Lightning ``Trainer`` of ``train`` and ``pretrain``.

Both commands read the same :class:`~market_nn_plus_ultra.config.training.TrainerConfig`
fields (``training`` and ``pretraining`` extend it), so a key means the same thing in
either section and the Trainer they build differs only by what the caller passes:
loggers, callbacks and whether a validation split exists. Fixed for both:

- checkpoints go through :class:`~.checkpoint_io.AtomicCheckpointIO` (temp file, fsync,
  rename) and come only from the caller's ``ModelCheckpoint`` callbacks (none = Lightning
  writes no checkpoint of its own);
- ``use_distributed_sampler=False``: the DataModule's sampler already shards by rank, and
  Lightning's wrapper on top would shard the shards under DDP;
- no sanity validation steps; a ``LearningRateMonitor`` whenever a logger is attached.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from ..config.training import TrainerConfig
from .checkpoint_io import AtomicCheckpointIO

__all__ = ["build_trainer", "resolve_precision"]


def resolve_precision(precision: str, accelerator: str) -> str:
    """``precision`` with ``auto`` resolved: bf16-mixed on CUDA (16-mixed where the GPU
    lacks bf16), 32-true on CPU and MPS."""
    if precision != "auto":
        return precision
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def build_trainer(
    section: TrainerConfig,
    out: Path,
    *,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    validate: bool = True,
) -> L.Trainer:
    """A Lightning Trainer configured from ``section`` (``cfg.training`` or ``cfg.pretraining``).

    ``out``: the run folder (Lightning's ``default_root_dir``). ``validate``: False when the
    validation split is empty, so no validation loop runs. Also sets torch's float32 matmul
    precision for this process (``section.float32_matmul_precision``).
    """
    torch.set_float32_matmul_precision(section.float32_matmul_precision)
    loggers = list(loggers)
    extra: list[Callback] = [LearningRateMonitor("step")] if loggers else []
    callbacks = [*callbacks, *extra]
    return L.Trainer(
        accelerator=section.accelerator,
        devices=section.devices,
        num_nodes=section.num_nodes,
        strategy=section.strategy,
        precision=resolve_precision(section.precision, section.accelerator),
        max_epochs=section.max_epochs,
        max_steps=section.max_steps,
        limit_train_batches=section.limit_train_batches,
        gradient_clip_val=section.gradient_clip,
        accumulate_grad_batches=section.accumulate_grad_batches,
        deterministic=section.deterministic,
        logger=loggers or False,
        callbacks=callbacks,
        # Lightning refuses enable_checkpointing=False beside a ModelCheckpoint, and adds
        # a default one (epoch=N-step=M.ckpt) when True without any: follow the caller
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks),
        default_root_dir=out,
        log_every_n_steps=section.log_every_n_steps,
        enable_progress_bar=section.progress_bar,
        enable_model_summary=section.progress_bar,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        limit_val_batches=1.0 if validate else 0,
        plugins=[AtomicCheckpointIO()],  # a full disk or a kill never truncates a .ckpt
    )
