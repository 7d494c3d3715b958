"""The typed configuration tree.

One pydantic model per section; every field has a type, a default and a one-line
description that doubles as ``--help`` text. Configs load from YAML, take dotted
overrides (``--set data.sqlite_path=other.db``) and are saved, resolved, beside every
artefact so a run can be reproduced exactly::

    cfg = load_config("configs/default.yaml", overrides=["data.symbols=[SPY,QQQ]"])
    save_config(cfg, "outputs/run/config.yaml")
    assert load_config("outputs/run/config.yaml") == cfg

Unknown keys are errors with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AlternativeDataSpec",
    "Config",
    "ConfigError",
    "CrossAssetConfig",
    "CurriculumConfig",
    "CurriculumStage",
    "DataConfig",
    "DiagnosticsConfig",
    "FeaturesConfig",
    "LossConfig",
    "ModelConfig",
    "PretrainingConfig",
    "RegimeConfig",
    "SimulationConfig",
    "TrackingConfig",
    "TrainingConfig",
    "WindowsConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "field_help",
    "load_config",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the option and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class AlternativeDataSpec(_Section):
    """One alternative-data side table ``alt_<name>``, joined as of each bar (never ahead)."""

    name: str = Field(
        "sentiment", min_length=1, description="Side table name without the prefix: `alt_<name>`."
    )
    join: Literal["per_symbol", "global"] = Field(
        "per_symbol",
        description="per_symbol: match rows by symbol; global: one series joined to every symbol.",
    )
    columns: list[str] | None = Field(
        None, description="Value columns to join; null joins every column except the keys."
    )
    max_staleness: str = Field(
        "1D",
        description="Oldest observation still joined, a pandas Timedelta ('8h', '3D'); older → NaN.",
    )
    feature_names: dict[str, str] = Field(
        default_factory=dict,
        description="Column → panel column name; unnamed columns become `<name>_<column>`.",
    )
    enabled: bool = Field(True, description="Join this table (false keeps the spec but skips it).")
    required: bool = Field(
        False, description="Fail when the table is missing instead of skipping it with a log line."
    )

    @field_validator("max_staleness")
    @classmethod
    def _timedelta(cls, value: str) -> str:
        import pandas as pd

        try:
            delta = pd.Timedelta(value)
        except (ValueError, TypeError):
            raise ValueError(
                f"{value!r} is not a pandas Timedelta string — use e.g. '8h', '3D' or '30min'"
            ) from None
        if delta <= pd.Timedelta(0):
            raise ValueError(f"{value!r} must be a positive duration, e.g. '1D'")
        return value


def _default_alternative_data() -> list[AlternativeDataSpec]:
    """The side tables the fixture generator writes (skipped when a database lacks them)."""
    spec = AlternativeDataSpec
    return [
        spec(
            name="macro",
            join="global",
            columns=["rate_10y", "cpi_surprise", "event_flag"],
            max_staleness="7D",
        ),
        spec(
            name="funding",
            columns=["funding_rate"],
            max_staleness="1D",
            feature_names={"funding_rate": "funding_rate"},
        ),
        spec(
            name="sentiment",
            columns=["sentiment_score", "news_volume"],
            max_staleness="3D",
            feature_names={"sentiment_score": "sentiment_score"},
        ),
        spec(name="implied_vol", columns=["iv_30d", "iv_skew"], max_staleness="4D"),
        spec(name="onchain", columns=["active_addresses", "exchange_netflow"], max_staleness="3D"),
    ]


class RegimeConfig(_Section):
    """Causal regime labellers written to the `regimes` table by `plus-ultra data build`."""

    labellers: list[Literal["volatility", "liquidity", "sector_rotation"]] = Field(
        default_factory=lambda: ["volatility", "liquidity", "sector_rotation"],
        description="Which labels to compute (rows of `regimes` with this name).",
    )
    bands: list[float] = Field(
        default_factory=lambda: [0.33, 0.66],
        description="Increasing quantile cut points in (0, 1); k cut points give k+1 labels.",
    )
    labels: list[str] | None = Field(
        None, description="Label per band, low to high; null = low/mid/high (or band_0, band_1…)."
    )
    vol_window: int = Field(20, ge=2, description="Bars of log returns in the realised volatility.")
    liquidity_window: int = Field(20, ge=1, description="Bars averaged in the liquidity measure.")
    liquidity_measure: Literal["dollar_volume", "amihud"] = Field(
        "dollar_volume",
        description="dollar_volume: mean close·volume; amihud: mean |return| / dollar volume.",
    )
    sector_window: int = Field(
        20, ge=1, description="Bars of return in the sector relative-strength measure."
    )
    quantile_window: int | None = Field(
        None,
        ge=2,
        description="Bars of each symbol's history the quantiles use; null = all history so far.",
    )
    min_history: int = Field(
        60, ge=2, description="Measure values a symbol needs before it gets a label."
    )

    @field_validator("bands")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < b < 1.0 for b in value):
            raise ValueError(
                f"{value}: every band must lie strictly between 0 and 1, e.g. [0.33, 0.66]"
            )
        if value != sorted(set(value)):
            raise ValueError(f"{value}: bands must be strictly increasing, e.g. [0.33, 0.66]")
        return value


class CrossAssetConfig(_Section):
    """Context columns from other symbols aligned onto each symbol's calendar."""

    view: str = Field(
        "context", min_length=1, description="Name of the view in `cross_asset_views`."
    )
    columns: list[str] = Field(
        default_factory=list,
        description="Context columns as SYMBOL:column, e.g. [SPY:close, QQQ:close].",
    )
    fill_limit: int = Field(
        5, ge=0, description="Most consecutive bars a context value is carried forward."
    )
    min_overlap: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Least share of a symbol's bars (over the shared span) a context symbol must "
        "also have.",
    )


