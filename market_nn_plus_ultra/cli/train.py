"""``plus-ultra train``: fit a model on the config's database and evaluate it on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from ..config import DiagnosticsConfig, ModelConfig, TrainingConfig, field_help
from ._common import ConfigOption, SetOption, load, out, user_errors, wrote


def _cfg(section: type[BaseModel], prefix: str, name: str) -> typer.models.OptionInfo:
    """An option that sets ``prefix.name``; its help the field's description and default."""
    return typer.Option(help=f"{prefix}.{name}: {field_help(section, name)}")


def _diag(name: str) -> typer.models.OptionInfo:
    """``--diagnostics-<name>``, its help the config field's description."""
    return typer.Option(help=f"diagnostics.{name}: {field_help(DiagnosticsConfig, name)}")


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
    architecture: Annotated[str | None, _cfg(ModelConfig, "model", "architecture")] = None,
    depth: Annotated[int | None, _cfg(ModelConfig, "model", "depth")] = None,
    model_dim: Annotated[int | None, _cfg(ModelConfig, "model", "d_model")] = None,
    batch_size: Annotated[int | None, _cfg(TrainingConfig, "training", "batch_size")] = None,
    learning_rate: Annotated[
        float | None, _cfg(TrainingConfig, "training", "learning_rate")
    ] = None,
    max_epochs: Annotated[int | None, _cfg(TrainingConfig, "training", "max_epochs")] = None,
    accelerator: Annotated[str | None, _cfg(TrainingConfig, "training", "accelerator")] = None,
    devices: Annotated[str | None, _cfg(TrainingConfig, "training", "devices")] = None,
    wandb_offline: Annotated[
        bool, typer.Option("--wandb-offline", help="Log to Weights & Biases, offline.")
    ] = False,
    diagnostics: Annotated[
        bool | None,
        typer.Option(
            "--enable-diagnostics/--disable-diagnostics",
            help="diagnostics.enabled: write diagnostics.parquet beside the checkpoints.",
        ),
    ] = None,
    diagnostics_interval: Annotated[int | None, _diag("interval")] = None,
    diagnostics_profile: Annotated[
        bool, typer.Option("--diagnostics-profile", help=field_help(DiagnosticsConfig, "profile"))
    ] = False,
    diagnostics_noise_threshold: Annotated[float | None, _diag("noise_threshold")] = None,
    diagnostics_bias_threshold: Annotated[float | None, _diag("bias_threshold")] = None,
    diagnostics_error_threshold: Annotated[float | None, _diag("error_threshold")] = None,
) -> None:
    """Train the configured model; print where checkpoints, logs and metrics went.

    Reads the database of data.sqlite_path, builds the features and windows, fits the
    model on the training split, picks the best checkpoint on validation and scores the
    test split; everything lands in training.checkpoint_dir.

    Example: plus-ultra train --config configs/default.yaml --max-epochs 5 --accelerator cpu

    Example: plus-ultra train --config outputs/run/config.yaml --resume outputs/run/last.ckpt
    """
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
            "diagnostics.enabled": diagnostics,
            "diagnostics.interval": diagnostics_interval,
            "diagnostics.profile": True if diagnostics_profile else None,
            "diagnostics.noise_threshold": diagnostics_noise_threshold,
            "diagnostics.bias_threshold": diagnostics_bias_threshold,
            "diagnostics.error_threshold": diagnostics_error_threshold,
        }
        cfg = load(config, overrides, **flags)
        result = run_training(cfg, pretrain_checkpoint=pretrain_checkpoint, resume=resume)
    for key in ("val_ic", "test_ic", "test_directional_accuracy", "test_sharpe"):
        if key in result.metrics:
            out.print(f"{key}: {result.metrics[key]:.4f}")
    if result.best_checkpoint:
        wrote("best checkpoint", result.best_checkpoint)
    wrote("metrics", result.metrics_path)
    if (result.checkpoint_dir / "diagnostics.parquet").exists():
        wrote("diagnostics", result.checkpoint_dir / "diagnostics.parquet")
    wrote("run folder", result.checkpoint_dir)
