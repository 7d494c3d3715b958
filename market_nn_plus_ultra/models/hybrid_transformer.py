"""``hybrid_transformer`` — the default backbone.

Each block mixes time three ways before its feed-forward, every mixer in a pre-norm
residual branch: rotary causal attention (global, content-based), a dilated causal
convolution (local patterns; the dilation cycles through ``cfg.dilations`` block by
block, so a stack sees exponentially far back) and a gated diagonal SSM (smooth long
memory at O(T log T)). ``(B, T, F) -> (B, T, d_model)``, causal over ``T``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import (
    CausalSelfAttention,
    DilatedCausalConv,
    GatedSSMMixer,
    InputEmbedding,
    RMSNorm,
    SwiGLU,
    make_norm,
    run_blocks,
)
from market_nn_plus_ultra.models.lookback import split_lookback
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = ["HybridBlock", "HybridTransformer", "build_hybrid_transformer"]

# mixers whose forward takes ``scale``: a per-channel factor on their input
_SCALES_INPUT = (CausalSelfAttention, DilatedCausalConv, GatedSSMMixer, SwiGLU)


class HybridBlock(nn.Module):
    """``x += attn(n(x)); x += conv(n(x)); x += ssm(n(x)); x += ffn(n(x))`` (pre-norm).

    With RMSNorm each ``n(x) = (x / rms(x)) ⊙ w`` hands its mixer ``x / rms(x)`` and ``w``,
    which the mixer multiplies into its first per-channel weights — the same function,
    one ``(B, T, D)`` multiply (and its backward) fewer per branch.
    """

    def __init__(
        self, cfg: ModelConfig, dilation: int, ffn: nn.Module, span: int | None = None
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(4))
        self.attn = CausalSelfAttention(d, cfg.n_heads, cfg.dropout, cfg.max_seq_len, span)
        self.conv = DilatedCausalConv(d, cfg.conv_kernel, dilation, cfg.dropout)
        self.ssm = GatedSSMMixer(d, cfg.ssm_state_dim, cfg.dropout, span)
        self.ffn = ffn

    def forward(self, x: Tensor) -> Tensor:
        for norm, mixer in zip(self.norms, (self.attn, self.conv, self.ssm, self.ffn), strict=True):
            if isinstance(norm, RMSNorm) and isinstance(mixer, _SCALES_INPUT):
                # the norm's weight folds into the mixer's first weights (same function)
                x = x + mixer(norm.normalize(x), scale=norm.weight)  # (B, T, D)
            else:
                x = x + mixer(norm(x))  # (B, T, D)
        return x


class HybridTransformer(nn.Module):
    """Input embedding → ``cfg.depth`` :class:`HybridBlock` s → final norm.

    ``ffn_factory`` builds each block's feed-forward (default: :class:`SwiGLU`); the
    MoE backbone passes mixture-of-experts layers instead.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        n_features: int,
        ffn_factory: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        if ffn_factory is None:

            def ffn_factory() -> nn.Module:
                return SwiGLU(cfg.d_model, cfg.ff_mult, cfg.dropout)

        self.embed = InputEmbedding(
            n_features,
            cfg.d_model,
            cfg.patch_size,
            cfg.num_regimes if cfg.market_state_embedding else None,
            cfg.dropout,
        )
        dilations = [cfg.dilations[i % len(cfg.dilations)] for i in range(cfg.depth)]
        span = None
        if cfg.receptive_field is not None:  # attention and SSM share what the convs leave
            convs = sum((cfg.conv_kernel - 1) * d for d in dilations)
            where = f"{cfg.depth} hybrid blocks"
            span = split_lookback(cfg.receptive_field, convs, 2 * cfg.depth, where)
        self.blocks = nn.ModuleList(HybridBlock(cfg, d, ffn_factory(), span) for d in dilations)
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.checkpointing = cfg.activation_checkpointing

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` (+ optional market state ``(B, T)`` tensors) → ``(B, T, D)``."""
        h = self.embed(x, market_state)  # (B, P, D), P = T / patch_size
        h = run_blocks(self.blocks, h, self.checkpointing and self.training)
        return self.embed.unpatch(self.norm(h), x.shape[1])  # (B, T, D)


@register_backbone("hybrid_transformer")
def build_hybrid_transformer(cfg: ModelConfig, n_features: int) -> HybridTransformer:
    """Attention + dilated conv + gated SSM blocks with SwiGLU feed-forwards."""
    return HybridTransformer(cfg, n_features)
