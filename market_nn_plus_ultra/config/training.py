"""Config sections of training: the shared trainer fields, supervised training, tracking,
pretraining, diagnostics and curriculum."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo

from ._base import _Section

__all__ = [
    "CurriculumConfig",
    "CurriculumStage",
    "DiagnosticsConfig",
    "PretrainingConfig",
    "TrackingConfig",
    "TrainerConfig",
    "TrainingConfig",
]


class TrainerConfig(_Section):
    """Hardware, precision, loop length and optimiser: the fields ``build_trainer`` reads.

    ``training`` and ``pretraining`` both extend it, so the same key means the same thing
    in either section (``training.precision``, ``pretraining.precision``); a section
    changes only defaults (see docs/training.md).
    """

    # optimiser and schedule (AdamW, linear warm-up, cosine decay)
    learning_rate: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(
        200, ge=0, description="Optimiser steps of linear learning-rate warm-up from 0."
    )
    # loop length and gradient handling
    max_epochs: int = Field(20, ge=1, description="Passes over the training windows.")
    max_steps: int = Field(
        -1, ge=-1, description="Stop after this many optimiser steps; -1 = run max_epochs."
    )
    limit_train_batches: int | float = Field(
        1.0,
        gt=0,
        description="Training batches per epoch: an integer count, or a fraction (1.0 = all).",
    )
    gradient_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this value; null = no clipping."
    )
    accumulate_grad_batches: int = Field(
        1, ge=1, description="Micro-batches whose gradients add up to one optimiser step."
    )
    # hardware, precision and distribution
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "auto",
        description="Numeric precision; auto = bf16-mixed on CUDA (16-mixed without bf16), "
        "32-true otherwise.",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="Device type passed to the Lightning Trainer."
    )
    devices: int | str = Field(
        "auto", description="Devices per node: a count, 'auto', or a list string like '0,1'."
    )
    num_nodes: int = Field(1, ge=1, description="Machines taking part in distributed training.")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="Lightning distribution strategy: auto, ddp or fsdp."
    )
    deterministic: bool = Field(
        False, description="Force deterministic kernels (slower on GPU; CPU runs repeat anyway)."
    )
    float32_matmul_precision: Literal["highest", "high", "medium"] = Field(
        "high", description="torch float32 matmul precision (high allows TF32 on GPUs)."
    )
    # logging
    log_every_n_steps: int = Field(50, ge=1, description="Log training metrics every N steps.")
    progress_bar: bool = Field(True, description="Show a progress bar and the model summary.")


def _default(name: str, value: object) -> Any:
    """``TrainerConfig``'s field ``name`` (type, bounds, description) with another default."""
    return FieldInfo.merge_field_infos(TrainerConfig.model_fields[name], default=value)


class TrainingConfig(TrainerConfig):
    """Supervised training: optimiser, schedule, hardware and checkpoints (docs/training.md)."""

    supervision: Literal["all", "last"] | None = Field(
        None,
        description="all: every position of a training sequence with at least min_context "
        "rows behind it is a target (causal backbones, nanoGPT-style); last: only each "
        "window's last step. null: all for every backbone but temporal_fusion, with a "
        "causal windows.normalise (train_zscore or none) and no curriculum, else last.",
    )
    min_context: int | None = Field(
        None,
        ge=1,
        description="supervision=all: positions with fewer rows behind them in the sequence "
        "are not scored; null = windows.window (training sees exactly the context inference "
        "has).",
    )
    sequence_length: int | None = Field(
        None,
        ge=2,
        description="supervision=all: rows per training sequence; null = 2 × windows.window.",
    )
    batch_size: int = Field(
        256,
        ge=1,
        description="Targets per optimiser micro-batch: windows, or with supervision=all "
        "scored positions (batch_size / (sequence_length − min_context + 1) sequences).",
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="Windows per validation/test batch; null = training.batch_size."
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Cosine schedule floor as a fraction of the peak rate."
    )
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (0 = main process).")
    persistent_workers: bool = Field(
        True, description="Keep DataLoader workers alive between epochs (needs num_workers > 0)."
    )
    pin_memory: bool = Field(True, description="Pin host batches for faster copies to a GPU.")
    monitor: Literal["val_ic", "val_loss"] = Field(
        "val_ic", description="Validation metric that picks best.ckpt (val_ic max, val_loss min)."
    )
    ic_mode: Literal["pooled", "cross_section"] = Field(
        "pooled",
        description="IC as one Spearman over every (bar, symbol) pair (pooled) or the mean "
        "per-bar Spearman across symbols (cross_section).",
    )
    cost_bps: float = Field(
        1.0, ge=0, description="Cost per unit traded in the validation Sharpe, bps."
    )
    checkpoint_dir: Path = Field(
        Path("outputs/train"), description="Folder for checkpoints, logs and the resolved config."
    )
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="Also save steps/step-N.ckpt every N optimiser steps (for resume)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a better monitor value."
    )