class DataConfig(_Section):
    """Where the market data lives and how it is read and validated."""

    sqlite_path: Path = Field(
        Path("data/market.db"), description="SQLite database holding the market data."
    )
    symbols: list[str] | None = Field(
        None, description="Symbols to load; null loads every symbol in the `series` table."
    )
    start: str | None = Field(
        None, description="First timestamp to load (ISO-8601, inclusive); null = earliest."
    )
    end: str | None = Field(
        None, description="Last timestamp to load (ISO-8601, inclusive); null = latest."
    )
    include_indicators: bool = Field(
        True, description="Pivot the long `indicators` table into wide panel columns."
    )
    cache: bool = Field(
        True,
        description="Keep a Parquet cache of each panel read, keyed by the database's version.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder for the panel cache; null = `.plus_ultra_cache/` beside the database.",
    )
    read_threads: int = Field(
        2, ge=1, le=64, description="Parallel SQLite readers used on a cold (uncached) read."
    )
    strict_validation: bool = Field(
        False,
        description="Halt on any validation failure instead of logging and dropping bad rows.",
    )
    gap_tolerance: float = Field(
        5.0,
        gt=0,
        description="Report gaps longer than this many median bar intervals as warnings.",
    )
    alternative_data: list[AlternativeDataSpec] = Field(
        default_factory=_default_alternative_data,
        description="Alternative-data side tables joined onto the panel as of each bar.",
    )
    regimes: RegimeConfig = Field(
        default_factory=RegimeConfig, description="Causal regime labellers (`data build`)."
    )
    cross_asset: CrossAssetConfig = Field(
        default_factory=CrossAssetConfig, description="Cross-asset context view (`data build`)."
    )


