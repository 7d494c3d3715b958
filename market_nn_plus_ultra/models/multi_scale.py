"""``multi_scale`` — one encoder per time scale, fused by causal cross-attention.

The fine encoder (scale 1: ``cfg.depth`` hybrid blocks — rotary attention, dilated
conv, gated SSM, SwiGLU) reads every token. Each coarser scale ``k`` in
``cfg.scales[1:]`` (default ×8 and ×40) pools the fine encoder's output into a coarse
token at *every* step ``p``: the mean of the ``k`` steps ``p − k + 1 .. p``. A coarse
token's own sequence is its residue class: the tokens at ``p, p − k, p − 2k, …`` (the
non-overlapping ``k``-step blocks ending at ``p``). The ``k`` classes run as ``k``
interleaved sequences through the scale's causal transformer (``cfg.scale_depth`` blocks
of rotary attention + SwiGLU), and every fine step ``t`` cross-attends, through a
sigmoid-gated residual, to the coarse tokens of its own class — ``t, t − k, t − 2k, …``
— plus a learned null key/value (a step may read nothing from the scale).
``(B, T, F) -> (B, T, D)``.

Causality and position invariance. The coarse token at ``p`` becomes visible at ``p``,
once its last bar has closed, and nothing in the coarse path depends on where the
sequence starts: the blocks a step reads end at the step itself, not at a grid counted
from the first (or last) bar. With ``cfg.receptive_field = R`` every time-mixing layer
gets a span (:func:`lookback_spans`), so step ``t`` reads rows ``t − R + 1 .. t`` only,
the same function at every ``t``. Within a window the first ``k − 1`` steps average the
bars they have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.hybrid_transformer import HybridBlock
from market_nn_plus_ultra.models.layers import (
    CausalSelfAttention,
    InputEmbedding,
    SwiGLU,
    make_norm,
    run_blocks,
)
from market_nn_plus_ultra.models.lookback import band_mask, split_lookback
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = [
    "CoarseBlock",
    "CrossScaleFusion",
    "MultiScaleEncoder",
    "build_multi_scale",
    "causal_window_mean",
    "from_residues",
    "lookback_spans",
    "residue_attention",
    "to_residues",
]


def causal_window_mean(h: Tensor, k: int) -> Tensor:
    """Step ``p`` of ``h (B, T, D)`` → mean of steps ``max(0, p − k + 1) .. p``, ``(B, T, D)``.

    Each window is summed on its own (no running sum), so a step's value is the same
    wherever the sequence starts once ``k`` bars are in.
    """
    T = h.shape[1]
    total = F.avg_pool1d(F.pad(h.transpose(1, 2), (k - 1, 0)), k, stride=1)  # (B, D, T)
    have = torch.arange(1, T + 1, device=h.device, dtype=total.dtype).clamp(max=k)  # (T,)
    return (total * (k / have)).transpose(1, 2)  # (B, T, D)


def to_residues(h: Tensor, k: int) -> Tensor:
    """``(B, T, C)`` → ``(B·k, n, C)``, ``n = ceil(T / k)``: row ``b·k + r`` holds steps
    ``r, r + k, r + 2k, …`` of sequence ``b``. Steps past ``T`` are zeros at the end of
    their class, so causal attention never shows them to a real step."""
    B, T, C = h.shape
    n = -(-T // k)
    h = F.pad(h, (0, 0, 0, n * k - T))  # (B, n·k, C)
    return h.view(B, n, k, C).transpose(1, 2).reshape(B * k, n, C)  # (B·k, n, C)


def from_residues(h: Tensor, k: int, seq_len: int) -> Tensor:
    """Inverse of :func:`to_residues`: ``(B·k, n, C)`` → ``(B, seq_len, C)``."""
    Bk, n, C = h.shape
    h = h.view(Bk // k, k, n, C).transpose(1, 2)  # (B, n, k, C)
    return h.reshape(Bk // k, n * k, C)[:, :seq_len]  # (B, T, C)


def residue_attention(
    q: Tensor,
    kv: Tensor,
    k: int,
    null_kv: tuple[Tensor, Tensor],
    span: int | None,
    dropout_p: float,
    mask_cache: dict,
) -> Tensor:
    """Step ``t`` attends to the keys at ``t, t − k, …, t − (span − 1)·k`` and a null key.

    ``q (B, T, D)`` and ``kv (B, T, 2D)`` are projected, ``null_kv`` two ``(1, H, 1, hd)``
    tensors; returns the mixed values ``(B, T, D)``. The classes are laid out as
    ``(B·k, 1 + n)`` sequences whose first key is the null one and whose first query a
    dummy: query ``i + 1`` then reads keys ``0 .. i + 1``, the square ``is_causal``
    pattern that flash kernels take. A span shorter than a class adds an additive band
    (the null key always visible), built once per length, device and dtype.
    """
    B, T, D = q.shape
    H = null_kv[0].shape[1]
    hd = D // H
    qs = F.pad(to_residues(q, k), (0, 0, 1, 0))  # (B·k, 1 + n, D), row 0 the dummy
    n = qs.shape[1] - 1
    qs = qs.view(B * k, 1 + n, H, hd).transpose(1, 2)  # (B·k, H, 1 + n, hd)
    kvs = to_residues(kv, k).view(B * k, n, 2, H, hd).permute(2, 0, 3, 1, 4)  # (2, B·k, H, n, hd)
    nk, nv = (t.to(kvs.dtype).expand(B * k, H, 1, hd) for t in null_kv)
    keys = torch.cat([nk, kvs[0]], dim=2)  # (B·k, H, 1 + n, hd)
    values = torch.cat([nv, kvs[1]], dim=2)  # (B·k, H, 1 + n, hd)
    if span is None or span >= n:
        y = F.scaled_dot_product_attention(
            qs, keys, values, dropout_p=dropout_p, is_causal=True
        )  # (B·k, H, 1 + n, hd)
    else:
        key = (n, q.device, qs.dtype, torch.is_inference_mode_enabled())
        if key not in mask_cache:
            mask = band_mask(1 + n, span, q.device, qs.dtype)  # (1 + n, 1 + n)
            mask[:, 0] = 0.0  # the null key: always visible
            mask_cache[key] = mask
        y = F.scaled_dot_product_attention(
            qs, keys, values, attn_mask=mask_cache[key], dropout_p=dropout_p
        )  # (B·k, H, 1 + n, hd)
    y = y[:, :, 1:].transpose(1, 2).reshape(B * k, n, D)  # (B·k, n, D)
    return from_residues(y, k, T)  # (B, T, D)


def lookback_spans(cfg: ModelConfig) -> tuple[int | None, list[int | None]]:
    """Span (in rows) of every fine attention/SSM and span (in coarse steps) of each
    scale's attention layers, so the stack reads at most ``cfg.receptive_field`` rows.

    The fine encoder and one scale's path share the look-back like
    :func:`~market_nn_plus_ultra.models.lookback.split_lookback` (the convolutions and
    the widest pooling window fixed); the scales run side by side, so each then splits
    what the fine encoder leaves among its own ``scale_depth + 1`` attention layers.
    ``(None, [None, …])`` without a receptive field.
    """
    coarse = list(cfg.scales[1:])
    R = cfg.receptive_field
    if R is None:
        return None, [None] * len(coarse)
    dilations = [cfg.dilations[i % len(cfg.dilations)] for i in range(cfg.depth)]
    convs = sum((cfg.conv_kernel - 1) * d for d in dilations)
    per_path = cfg.scale_depth + 1 if coarse else 0
    widest = max(coarse, default=1) - 1
    where = (
        f"{cfg.depth} multi_scale fine blocks and scales {coarse} (the fixed rows include "
        f"the {widest + 1}-step window mean; smaller model.scales also help)"
    )
    fine = split_lookback(R, convs + widest, 2 * cfg.depth + per_path, where)
    left = R - 1 - convs - 2 * cfg.depth * (fine - 1)  # rows each coarse path may read
    spans = []
    for k in coarse:
        rows = split_lookback(left + 1, k - 1, per_path, f"multi_scale scale {k}")
        spans.append(1 + (rows - 1) // k)
    return fine, spans


class CoarseBlock(nn.Module):
    """``x += attn(n(x)); x += ffn(n(x))`` — a pre-norm causal transformer block."""

    def __init__(self, cfg: ModelConfig, span: int | None = None) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(2))
        self.attn = CausalSelfAttention(d, cfg.n_heads, cfg.dropout, cfg.max_seq_len, span)
        self.ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norms[0](x))  # (B·k, n, D)
        return x + self.ffn(self.norms[1](x))  # (B·k, n, D)


class CrossScaleFusion(nn.Module):
    """Fine tokens read one coarse scale: ``x += σ(W_g n(x)) ⊙ attn(n(x), coarse)``, then
    ``x += ffn(n(x))``; step ``t`` reads the coarse tokens at ``t, t − k, …`` (``span``
    of them, all without a span) and the null key (:func:`residue_attention`)."""

    def __init__(self, cfg: ModelConfig, k: int, span: int | None = None) -> None:
        super().__init__()
        d, self.k, self.span, self.dropout = cfg.d_model, k, span, cfg.dropout
        hd = d // cfg.n_heads
        self.q_norm, self.kv_norm = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        # the "read nothing" key/value, learned in projected space (projecting a
        # normalised zero vector would give it a huge gradient through the norm)
        self.null_k = nn.Parameter(torch.randn(1, cfg.n_heads, 1, hd) * 0.02)
        self.null_v = nn.Parameter(torch.randn(1, cfg.n_heads, 1, hd) * 0.02)
        self.proj = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, d)
        self.ffn_norm = make_norm(cfg.norm, d)
        self.ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        """``x (B, T, D)`` fine, ``coarse (B, T, D)`` this scale's token at every step →
        fused ``(B, T, D)``."""
        nx = self.q_norm(x)
        y = residue_attention(
            self.q(nx),  # (B, T, D)
            self.kv(self.kv_norm(coarse)),  # (B, T, 2D)
            self.k,
            (self.null_k, self.null_v),
            self.span,
            self.dropout if self.training else 0.0,
            self.__dict__.setdefault("_mask_cache", {}),  # plain attribute: no state
        )  # (B, T, D)
        x = x + torch.sigmoid(self.gate(nx)) * self.drop(self.proj(y))
        return x + self.ffn(self.ffn_norm(x))  # (B, T, D)


class MultiScaleEncoder(nn.Module):
    """Embedding → fine encoder → per coarse scale: pool, encode, fuse → final norm."""

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.scales = list(cfg.scales[1:])  # the coarse ones; scale 1 is the fine encoder
        fine_span, coarse_spans = lookback_spans(cfg)
        self.embed = InputEmbedding(
            n_features,
            cfg.d_model,
            cfg.patch_size,
            cfg.num_regimes if cfg.market_state_embedding else None,
            cfg.dropout,
        )
        self.fine = nn.ModuleList(
            HybridBlock(
                cfg,
                cfg.dilations[i % len(cfg.dilations)],
                SwiGLU(cfg.d_model, cfg.ff_mult, cfg.dropout),
                fine_span,
            )
            for i in range(cfg.depth)
        )
        self.pool_norms = nn.ModuleList(make_norm(cfg.norm, cfg.d_model) for _ in self.scales)
        self.coarse = nn.ModuleList(
            nn.ModuleList(CoarseBlock(cfg, span) for _ in range(cfg.scale_depth))
            for span in coarse_spans
        )
        self.fusions = nn.ModuleList(
            CrossScaleFusion(cfg, k, span)
            for k, span in zip(self.scales, coarse_spans, strict=True)
        )
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.checkpointing = cfg.activation_checkpointing

    def encode_scale(self, i: int, fine: Tensor) -> Tensor:
        """Scale ``self.scales[i]``'s encoded token at every step, ``(B, T, D)``, from the
        fine encoder's output ``(B, T, D)``: window means, then the scale's transformer
        over each residue class."""
        k, T = self.scales[i], fine.shape[1]
        c = to_residues(causal_window_mean(self.pool_norms[i](fine), k), k)  # (B·k, n, D)
        c = run_blocks(self.coarse[i], c, self.checkpointing and self.training)
        return from_residues(c, k, T)  # (B, T, D)

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` (+ optional market state ``(B, T)`` tensors) → ``(B, T, D)``."""
        h = self.embed(x, market_state)  # (B, P, D), P = T / patch_size
        fine = run_blocks(self.fine, h, self.checkpointing and self.training)  # (B, P, D)
        h = fine
        for i, fusion in enumerate(self.fusions):
            # every scale pools the same fine encoding, so the coarse encoders are
            # independent of each other; the fusions then stack on the fine stream
            h = fusion(h, self.encode_scale(i, fine))  # (B, P, D)
        return self.embed.unpatch(self.norm(h), x.shape[1])  # (B, T, D)


@register_backbone("multi_scale")
def build_multi_scale(cfg: ModelConfig, n_features: int) -> MultiScaleEncoder:
    """A fine hybrid encoder fused with causal coarse encoders at ``cfg.scales``."""
    return MultiScaleEncoder(cfg, n_features)
