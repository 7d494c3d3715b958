"""Input embeddings shared by the backbones: features (and market state) → tokens.

``InputEmbedding`` = a linear (patch) embedding of the features plus, when
``model.market_state_embedding`` is on, :class:`MarketStateEmbedding` of the regime
label and the volatility at each step. :class:`Dropout` (used here and by every block in
:mod:`~market_nn_plus_ultra.models.layers`) is ``nn.Dropout`` with a faster CPU mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Dropout",
    "InputEmbedding",
    "MarketStateEmbedding",
    "PatchEmbedding",
    "dropout",
    "eager_cpu",
    "keep_mask",
]


def eager_cpu(x: Tensor) -> bool:
    """True for an eager float32/float64 CPU tensor outside autocast and ``torch.compile``:
    where the layers' hand-written CPU paths (dropout mask, norm, attention) run."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """float32 ``shape`` tensor of independent draws: 1 with probability ``1 − p``, else 0.

    Each element reads 32 bits of one ``random_`` fill of 64-bit words from torch's
    generator (so ``torch.manual_seed`` fixes the mask) and is kept when those bits, as a
    signed integer (compared in float32), are at least ``−2³¹ + p · 2³²``: kept with
    probability ``1 − p`` to within 2⁻²⁴. On CPU this is 3–4× faster than ``bernoulli_``,
    which outside Intel's MKL path draws element by element.
    """
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device)
    bits = words.random_(-(2**63), None).view(torch.int32)[:n].view(shape)  # uniform int32
    return bits.to(torch.float32).ge_(-(2.0**31) + p * 2.0**32)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)``: each element zeroed with probability ``p``, the rest
    scaled by ``1 / (1 − p)``. On CPU the mask comes from :func:`keep_mask` — the same
    distribution as ``F.dropout``, another random stream; elsewhere, under
    ``torch.compile`` and for ``p`` outside (0, 1) it is ``F.dropout`` itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p, x.device).mul_(1.0 / (1.0 - p)).to(x.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (a faster mask on CPU, same distribution)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


class MarketStateEmbedding(nn.Module):
    """Embeds ``{"regime": LongTensor (B, T), "volatility": FloatTensor (B, T)}`` into
    ``(B, T, D)``: a learned vector per regime label (ids in ``0 .. num_regimes-1``)
    plus an MLP of log-volatility. Either key may be absent; the embeddings start small
    so switching the option on does not disturb a pretrained backbone much."""

    def __init__(self, num_regimes: int, d_model: int) -> None:
        super().__init__()
        self.regime = nn.Embedding(num_regimes, d_model)
        nn.init.normal_(self.regime.weight, std=0.02)
        self.volatility = nn.Sequential(
            nn.Linear(1, d_model), nn.SiLU(), nn.Linear(d_model, d_model)
        )

    def forward(self, market_state: dict[str, Tensor]) -> Tensor:
        unknown = sorted(set(market_state) - {"regime", "volatility"})
        if unknown or not market_state:
            raise ValueError(
                f"market_state keys {unknown or '{}'} not understood — pass 'regime' "
                "(LongTensor [B, T]) and/or 'volatility' (FloatTensor [B, T])"
            )
        # Every parameter takes part in every forward, even when a key is absent: a
        # branch left out of the graph gets no gradient, and DistributedDataParallel
        # (without find_unused_parameters) then fails at the second step. The absent
        # branch is added times 0 — a (1, 1, D) term, exact zero, negligible cost.
        if "regime" in market_state:
            out = self.regime(market_state["regime"].long())  # (B, T, D)
        else:
            out = 0.0 * self.regime.weight[:1].unsqueeze(0)  # (1, 1, D)
        if "volatility" in market_state:
            vol = market_state["volatility"].float().clamp_min(1e-6).log()  # (B, T)
            out = out + self.volatility(vol.unsqueeze(-1))  # (B, T, D)
        else:
            dummy = self.regime.weight.new_zeros(1, 1, 1)  # (1, 1, 1)
            out = out + 0.0 * self.volatility(dummy)  # (1, 1, D)
        return out


class PatchEmbedding(nn.Module):
    """Linear embedding of non-overlapping patches of ``patch_size`` steps.

    The sequence is left-padded so the last patch ends at the last step. ``unpatch`` maps
    token outputs back to steps causally: step ``t`` gets the output of the last patch
    that ended at or before ``t`` (zeros before the first one), never a patch still open.
    """

    def __init__(self, n_features: int, d_model: int, patch_size: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(n_features * patch_size, d_model)

    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, (-x.shape[1]) % self.patch_size, 0))  # (B, T_pad, C)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, F) -> (B, ceil(T / patch_size), D)``."""
        if self.patch_size == 1:
            return self.proj(x)
        x = self._pad(x)
        B, T, C = x.shape
        return self.proj(x.reshape(B, T // self.patch_size, self.patch_size * C))  # (B, P, D)

    def pool(self, steps: Tensor) -> Tensor:
        """Per-step ``(B, T, D)`` → per-patch ``(B, P, D)``: the value at each patch's end."""
        if self.patch_size == 1:
            return steps
        return self._pad(steps)[:, self.patch_size - 1 :: self.patch_size]  # (B, P, D)

    def unpatch(self, h: Tensor, seq_len: int) -> Tensor:
        """Per-patch ``(B, P, D)`` → per-step ``(B, seq_len, D)``, causally."""
        if self.patch_size == 1:
            return h
        pad = (-seq_len) % self.patch_size
        last_done = (torch.arange(seq_len, device=h.device) + pad + 1) // self.patch_size
        h = F.pad(h, (0, 0, 1, 0))  # (B, 1 + P, D): index 0 = "no patch finished yet"
        return h[:, last_done]  # (B, T, D)


class InputEmbedding(nn.Module):
    """Features (and optional market state) → token sequence, shared by the backbones."""

    def __init__(
        self,
        n_features: int,
        d_model: int,
        patch_size: int = 1,
        num_regimes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch = PatchEmbedding(n_features, d_model, patch_size)
        self.market = None if num_regimes is None else MarketStateEmbedding(num_regimes, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``(B, T, F)`` → ``(B, P, D)``; market state is ignored when not enabled."""
        h = self.patch(x)  # (B, P, D)
        if self.market is not None and market_state is not None:
            h = h + self.patch.pool(self.market(market_state))
        return self.drop(h)

    def unpatch(self, h: Tensor, seq_len: int) -> Tensor:
        return self.patch.unpatch(h, seq_len)