class LossConfig(_Section):
    """The training objective: the head's supervised loss plus risk terms on its PnL."""

    regression: Literal["mse", "huber"] = Field(
        "huber", description="Forecast error loss: mse, or huber (robust to fat-tailed returns)."
    )
    huber_delta: float = Field(
        1.0, gt=0, description="Huber threshold, in units of model.return_scale."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing of the down/flat/up cross-entropy."
    )
    evidential_anneal_steps: int = Field(
        1000, ge=1, description="Training steps over which the evidential KL weight ramps 0 → 1."
    )
    head_weight: float = Field(1.0, ge=0, description="Weight of the head's supervised loss.")
    pnl_weight: float = Field(0.0, ge=0, description="Weight of −mean net return of the positions.")
    sharpe_weight: float = Field(0.0, ge=0, description="Weight of −Sharpe of the net returns.")
    sortino_weight: float = Field(0.0, ge=0, description="Weight of −Sortino of the net returns.")
    drawdown_weight: float = Field(
        0.0, ge=0, description="Weight of the max-drawdown magnitude of the net returns."
    )
    cvar_weight: float = Field(
        0.0, ge=0, description="Weight of −CVaR (expected shortfall) of the net returns."
    )
    pnl_mode: Literal["horizon", "sequence"] = Field(
        "horizon",
        description="horizon: each sample's position held over t+1..t+H; sequence: the batch "
        "is one time-ordered trading sequence.",
    )
    cost_bps: float = Field(
        0.0, ge=0, description="Trading cost per unit traded in the PnL terms, bps."
    )
    slippage_bps: float = Field(
        0.0, ge=0, description="Slippage per unit traded in the PnL terms, bps."
    )
    holding_bps: float = Field(
        0.0, ge=0, description="Charge per bar per unit of exposure in the PnL terms, bps."
    )
    smoothing: float = Field(
        1e-4, ge=0, description="Smoothing of |trade| in the costs so gradients exist near 0."
    )
    cvar_alpha: float = Field(0.05, gt=0, lt=1, description="Tail share averaged by the CVaR term.")
    eps: float = Field(
        1e-8, gt=0, description="Added to variances in the Sharpe/Sortino denominators."
    )


_ARCHITECTURE_HELP = (
    "hybrid_transformer, omni_mixture, moe_transformer, state_space, temporal_fusion"
)
_HEAD_HELP = "regression, action, quantile, dirichlet, quantile_dirichlet"