class TrackingConfig(_Section):
    """Experiment tracking: CSV always, TensorBoard when installed, W&B / MLflow on request."""

    run_name: str | None = Field(
        None, description="Name of the run in every logger; null = the checkpoint folder name."
    )
    csv: bool = Field(True, description="Write metrics to logs/csv/metrics.csv.")
    tensorboard: bool = Field(
        True, description="Write TensorBoard event files when tensorboard is installed."
    )
    wandb: bool = Field(False, description="Log to Weights & Biases (needs the `tracking` extra).")
    wandb_project: str = Field("market-nn-plus-ultra", description="W&B project name.")
    wandb_entity: str | None = Field(None, description="W&B entity (team); null = your default.")
    wandb_offline: bool = Field(
        True, description="Keep W&B runs offline (sync later with `wandb sync`)."
    )
    mlflow: bool = Field(False, description="Log to MLflow (needs the `tracking` extra).")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; null = a local file store logs/mlruns."
    )
    mlflow_experiment: str = Field("market-nn-plus-ultra", description="MLflow experiment name.")


class PretrainingConfig(TrainerConfig):
    """Self-supervised pretraining of the backbone (see docs/pretraining.md)."""

    objective: Literal["masked", "contrastive"] = Field(
        "masked",
        description="masked: reconstruct masked steps; contrastive: TS2Vec hierarchical contrast.",
    )
    mask_prob: float = Field(
        0.15, gt=0, lt=1, description="masked: share of time steps (or patches) masked per window."
    )
    mask_mode: Literal["timestep", "patch"] = Field(
        "timestep", description="masked: mask single time steps or runs of mask_patch_len steps."
    )
    mask_patch_len: int = Field(8, ge=1, description="masked: steps per masked patch (patch mode).")
    mask_value: Literal["zero", "mean"] = Field(
        "zero",
        description="masked: masked inputs become 0 or the window's mean of each feature.",
    )
    temperature: float = Field(
        0.1, gt=0, description="contrastive: InfoNCE softmax temperature (lower = sharper)."
    )
    jitter_std: float = Field(
        0.03, ge=0, description="contrastive: std of the Gaussian noise added to each view."
    )
    scale_std: float = Field(
        0.1, ge=0, description="contrastive: std of the per-feature random scaling around 1."
    )
    time_mask_prob: float = Field(
        0.1, ge=0, lt=1, description="contrastive: share of time steps masked in each view."
    )
    time_mask_fill: Literal["zero", "mean"] = Field(
        "zero", description="contrastive: masked steps become 0 or the window mean of the feature."
    )
    temporal_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="contrastive: weight of the temporal term; the instance term gets 1 - it.",
    )
    batch_size: int = Field(64, ge=2, description="Windows per pretraining batch.")
    learning_rate: float = _default("learning_rate", 1e-3)
    warmup_steps: int = _default("warmup_steps", 100)
    max_epochs: int = _default("max_epochs", 10)
    log_every_n_steps: int = _default("log_every_n_steps", 10)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = main process).")
    checkpoint_dir: Path = Field(
        Path("outputs/pretrain"),
        description="Folder for last.ckpt, backbone.pt, config.yaml and metrics.",
    )


class DiagnosticsConfig(_Section):
    """Training diagnostics written to diagnostics.parquet (see docs/diagnostics.md)."""

    enabled: bool = Field(
        True, description="Record gradient noise, spikes, throughput and calibration drift."
    )
    interval: int = Field(50, ge=1, description="Optimiser steps between diagnostic records.")
    profile: bool = Field(
        False,
        description="Also time data loading vs compute per step (synchronises CUDA each step).",
    )
    noise_threshold: float = Field(
        10.0,
        gt=0,
        description="Warn when the gradient noise scale exceeds this multiple of the batch size.",
    )
    bias_threshold: float = Field(
        0.1,
        gt=0,
        description="Warn when a head's calibration error (ECE or quantile coverage) exceeds this.",
    )
    error_threshold: float = Field(
        10.0,
        gt=1,
        description="Warn when loss or gradient norm exceeds this multiple of its rolling median.",
    )
    spike_window: int = Field(
        20, ge=3, description="Past records in the rolling median that spikes are judged against."
    )
    noise_ema: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="EMA decay of the noise-scale numerator and denominator between records.",
    )
    calibration_bins: int = Field(
        10, ge=2, description="Equal-width confidence bins of the expected calibration error."
    )


class CurriculumStage(_Section):
    """From ``epoch`` on, train on windows of ``window`` bars scored over ``horizon`` steps."""

    epoch: int = Field(0, ge=0, description="First epoch (0-based) of this stage.")
    window: int = Field(32, ge=1, description="Input bars W of the stage's windows.")
    horizon: int = Field(1, ge=1, description="Target steps scored by the loss in this stage.")


class CurriculumConfig(_Section):
    """Grow the training window and scored horizon over epochs (see docs/diagnostics.md)."""

    enabled: bool = Field(False, description="Train short windows/horizons first, then grow them.")
    stages: list[CurriculumStage] = Field(
        default_factory=list,
        description="Explicit stages by first epoch; empty = linear growth from the start values.",
    )
    start_window: int = Field(
        16, ge=1, description="Linear growth: window of epoch 0 (grows to windows.window)."
    )
    start_horizon: int = Field(
        1, ge=1, description="Linear growth: scored horizon of epoch 0 (grows to model.horizon)."
    )
    ramp_epochs: int = Field(
        5, ge=0, description="Linear growth: epochs until the full window and horizon are reached."
    )

    @model_validator(mode="after")
    def _ordered(self) -> CurriculumConfig:
        epochs = [stage.epoch for stage in self.stages]
        if epochs and (epochs[0] != 0 or sorted(set(epochs)) != epochs):
            raise ValueError(
                f"curriculum.stages epochs {epochs} must start at 0 and strictly increase"
            )
        return self
