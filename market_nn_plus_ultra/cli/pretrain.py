"""``plus-ultra pretrain``: self-supervised backbone pretraining (masked or contrastive)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import PretrainingConfig, field_help
from ._common import ConfigOption, SetOption, load, out, user_errors, wrote

__all__ = ["pretrain"]


def pretrain(
    config: ConfigOption = None,
    objective: Annotated[
        str | None,
        typer.Option("--objective", help=field_help(PretrainingConfig, "objective")),
    ] = None,
    mask_prob: Annotated[
        float | None,
        typer.Option("--mask-prob", help=field_help(PretrainingConfig, "mask_prob")),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", help=field_help(PretrainingConfig, "temperature")),
    ] = None,
    max_epochs: Annotated[
        int | None,
        typer.Option("--max-epochs", help=field_help(PretrainingConfig, "max_epochs")),
    ] = None,
    accelerator: Annotated[
        str | None,
        typer.Option("--accelerator", help=field_help(PretrainingConfig, "accelerator")),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Pretrain the backbone of `model` without labels on the database's windows.

    Writes last.ckpt, backbone.pt, config.yaml and metrics.json under
    pretraining.checkpoint_dir; warm-start supervised training from backbone.pt with
    `plus-ultra train --pretrain-checkpoint`.

    Example: plus-ultra pretrain --config configs/pretrain_desktop.yaml --objective contrastive
    """
    from ..training.pretrain import pretrain as run_pretraining

    with user_errors():
        cfg = load(
            config,
            overrides,
            **{
                "pretraining.objective": objective,
                "pretraining.mask_prob": mask_prob,
                "pretraining.temperature": temperature,
                "pretraining.max_epochs": max_epochs,
                "pretraining.accelerator": accelerator,
            },
        )
        result = run_pretraining(cfg)
    out.print(
        f"{result.objective} pretraining: {result.steps} steps over {result.epochs} epochs on "
        f"{result.n_train_windows:,} windows in {result.seconds:.1f} s; validation objective "
        f"{result.loss_before:.4f} → {result.loss_after:.4f}",
        highlight=False,
    )
    wrote("Lightning checkpoint", result.last_checkpoint)
    wrote("resolved config", result.config_path)
    wrote("metrics", result.metrics_path)
    wrote("backbone (warm start with --pretrain-checkpoint)", result.backbone_path)