def _head_counts(d_model: int) -> list[int]:
    """Head counts that split ``d_model`` into even-sized heads (for error hints)."""
    return [h for h in range(1, 33) if d_model % h == 0 and (d_model // h) % 2 == 0]


class ModelConfig(_Section):
    """The network: which backbone and head, and their sizes (see docs/models.md)."""

    architecture: str = Field(
        "hybrid_transformer", description=f"Backbone from the model registry: {_ARCHITECTURE_HELP}."
    )
    head: str = Field("regression", description=f"Output head from the registry: {_HEAD_HELP}.")
    d_model: int = Field(512, ge=8, description="Width of the hidden sequence (channels per step).")
    depth: int = Field(16, ge=1, description="Number of residual blocks in the backbone.")
    n_heads: int = Field(8, ge=1, description="Attention heads; must divide d_model.")
    ff_mult: int = Field(4, ge=1, description="Feed-forward width as a multiple of d_model.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on attention and residual paths.")
    norm: Literal["rms", "layer"] = Field(
        "rms", description="Normalisation in every pre-norm block: rms (RMSNorm) or layer."
    )
    max_seq_len: int = Field(
        512, ge=1, description="Longest window cached for rotary positions (longer ones recompute)."
    )
    patch_size: int = Field(
        1, ge=1, description="Steps embedded together as one token; 1 embeds every step."
    )
    dilations: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8],
        description="Dilations the causal convolutions cycle through, block by block.",
    )
    conv_kernel: int = Field(3, ge=1, description="Kernel size of the dilated causal convolutions.")
    ssm_state_dim: int = Field(16, ge=1, description="State size per channel of the diagonal SSM.")
    coarse_factor: int = Field(
        4, ge=2, description="omni_mixture: fine steps pooled into one coarse token."
    )
    cross_every: int = Field(
        2, ge=1, description="omni_mixture: cross-scale attention after every this many layers."
    )
    num_experts: int = Field(8, ge=1, description="moe_transformer: experts per MoE layer.")
    top_k: int = Field(2, ge=1, description="moe_transformer: experts each token is routed to.")
    router_dropout: float = Field(
        0.0, ge=0, lt=1, description="moe_transformer: dropout on the router's input in training."
    )
    load_balance_weight: float = Field(
        0.01, ge=0, description="moe_transformer: weight of the Switch load-balancing loss."
    )
    horizon: int = Field(5, ge=1, description="Number of forward returns predicted (t+1 .. t+H).")
    quantiles: list[float] = Field(
        default_factory=lambda: [0.05, 0.5, 0.95],
        description="Quantile levels of the quantile heads, increasing in (0, 1).",
    )
    market_state_embedding: bool = Field(
        False, description="Add embeddings of the regime label and volatility to the input."
    )
    num_regimes: int = Field(8, ge=1, description="Distinct regime labels the embedding knows.")
    activation_checkpointing: bool = Field(
        False, description="Recompute block activations in backward to save GPU memory."
    )
    compile: bool = Field(False, description="Compile the model with torch.compile.")
    tft_hidden: int = Field(64, ge=4, description="temporal_fusion: hidden width of the TFT.")
    tft_lstm_layers: int = Field(1, ge=1, description="temporal_fusion: LSTM encoder layers.")
    return_scale: float = Field(
        0.01, gt=0, description="Typical size of a bar's return; heads predict in these units."
    )
    position_mode: Literal["forecast", "learned"] = Field(
        "forecast",
        description="regression/quantile heads: position = tanh(first forecast / return_scale) "
        "(forecast) or a separate learned output (learned).",
    )
    flat_band: float = Field(
        0.0005, ge=0, description="Returns within ±flat_band count as flat (down/flat/up labels)."
    )
    loss: LossConfig = Field(
        default_factory=LossConfig, description="Head loss and risk-term weights."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                f"({self.n_heads}) — set model.n_heads to one of {_head_counts(self.d_model)}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"model.d_model / model.n_heads = {self.d_model // self.n_heads} must be even "
                "(rotary embeddings rotate pairs of channels) — change model.d_model or model.n_heads"
            )
        if self.top_k > self.num_experts:
            raise ValueError(
                f"model.top_k ({self.top_k}) cannot exceed model.num_experts "
                f"({self.num_experts}) — lower model.top_k or raise model.num_experts"
            )
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(
                f"model.dilations {self.dilations} must be a non-empty list of integers >= 1, "
                "e.g. [1, 2, 4, 8]"
            )
        qs = self.quantiles
        if not qs or any(not 0.0 < q < 1.0 for q in qs) or qs != sorted(set(qs)):
            raise ValueError(
                f"model.quantiles {qs} must be strictly increasing levels in (0, 1), "
                "e.g. [0.05, 0.5, 0.95]"
            )
        return self


class WindowsConfig(_Section):
    """Panel → tensors, sliding windows and purged splits (the `windows` layer)."""

    window: int = Field(
        128, ge=1, description="Input length W: a window ending at row t sees rows t-W+1..t."
    )
    horizon: int = Field(
        5, ge=1, description="Target length H: forward returns over the next H bars t+1..t+H."
    )
    stride: int = Field(1, ge=1, description="Keep every stride-th window end row.")
    symbols_per_item: Literal["one", "all"] = Field(
        "one",
        description="one: an item is one symbol's window [W, F]; all: every symbol [S, W, F].",
    )
    calendar: Literal["union", "own"] = Field(
        "union",
        description="union: windows span the shared calendar (gaps masked); own: each "
        "symbol's last W bars (symbols_per_item=one only).",
    )
    normalise: Literal["window_zscore", "train_zscore", "none"] = Field(
        "window_zscore",
        description="window_zscore: z-score each window by its own rows; train_zscore: by "
        "training-split statistics; none: raw values.",
    )
    target: Literal["simple_return", "log_return"] = Field(
        "simple_return", description="Target per forward bar: close-to-close simple or log return."
    )
    feature_columns: list[str] | None = Field(
        None,
        description="Panel columns used as inputs; null = every column except context/regime.",
    )
    context_columns: list[str] = Field(
        default_factory=list,
        description="Cross-asset panel columns returned separately as `context` [W, C].",
    )
    regime_column: str | None = Field(
        None, description="Panel column of regime labels returned as `regime` at each end row."
    )
    memmap_threshold_gb: float = Field(
        4.0,
        gt=0,
        description="Build tensors larger than this (GB) in a memory-mapped cache streamed from disk.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder for memory-mapped tensor caches; null = `tensors/` in the panel cache.",
    )
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of window end rows in the validation split."
    )
    test_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of window end rows in the test split."
    )
    embargo: int | None = Field(
        None,
        ge=0,
        description="Unread rows between one split's last target row and the next split's "
        "first input row; null = max(horizon, window).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WindowsConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"windows.val_fraction + windows.test_fraction = "
                f"{self.val_fraction + self.test_fraction:g} leaves no training rows — "
                "keep their sum below 1"
            )
        if self.calendar == "own" and self.symbols_per_item == "all":
            raise ValueError(
                "windows.calendar=own needs windows.symbols_per_item=one (multi-symbol items "
                "share the union calendar)"
            )
        return self


