"""``plus-ultra train``: fit a model on the config's database and evaluate it on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import ConfigOption, SetOption, load, out, user_errors, wrote


def train(
    config: ConfigOption = None,
    overrides: SetOption = None,
    pretrain_checkpoint: Annotated[
        Path | None, typer.Option(help="Warm-start the backbone from this pretrained checkpoint.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue an interrupted run from last.ckpt or a step-N.ckpt."),
    ] = None,
    architecture: Annotated[str | None, typer.Option(help="model.architecture")] = None,
    depth: Annotated[int | None, typer.Option(help="model.depth")] = None,
    model_dim: Annotated[int | None, typer.Option(help="model.d_model")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training.batch_size")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="training.learning_rate")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="training.max_epochs")] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="training.accelerator: cpu|gpu|auto")
    ] = None,
    devices: Annotated[str | None, typer.Option(help="training.devices: a count or 'auto'")] = None,
    wandb_offline: Annotated[
        bool, typer.Option("--wandb-offline", help="Log to Weights & Biases, offline.")
    ] = False,
) -> None:
    """Train the configured model; print where checkpoints, logs and metrics went."""
    from ..training import train as run_training

    with user_errors():
        flags = {
            "model.architecture": architecture,
            "model.depth": depth,
            "model.d_model": model_dim,
            "training.batch_size": batch_size,
            "training.learning_rate": learning_rate,
            "training.max_epochs": max_epochs,
            "training.accelerator": accelerator,
            "training.devices": int(devices) if devices and devices.isdigit() else devices,
            "tracking.wandb": True if wandb_offline else None,
            "tracking.wandb_offline": True if wandb_offline else None,
        }
        cfg = load(config, overrides, **flags)
        result = run_training(cfg, pretrain_checkpoint=pretrain_checkpoint, resume=resume)
    for key in ("val_ic", "test_ic", "test_directional_accuracy", "test_sharpe"):
        if key in result.metrics:
            out.print(f"{key}: {result.metrics[key]:.4f}")
    if result.best_checkpoint:
        wrote("best checkpoint", result.best_checkpoint)
    wrote("metrics", result.metrics_path)
    wrote("run folder", result.checkpoint_dir)
