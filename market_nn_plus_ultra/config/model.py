"""Config sections of the models layer: the backbone, the head and the loss."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, model_validator

from ._base import _Section

__all__ = ["LossConfig", "ModelConfig"]


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
    "hybrid_transformer, omni_mixture, moe_transformer, state_space, temporal_fusion, multi_scale"
)

_HEAD_HELP = "regression, action, quantile, dirichlet, quantile_dirichlet"

#: Backbones whose output at every position reads a bounded, start-independent look-back
#: (``model.receptive_field``): the ones ``training.supervision=all`` trains at every
#: position and inference runs in one pass.
SEQUENCE_ARCHITECTURES = (
    "hybrid_transformer",
    "moe_transformer",
    "state_space",
    "omni_mixture",
    "multi_scale",
)


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
    scales: list[int] = Field(
        default_factory=lambda: [1, 8, 40],
        description="multi_scale: tokens (bars when patch_size=1) pooled into one step of "
        "each scale's encoder; strictly ascending, starting with 1 (the fine scale).",
    )
    scale_depth: int = Field(
        2, ge=1, description="multi_scale: transformer blocks in each coarse scale's encoder."
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
    tft_variable_width: int | None = Field(
        None,
        ge=1,
        description="temporal_fusion: width of each input variable's embedding and GRN "
        "(pytorch-forecasting's hidden_continuous_size); null = tft_hidden.",
    )
    receptive_field: int | None = Field(
        None,
        ge=2,
        description="Rows each output position reads (t − R + 1 .. t), the same wherever the "
        "sequence starts; null = the whole sequence. training.supervision=all sets it to "
        "windows.window.",
    )
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
        if self.receptive_field is not None and self.patch_size != 1:
            raise ValueError(
                f"model.receptive_field needs model.patch_size=1 (got {self.patch_size}): "
                "patches move with the sequence's start — set model.patch_size=1 or "
                "training.supervision=last"
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
        sc = self.scales
        if not sc or sc[0] != 1 or any(b <= a for a, b in pairwise(sc)):
            raise ValueError(
                f"model.scales {sc} must start with 1 (the fine scale) and strictly increase, "
                "e.g. [1, 8, 40]"
            )
        qs = self.quantiles
        if not qs or any(not 0.0 < q < 1.0 for q in qs) or qs != sorted(set(qs)):
            raise ValueError(
                f"model.quantiles {qs} must be strictly increasing levels in (0, 1), "
                "e.g. [0.05, 0.5, 0.95]"
            )
        return self