class FeaturesConfig(_Section):
    """Which features the FeaturePipeline adds to the panel (see docs/features.md)."""

    names: list[str] | None = Field(
        None,
        description="Features to compute by name (e.g. [rsi_14, macd]); null = the default set.",
    )
    tags: list[str] | None = Field(
        None,
        description="Also compute every feature with one of these tags (technical, spectral, …).",
    )
    fft_window: int = Field(
        64, ge=6, le=4096, description="Bars of log returns in the fft_energy_* rolling window."
    )
    periods_per_year: float | None = Field(
        None,
        gt=0,
        description="Annualisation of realised_vol_20; null = inferred from bar spacing (252 daily).",
    )
    dtype: Literal["float64", "float32"] = Field(
        "float64", description="Storage type of the computed feature columns."
    )
    threads: int = Field(
        0, ge=0, description="Threads computing symbols in parallel; 0 = one per CPU core."
    )


class TrainingConfig(_Section):
    """Supervised training: optimiser, schedule, hardware and checkpoints (docs/training.md)."""

    batch_size: int = Field(256, ge=1, description="Windows per optimiser micro-batch.")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Windows per validation/test batch; null = training.batch_size."
    )
    learning_rate: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(
        200, ge=0, description="Optimiser steps of linear learning-rate warm-up from 0."
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Cosine schedule floor as a fraction of the peak rate."
    )
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
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "auto", description="Numeric precision; auto = bf16-mixed on CUDA, 32-true otherwise."
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
    deterministic: bool = Field(
        False, description="Force deterministic kernels (slower on GPU; CPU runs repeat anyway)."
    )
    float32_matmul_precision: Literal["highest", "high", "medium"] = Field(
        "high", description="torch float32 matmul precision (high allows TF32 on GPUs)."
    )
    log_every_n_steps: int = Field(50, ge=1, description="Log training metrics every N steps.")
    progress_bar: bool = Field(True, description="Show a progress bar while training.")


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


class PretrainingConfig(_Section):
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
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps before cosine decay.")
    max_epochs: int = Field(10, ge=1, description="Passes over the training windows.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many steps; -1 = no limit.")
    gradient_clip: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this value; null disables clipping."
    )
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "auto", description="Numeric precision; auto = bf16-mixed on CUDA, 32-true otherwise."
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="Device type passed to the Lightning Trainer."
    )
    devices: int | str = Field("auto", description="Devices per node: a count or 'auto'.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = main process).")
    checkpoint_dir: Path = Field(
        Path("outputs/pretrain"),
        description="Folder for last.ckpt, backbone.pt, config.yaml and metrics.",
    )
    log_every_n_steps: int = Field(10, ge=1, description="Log the pretraining loss every N steps.")
    progress_bar: bool = Field(True, description="Show a progress bar while pretraining.")


