"""``multi_scale`` — one encoder per time scale, fused by causal cross-attention.

The fine encoder (scale 1: ``cfg.depth`` hybrid blocks — rotary attention, dilated
conv, gated SSM, SwiGLU) reads every token. Each coarser scale ``k`` in
``cfg.scales[1:]`` mean-pools the fine encoder's output over completed blocks of ``k``
tokens, runs its own causal transformer (``cfg.scale_depth`` blocks of rotary attention
+ SwiGLU) over the coarse sequence, and every fine token then cross-attends to the
coarse tokens it may see, through a sigmoid-gated residual. ``(B, T, F) -> (B, T, D)``.

Causality. Coarse block ``j`` of scale ``k`` covers tokens ``j·k .. (j+1)·k - 1``
(counted from the first token, so the blocks never move when bars are appended), and
its token becomes visible at fine position ``(j+1)·k - 1`` — once its last bar has
closed. A trailing partial block is dropped. Fine position ``t`` therefore sees coarse
tokens ``0 .. (t+1)//k - 1`` plus a learned null key/value, so a position before the
first completed block reads the null token instead of an empty (NaN) softmax.
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
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = [
    "CoarseBlock",
    "CrossScaleFusion",
    "MultiScaleEncoder",
    "build_multi_scale",
    "causal_block_mean",
    "coarse_visibility",
]


def causal_block_mean(h: Tensor, k: int) -> Tensor:
    """Mean of ``h (B, T, D)`` over each completed block of ``k`` steps → ``(B, T // k, D)``.

    Block ``j`` averages steps ``j·k .. (j+1)·k - 1``; the ``T mod k`` trailing steps
    belong to a block still open and are left out.
    """
    B, T, D = h.shape
    n = T // k
    return h[:, : n * k].reshape(B, n, k, D).mean(dim=2)  # (B, n, D)


def coarse_visibility(seq_len: int, k: int, device: torch.device | None = None) -> Tensor:
    """Bool mask ``(T, 1 + T // k)``: may fine step ``t`` read key ``m``?

    Key 0 is the null token (always visible); key ``m = j + 1`` is coarse block ``j``,
    visible from step ``(j+1)·k - 1`` on, i.e. when ``m <= (t + 1) // k``.
    """
    closed = (torch.arange(seq_len, device=device) + 1) // k  # (T,) blocks closed by t
    keys = torch.arange(seq_len // k + 1, device=device)  # (1 + n,)
    return keys[None, :] <= closed[:, None]  # (T, 1 + n)


class CoarseBlock(nn.Module):
    """``x += attn(n(x)); x += ffn(n(x))`` — a pre-norm causal transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(2))
        self.attn = CausalSelfAttention(d, cfg.n_heads, cfg.dropout, cfg.max_seq_len)
        self.ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norms[0](x))  # (B, n, D)
        return x + self.ffn(self.norms[1](x))  # (B, n, D)


class CrossScaleFusion(nn.Module):
    """Fine tokens read one coarse sequence: ``x += σ(W_g n(x)) ⊙ attn(n(x), coarse)``,
    then ``x += ffn(n(x))``. The mask is :func:`coarse_visibility` for this scale."""

    def __init__(self, cfg: ModelConfig, k: int) -> None:
        super().__init__()
        d, self.k, self.n_heads, self.dropout = cfg.d_model, k, cfg.n_heads, cfg.dropout
        hd = d // cfg.n_heads
        self.q_norm, self.kv_norm = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        # the "no block closed yet" key/value, learned in projected space (projecting a
        # normalised zero vector would give it a huge gradient through the norm)
        self.null_k = nn.Parameter(torch.randn(1, cfg.n_heads, 1, hd) * 0.02)
        self.null_v = nn.Parameter(torch.randn(1, cfg.n_heads, 1, hd) * 0.02)
        self.proj = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, d)
        self.ffn_norm = make_norm(cfg.norm, d)
        self.ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        """``x (B, T, D)`` fine, ``coarse (B, T // k, D)`` → fused ``(B, T, D)``."""
        B, T, D = x.shape
        H, n = self.n_heads, coarse.shape[1]
        nx = self.q_norm(x)
        q = self.q(nx).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
        kv = self.kv(self.kv_norm(coarse)).view(B, n, 2, H, D // H)  # (B, n, 2, H, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, n, hd)
        k = torch.cat([self.null_k.expand(B, H, 1, D // H).to(k.dtype), k], dim=2)
        v = torch.cat([self.null_v.expand(B, H, 1, D // H).to(v.dtype), v], dim=2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=coarse_visibility(T, self.k, x.device),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        x = x + torch.sigmoid(self.gate(nx)) * self.drop(self.proj(y))
        return x + self.ffn(self.ffn_norm(x))  # (B, T, D)


class MultiScaleEncoder(nn.Module):
    """Embedding → fine encoder → per coarse scale: pool, encode, fuse → final norm."""

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.scales = list(cfg.scales[1:])  # the coarse ones; scale 1 is the fine encoder
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
            )
            for i in range(cfg.depth)
        )
        self.pool_norms = nn.ModuleList(make_norm(cfg.norm, cfg.d_model) for _ in self.scales)
        self.coarse = nn.ModuleList(
            nn.ModuleList(CoarseBlock(cfg) for _ in range(cfg.scale_depth)) for _ in self.scales
        )
        self.fusions = nn.ModuleList(CrossScaleFusion(cfg, k) for k in self.scales)
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.checkpointing = cfg.activation_checkpointing

    def encode_scale(self, i: int, fine: Tensor) -> Tensor:
        """Coarse sequence ``(B, T // k, D)`` of scale ``self.scales[i]`` from the fine
        encoder's output ``(B, T, D)`` (empty while no block has closed)."""
        c = causal_block_mean(self.pool_norms[i](fine), self.scales[i])  # (B, n, D)
        if c.shape[1] == 0:  # static shape, no host sync: nothing to encode yet
            return c
        return run_blocks(self.coarse[i], c, self.checkpointing and self.training)

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
