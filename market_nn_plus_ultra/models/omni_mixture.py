"""``omni_mixture`` — fine-grained mixers with periodic cross-scale attention.

The fine sequence runs through cheap per-step layers (dilated causal convolution, gated
diagonal SSM, SwiGLU). Every ``cfg.cross_every`` layers a :class:`CrossScaleBlock`
pools the fine sequence into a coarse token at *every* step ``p`` (a learned projection
of the ``c = cfg.coarse_factor`` steps ``p − c + 1 .. p``: a causal convolution of
width ``c``), lets each coarse token attend to the earlier coarse tokens of its residue
class (``p − c, p − 2c, …``: the non-overlapping blocks ending at ``p``), and lets
every fine step ``t`` attend to the coarse tokens ``t, t − c, t − 2c, …`` plus a learned
null key (a step may read nothing from the coarse path). Both attentions run over the
``c`` classes as interleaved causal sequences (``is_causal``, flash-capable), through
the residue-class helpers shared with ``multi_scale``
(:func:`~market_nn_plus_ultra.models.multi_scale.residue_attention`).

Causality and position invariance: a coarse token summarises steps up to its own, so it
is visible from its last bar on, and the blocks a step reads end at the step itself, not
at a grid counted from either end of the sequence. With ``cfg.receptive_field = R``
every time-mixing layer gets a span (:func:`lookback_spans`) and step ``t`` reads rows
``t − R + 1 .. t`` only, the same function at every ``t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import (
    CausalSelfAttention,
    DilatedCausalConv,
    GatedSSMMixer,
    InputEmbedding,
    SwiGLU,
    make_norm,
    run_blocks,
)
from market_nn_plus_ultra.models.lookback import split_lookback
from market_nn_plus_ultra.models.multi_scale import from_residues, residue_attention, to_residues
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = ["CrossScaleBlock", "FineBlock", "OmniMixture", "build_omni_mixture", "lookback_spans"]


def lookback_spans(cfg: ModelConfig) -> tuple[int | None, int | None]:
    """Span of every fine SSM (rows) and of every cross-scale attention (coarse steps),
    so the stack reads at most ``cfg.receptive_field`` rows; ``(None, None)`` without one.

    The convolutions (``(conv_kernel − 1) · dilation`` rows each) and the poolings
    (``coarse_factor − 1`` rows each) are fixed; the fine SSMs and the two attentions of
    every cross-scale block share the rest (:func:`split_lookback`), a coarse span of
    ``S`` steps reading ``(S − 1) · coarse_factor`` rows.
    """
    R, c = cfg.receptive_field, cfg.coarse_factor
    if R is None:
        return None, None
    n_cross = cfg.depth // cfg.cross_every
    convs = sum(
        (cfg.conv_kernel - 1) * cfg.dilations[i % len(cfg.dilations)] for i in range(cfg.depth)
    )
    where = (
        f"{cfg.depth} omni_mixture blocks and {n_cross} cross-scale blocks (the fixed rows "
        f"include their {c}-step pooling; a lower model.coarse_factor or a higher "
        "model.cross_every also helps)"
    )
    span = split_lookback(R, convs + n_cross * (c - 1), cfg.depth + 2 * n_cross, where)
    return span, 1 + (span - 1) // c


class FineBlock(nn.Module):
    """``x += conv(n(x)); x += ssm(n(x)); x += ffn(n(x))`` — per-step, pre-norm."""

    def __init__(self, cfg: ModelConfig, dilation: int, span: int | None = None) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(3))
        self.mixers = nn.ModuleList(
            [
                DilatedCausalConv(d, cfg.conv_kernel, dilation, cfg.dropout),
                GatedSSMMixer(d, cfg.ssm_state_dim, cfg.dropout, span),
                SwiGLU(d, cfg.ff_mult, cfg.dropout),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = x + mixer(norm(x))  # (B, T, D)
        return x


class CrossScaleBlock(nn.Module):
    """Fine steps attend to a causally pooled, self-attended coarse token at every step.

    ``span`` (coarse steps) bounds both attentions: a coarse token reads the ``span``
    tokens of its class ending at it, a fine step the ``span`` ending at its own step.
    """

    def __init__(self, cfg: ModelConfig, span: int | None = None) -> None:
        super().__init__()
        d, self.factor, self.n_heads, self.dropout = (
            cfg.d_model,
            cfg.coarse_factor,
            cfg.n_heads,
            cfg.dropout,
        )
        self.span = span
        self.pool_norm = make_norm(cfg.norm, d)
        self.pool = nn.Linear(self.factor * d, d)  # learned summary of the last c steps
        self.coarse_norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(2))
        self.coarse_attn = CausalSelfAttention(d, cfg.n_heads, cfg.dropout, cfg.max_seq_len, span)
        self.coarse_ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)
        self.null = nn.Parameter(torch.zeros(1, 1, d))  # the "read nothing" key
        self.q_norm, self.kv_norm = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def coarse(self, x: Tensor) -> Tensor:
        """Fine ``(B, T, D)`` → the coarse token at every step, ``(B, T, D)``.

        Token ``p`` is ``pool([x_{p−c+1}, …, x_p])`` (zeros before the first step), then
        a causal transformer block over its residue class ``…, p − 2c, p − c, p``.
        """
        T, D = x.shape[1:]
        c = self.factor
        taps = self.pool.weight.view(D, c, D).transpose(1, 2)  # (D_out, D_in, c), oldest first
        h = F.pad(self.pool_norm(x).transpose(1, 2), (c - 1, 0))  # (B, D, c − 1 + T)
        g = to_residues(F.conv1d(h, taps, self.pool.bias).transpose(1, 2), c)  # (B·c, n, D)
        g = g + self.coarse_attn(self.coarse_norms[0](g))
        g = g + self.coarse_ffn(self.coarse_norms[1](g))  # (B·c, n, D)
        return from_residues(g, c, T)  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        D, H = x.shape[-1], self.n_heads
        coarse = self.coarse(x)  # (B, T, D)
        null = self.kv(self.kv_norm(self.null.to(coarse.dtype)))  # (1, 1, 2D)
        null_k, null_v = null.view(1, 2, H, 1, D // H).unbind(1)  # 2 x (1, H, 1, hd)
        y = residue_attention(
            self.q(self.q_norm(x)),  # (B, T, D)
            self.kv(self.kv_norm(coarse)),  # (B, T, 2D)
            self.factor,
            (null_k, null_v),
            self.span,
            self.dropout if self.training else 0.0,
            self.__dict__.setdefault("_mask_cache", {}),  # plain attribute: no state
        )  # (B, T, D)
        return x + self.drop(self.proj(y))


class OmniMixture(nn.Module):
    """Embedding → fine blocks, with a cross-scale block after every ``cross_every``."""

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
        fine_span, coarse_span = lookback_spans(cfg)
        blocks: list[nn.Module] = []
        for i in range(cfg.depth):
            blocks.append(FineBlock(cfg, cfg.dilations[i % len(cfg.dilations)], fine_span))
            if (i + 1) % cfg.cross_every == 0:
                blocks.append(CrossScaleBlock(cfg, coarse_span))
        self.blocks = nn.ModuleList(blocks)
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.checkpointing = cfg.activation_checkpointing

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` (+ optional market state ``(B, T)`` tensors) → ``(B, T, D)``."""
        h = self.embed(x, market_state)  # (B, P, D)
        h = run_blocks(self.blocks, h, self.checkpointing and self.training)
        return self.embed.unpatch(self.norm(h), x.shape[1])  # (B, T, D)


@register_backbone("omni_mixture")
def build_omni_mixture(cfg: ModelConfig, n_features: int) -> OmniMixture:
    """Fine conv/SSM layers with cross-scale attention into a causal coarse sequence."""
    return OmniMixture(cfg, n_features)