BaselineName = Literal["buy_and_hold", "momentum", "mean_reversion", "ridge", "lightgbm"]
#: Every baseline, in the order the reports list them.
BASELINE_NAMES: tuple[BaselineName, ...] = (
    "buy_and_hold",
    "momentum",
    "mean_reversion",
    "ridge",
    "lightgbm",
)


class EvaluationConfig(_Section):
    """Backtest costs, baselines, walk-forward folds and bootstrap intervals (docs/evaluation.md)."""

    cost_bps: float = Field(
        5.0, ge=0, description="Proportional cost in basis points per unit of |Δposition|."
    )
    baselines: list[BaselineName] = Field(
        default_factory=lambda: list(BASELINE_NAMES),
        description="Baselines run beside the model on the same splits and costs.",
    )
    momentum_lookback: int = Field(
        20, ge=1, description="momentum: position = sign of the past L-bar return."
    )
    mean_reversion_window: int = Field(
        20, ge=2, description="mean_reversion: bars of the rolling mean and std of the close."
    )
    baseline_features: list[str] | None = Field(
        None, description="Features of the ridge/lightgbm baselines; null = the default set."
    )
    ridge_alpha: float = Field(1.0, gt=0, description="ridge: L2 penalty of the regression.")
    lightgbm_estimators: int = Field(
        100, ge=1, description="lightgbm: boosting rounds of the gradient-boosted trees."
    )
    lightgbm_learning_rate: float = Field(
        0.05, gt=0, description="lightgbm: shrinkage of each boosting round."
    )
    lightgbm_leaves: int = Field(15, ge=2, description="lightgbm: leaves per tree.")
    forecast_scale: float = Field(
        1.0,
        gt=0,
        description="ML baselines: position = clip(forecast / (scale × std of train forecasts)).",
    )
    train_window: int = Field(
        252, ge=1, description="Walk-forward: bars in each fold's training window."
    )
    test_window: int = Field(63, ge=1, description="Walk-forward: bars in each fold's test window.")
    step: int | None = Field(
        None, ge=1, description="Walk-forward: bars between fold starts; null = test_window."
    )
    embargo: int = Field(
        1, ge=0, description="Walk-forward: bars skipped between training and test windows."
    )
    expanding: bool = Field(
        False, description="Walk-forward: training windows grow from the first bar."
    )
    regime_column: str | None = Field(
        "regime", description="Predictions column of regime labels for per-regime metrics."
    )
    bootstrap_reps: int = Field(
        1000, ge=10, description="Stationary-bootstrap replications for confidence intervals."
    )
    bootstrap_level: float = Field(
        0.95, gt=0, lt=1, description="Confidence level of the percentile intervals."
    )
    bootstrap_block: float | None = Field(
        None, gt=0, description="Mean block length in bars; null = Politis–White optimal."
    )
    bootstrap_seed: int = Field(0, ge=0, description="Seed of the bootstrap resamples.")


