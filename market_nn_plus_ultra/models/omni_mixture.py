"""``omni_mixture`` — fine-grained mixers with periodic cross-scale attention.

The fine sequence runs through cheap per-step layers (dilated causal convolution, gated
diagonal SSM, SwiGLU). Every ``cfg.cross_every`` layers a :class:`CrossScaleBlock`
pools the fine sequence into a coarse one (one token per ``cfg.coarse_factor`` steps,
through a learned projection), lets the coarse tokens attend to each other, and lets
every fine step attend to the coarse tokens. Causality: a coarse token only summarises a
*completed* block of fine steps, and step ``t`` only sees coarse tokens whose block ended
at or before ``t`` (plus a learned "nothing finished yet" token, so no row is empty).
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
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = ["CrossScaleBlock", "FineBlock", "OmniMixture", "build_omni_mixture"]


class FineBlock(nn.Module):
    """``x += conv(n(x)); x += ssm(n(x)); x += ffn(n(x))`` — per-step, pre-norm."""

    def __init__(self, cfg: ModelConfig, dilation: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(3))
        self.mixers = nn.ModuleList(
            [
                DilatedCausalConv(d, cfg.conv_kernel, dilation, cfg.dropout),
                GatedSSMMixer(d, cfg.ssm_state_dim, cfg.dropout),
                SwiGLU(d, cfg.ff_mult, cfg.dropout),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = x + mixer(norm(x))  # (B, T, D)
        return x


class CrossScaleBlock(nn.Module):
    """Fine steps attend to a causally pooled, self-attended coarse sequence."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, self.factor, self.n_heads, self.dropout = (
            cfg.d_model,
            cfg.coarse_factor,
            cfg.n_heads,
            cfg.dropout,
        )
        self.pool_norm = make_norm(cfg.norm, d)
        self.pool = nn.Linear(self.factor * d, d)  # learned summary of one completed block
        self.coarse_norms = nn.ModuleList(make_norm(cfg.norm, d) for _ in range(2))
        self.coarse_attn = CausalSelfAttention(d, cfg.n_heads, cfg.dropout, cfg.max_seq_len)
        self.coarse_ffn = SwiGLU(d, cfg.ff_mult, cfg.dropout)
        self.null = nn.Parameter(torch.zeros(1, 1, d))  # key for "no block finished yet"
        self.q_norm, self.kv_norm = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def coarse(self, x: Tensor) -> Tensor:
        """Fine ``(B, T, D)`` → coarse ``(B, P, D)``, ``P = ceil(T / coarse_factor)``.

        The sequence is left-padded so the last block ends at the last step; coarse token
        ``j`` then covers padded steps ``j·c .. j·c + c - 1``.
        """
        B, T, D = x.shape
        h = F.pad(self.pool_norm(x), (0, 0, (-T) % self.factor, 0))  # (B, P·c, D)
        c = self.pool(h.reshape(B, -1, self.factor * D))  # (B, P, D)
        c = c + self.coarse_attn(self.coarse_norms[0](c))
        return c + self.coarse_ffn(self.coarse_norms[1](c))  # (B, P, D)

    def visibility(self, seq_len: int, device: torch.device) -> Tensor:
        """Bool mask ``(T, 1 + P)``: step t may read key k (0 = null token, j+1 = block j)."""
        pad = (-seq_len) % self.factor
        n_coarse = (seq_len + pad) // self.factor
        finished = (torch.arange(seq_len, device=device) + pad + 1) // self.factor  # (T,)
        keys = torch.arange(n_coarse + 1, device=device)  # (1 + P,)
        return keys[None, :] <= finished[:, None]  # (T, 1 + P)

    def additive_mask(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """:meth:`visibility` as an additive ``(T, 1 + P)`` mask (0 or −inf), in ``dtype``.

        The block-causal pattern is not the square ``is_causal`` one, so flash kernels
        cannot take it; an additive mask in the query dtype goes straight to the fused
        memory-efficient / cuDNN kernels without a per-call bool → float conversion.
        Built once per (length, device, dtype, inference mode), then reused.
        """
        key = (seq_len, device, dtype, torch.is_inference_mode_enabled())
        cache = self.__dict__.setdefault("_mask_cache", {})  # plain attribute: no state
        if key not in cache:
            visible = self.visibility(seq_len, device)  # (T, 1 + P)
            mask = torch.zeros(visible.shape, dtype=dtype, device=device)
            cache[key] = mask.masked_fill(~visible, float("-inf"))  # (T, 1 + P)
        return cache[key]

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        H = self.n_heads
        coarse = self.coarse(x)  # (B, P, D)
        keys = torch.cat([self.null.expand(B, 1, D).to(coarse.dtype), coarse], dim=1)
        q = self.q(self.q_norm(x)).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
        kv = self.kv(self.kv_norm(keys)).view(B, -1, 2, H, D // H)  # (B, 1 + P, 2, H, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, 1 + P, hd)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=self.additive_mask(T, x.device, q.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
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
        blocks: list[nn.Module] = []
        for i in range(cfg.depth):
            blocks.append(FineBlock(cfg, cfg.dilations[i % len(cfg.dilations)]))
            if (i + 1) % cfg.cross_every == 0:
                blocks.append(CrossScaleBlock(cfg))
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
