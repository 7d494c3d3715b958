"""``state_space`` — a residual stack of gated diagonal state-space layers.

No attention: every block mixes time with a :class:`GatedSSMMixer` (an S4D diagonal
SSM, Gu et al. 2022, behind a SiLU gate, in the spirit of H3/Mamba's gated SSM blocks)
and then mixes channels with a SwiGLU feed-forward, each in a pre-norm residual branch.
The SSM is applied as an FFT convolution, so a block costs O(T log T) time and O(T)
memory in the sequence length T (no T×T score matrix): the backbone for long windows
(thousands of intraday bars) where attention's quadratic cost bites.
``(B, T, F) -> (B, T, d_model)``, causal over ``T``.
"""

from __future__ import annotations

from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import (
    GatedSSMMixer,
    InputEmbedding,
    SwiGLU,
    make_norm,
    run_blocks,
)
from market_nn_plus_ultra.models.lookback import split_lookback
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = ["StateSpaceBlock", "StateSpaceModel", "build_state_space"]


class StateSpaceBlock(nn.Module):
    """``x += ssm(n(x)); x += ffn(n(x))`` (pre-norm): time mixing, then channel mixing."""

    def __init__(self, cfg: ModelConfig, span: int | None = None) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_ssm, self.norm_ffn = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.ssm = GatedSSMMixer(d, cfg.ssm_state_dim, cfg.dropout, span)
        self.ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ssm(self.norm_ssm(x))  # (B, T, D)
        return x + self.ffn(self.norm_ffn(x))  # (B, T, D)


class StateSpaceModel(nn.Module):
    """Input embedding → ``cfg.depth`` :class:`StateSpaceBlock` s → final norm.

    Uses ``d_model``, ``depth``, ``ssm_state_dim``, ``ff_mult``, ``dropout``, ``norm``,
    ``patch_size``, ``market_state_embedding`` and ``activation_checkpointing``.
    """

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.embed = InputEmbedding(
            n_features,
            cfg.d_model,
            cfg.patch_size,
            cfg.num_regimes if cfg.market_state_embedding else None,
            cfg.dropout,
        )
        span = None
        if cfg.receptive_field is not None:  # the SSM kernels share the look-back
            where = f"{cfg.depth} state-space blocks"
            span = split_lookback(cfg.receptive_field, 0, cfg.depth, where)
        self.blocks = nn.ModuleList(StateSpaceBlock(cfg, span) for _ in range(cfg.depth))
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.checkpointing = cfg.activation_checkpointing

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` (+ optional market state ``(B, T)`` tensors) → ``(B, T, D)``."""
        h = self.embed(x, market_state)  # (B, P, D), P = T / patch_size
        h = run_blocks(self.blocks, h, self.checkpointing and self.training)
        return self.embed.unpatch(self.norm(h), x.shape[1])  # (B, T, D)


@register_backbone("state_space")
def build_state_space(cfg: ModelConfig, n_features: int) -> StateSpaceModel:
    """Gated diagonal-SSM blocks with SwiGLU feed-forwards: O(T log T), no attention."""
    return StateSpaceModel(cfg, n_features)