class GuardrailsConfig(_Section):
    """Risk limits applied to target positions before they trade (docs/evaluation.md)."""

    max_position: float | None = Field(
        1.0, gt=0, description="Cap on |position| of any one symbol; null = no cap."
    )
    max_gross: float | None = Field(
        None, gt=0, description="Cap on mean |position| across symbols at a bar; null = no cap."
    )
    max_net: float | None = Field(
        None, gt=0, description="Cap on |mean position| across symbols at a bar; null = no cap."
    )
    max_turnover: float | None = Field(
        None, gt=0, description="Cap on mean |Δposition| across symbols per bar; null = no cap."
    )
    max_sector_gross: float | None = Field(
        None, gt=0, description="Cap on a sector's share of gross exposure; null = no cap."
    )
    sector_caps: dict[str, float] = Field(
        default_factory=dict, description="Per-sector gross caps overriding max_sector_gross."
    )
    cvar_limit: float | None = Field(
        None, gt=0, description="De-risk when the rolling CVaR loss per bar exceeds this."
    )
    cvar_window: int = Field(63, ge=5, description="Bars of past strategy returns in the CVaR.")
    cvar_alpha: float = Field(0.05, gt=0, lt=1, description="Tail share averaged by the CVaR.")
    cvar_derisk: float = Field(
        0.5, ge=0, le=1, description="Position multiplier while the CVaR limit is breached."
    )
    drawdown_stop: float | None = Field(
        None, gt=0, lt=1, description="Flatten when the strategy's drawdown exceeds this."
    )
    drawdown_resume: float = Field(
        0.0, ge=0, lt=1, description="Resume once the drawdown is back above -this (0 = new peak)."
    )
    drawdown_stop_bars: int | None = Field(
        None, ge=1, description="Stay flat exactly this many bars instead of until recovery."
    )


class SimulationConfig(_Section):
    """Execution simulator: costs, spread, impact, fills, latency, funding, limits, stress."""

    enabled: bool = Field(
        False, description="Backtest through the execution simulator, not the plain convention."
    )
    cost_bps: float = Field(
        5.0, ge=0, description="Commission in basis points per unit of |fill| (position units)."
    )
    fixed_cost: float = Field(
        0.0, ge=0, description="Fixed charge in account currency for every non-zero fill."
    )
    capital: float = Field(
        1_000_000.0, gt=0, description="Account capital in currency, split equally over symbols."
    )
    half_spread_bps: float = Field(
        0.0, ge=0, description="Half the quoted spread in basis points, paid per unit traded."
    )
    spread_vol_mult: float = Field(
        0.0, ge=0, description="Extra half-spread per unit traded, as a multiple of bar volatility."
    )
    impact_coef: float = Field(
        0.0,
        ge=0,
        description="Square-root impact: cost per unit traded = coef·σ·sqrt(notional/ADV).",
    )
    participation_cap: float | None = Field(
        None, gt=0, description="Max share of a bar's dollar volume filled; the rest carries over."
    )
    latency_bars: list[int] = Field(
        default_factory=lambda: [0], description="Bars between a decision and its fill (buckets)."
    )
    latency_probs: list[float] | None = Field(
        None, description="Probability of each latency bucket; null = all equally likely."
    )
    borrow_bps: float = Field(
        0.0, ge=0, description="Annual borrow cost in bps on short exposure, charged every bar."
    )
    leverage_funding_bps: float = Field(
        0.0, ge=0, description="Annual financing in bps on |position| above 1 (levered part)."
    )
    funding_column: str = Field(
        "funding_rate", description="Predictions column of per-bar funding paid by longs, if any."
    )
    volume_column: str = Field(
        "dollar_volume", description="Predictions column of each bar's traded value in currency."
    )
    volatility_column: str = Field(
        "volatility", description="Predictions column of per-bar return volatility, if any."
    )
    vol_window: int = Field(
        20, ge=2, description="Bars of past realised returns in σ when no volatility column."
    )
    adv_window: int = Field(20, ge=1, description="Bars of past dollar volume averaged into ADV.")
    max_position: float | None = Field(
        None, gt=0, description="Cap on |target position| of any one symbol; null = no cap."
    )
    max_gross: float | None = Field(
        None, gt=0, description="Cap on gross leverage sum|target| / symbols; null = no cap."
    )
    device: str = Field("cpu", description="Torch device of the simulation: cpu, cuda, cuda:1.")
    seed: int = Field(0, ge=0, description="Seed of latency draws and stress scenarios.")
    scenarios: int = Field(0, ge=0, description="Stress scenarios to simulate (0 = none).")
    scenario_resample: bool = Field(
        True, description="Stress paths resample bars in stationary blocks (false = history)."
    )
    scenario_block: float | None = Field(
        None, gt=0, description="Mean block length in bars; null = Politis-White optimal."
    )
    scenario_vol_scale: float = Field(
        1.0, gt=0, description="Stress paths multiply every realised return by this factor."
    )
    scenario_crash: float | None = Field(
        None, gt=-1, lt=0, description="Inject one bar per path where every symbol loses this."
    )
    scenario_chunk: int = Field(
        128, ge=1, description="Scenarios simulated together (bounds memory)."
    )
    percentiles: list[float] = Field(
        default_factory=lambda: [5.0, 50.0, 95.0],
        description="Percentiles of the scenario metrics that are reported.",
    )

    @model_validator(mode="after")
    def _check_latency(self) -> SimulationConfig:
        if not self.latency_bars or min(self.latency_bars) < 0:
            raise ValueError(
                f"simulation.latency_bars must be non-empty bar counts >= 0, got {self.latency_bars}"
            )
        probs = self.latency_probs
        if probs is not None and (
            len(probs) != len(self.latency_bars) or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-9
        ):
            raise ValueError(
                f"simulation.latency_probs {probs} must have one probability >= 0 per "
                f"latency_bars bucket {self.latency_bars} and sum to 1"
            )
        if any(not 0 < q < 100 for q in self.percentiles):
            raise ValueError(
                f"simulation.percentiles must lie strictly between 0 and 100, got {self.percentiles}"
            )
        return self


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


class Config(_Section):
    """The whole configuration tree. Each section belongs to one layer of the package."""

    seed: int = Field(7, description="Global random seed (data order, initialisation, sampling).")
    data: DataConfig = Field(default_factory=DataConfig, description="Data source and reading.")
    features: FeaturesConfig = Field(
        default_factory=FeaturesConfig, description="Feature selection and parameters."
    )
    windows: WindowsConfig = Field(
        default_factory=WindowsConfig, description="Tensors, sliding windows and purged splits."
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Backbone, head and their sizes."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Supervised training and checkpoints."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment loggers (CSV, TensorBoard, W&B)."
    )
    pretraining: PretrainingConfig = Field(
        default_factory=PretrainingConfig, description="Self-supervised backbone pretraining."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Costs, baselines, walk-forward, bootstrap."
    )
    guardrails: GuardrailsConfig = Field(
        default_factory=GuardrailsConfig, description="Risk limits on target positions."
    )
    simulation: SimulationConfig = Field(
        default_factory=SimulationConfig, description="Execution simulator and stress scenarios."
    )
    diagnostics: DiagnosticsConfig = Field(
        default_factory=DiagnosticsConfig, description="Training diagnostics and their warnings."
    )
    curriculum: CurriculumConfig = Field(
        default_factory=CurriculumConfig, description="Window and horizon growth over epochs."
    )


# --------------------------------------------------------------------------------------
# Loading, overrides and saving
# --------------------------------------------------------------------------------------


def _known_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Field names of the sub-model reached by ``path`` (best effort, for hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            known = _known_keys(Config, loc[:-1])
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (
                f" — did you mean `{'.'.join([*map(str, loc[:-1]), guess[0]])}`?" if guess else ""
            )
            lines.append(
                f"  unknown option `{dotted}`{hint} Known options here: {', '.join(known)}."
            )
        else:
            lines.append(
                f"  `{dotted}`: {item['msg']} (got {item.get('input')!r})"
                if dotted
                else f"  {item['msg']}"
            )
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain mapping into a :class:`Config`, with readable errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {raw!r}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: `{part}` is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set data.sqlite_path=market.db"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key before '=' is empty")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key, value)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist — pass an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        source = str(path)
    raw = apply_overrides(raw, overrides)
    if overrides:
        source += " + --set " + " ".join(overrides)
    return config_from_dict(raw, source)


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML-able types."""
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    tmp.replace(path)
    return path


def field_help(model: type[BaseModel], name: str) -> str:
    """The description of a config field, for reuse as CLI ``--help`` text."""
    info = model.model_fields[name]
    default = info.default
    return f"{info.description} [config: default {default!r}]"
