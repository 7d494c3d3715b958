"""TS2Vec-style contrastive pretraining: hierarchical temporal + instance InfoNCE.

Two augmented views of each window (Gaussian jitter, per-feature scaling, random time
masking) go through the backbone. At every level of a max-pooling pyramid over time
(T, T/2, T/4, … 1) their representations are contrasted two ways (Yue et al. 2022,
"TS2Vec: Towards Universal Representation of Time Series", AAAI):

- **instance**: at each time step, a window's two views are a positive pair and the
  other windows of the batch are negatives;
- **temporal**: within a window, the two views of the same step are a positive pair and
  the other steps are negatives (skipped at the top level, which has one step).

Each term is InfoNCE on cosine similarities divided by ``temperature`` (SimCLR's NT-Xent,
Chen et al. 2020), averaged over levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from market_nn_plus_ultra.training.masked import (
    PretrainingModule,
    apply_mask_token,
    sample_time_mask,
    window_batch,
)

__all__ = ["ContrastiveModule", "augment_view", "hierarchical_contrastive_loss", "info_nce"]


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between paired items ``a``/``b`` ``(N, K, C)``.

    In each of the ``N`` groups, ``a[n, k]`` and ``b[n, k]`` are positives and the other
    ``2K - 2`` items of the group negatives. Similarities are cosines / ``temperature``;
    the loss is the cross-entropy of picking the positive, averaged over all ``2NK``
    anchors. Zero when ``K < 2`` (nothing to contrast).
    """
    N, K, _ = a.shape
    if K < 2:
        return a.new_zeros(())
    z = F.normalize(torch.cat([a, b], dim=1), dim=-1)  # (N, 2K, C)
    logits = z @ z.transpose(1, 2) / temperature  # (N, 2K, 2K)
    eye = torch.eye(2 * K, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))  # an item is not its own positive
    idx = torch.arange(2 * K, device=z.device)
    positive = (idx + K) % (2 * K)  # (2K,): a[k] ↔ b[k]
    return F.cross_entropy(logits.reshape(N * 2 * K, 2 * K), positive.repeat(N))


def hierarchical_contrastive_loss(
    z1: Tensor, z2: Tensor, temperature: float, temporal_weight: float = 0.5
) -> Tensor:
    """TS2Vec's loss on the two views' representations ``(B, T, D)``.

    At each level: ``(1 - temporal_weight) · instance + temporal_weight · temporal``,
    then max-pool time by 2 (kernel 2, stride 2); the last level has one step and only
    the instance term. The sum is divided by the number of levels.
    """
    total, levels = z1.new_zeros(()), 0
    while True:
        instance = info_nce(z1.transpose(0, 1), z2.transpose(0, 1), temperature)  # (T, B, D)
        total = total + (1.0 - temporal_weight) * instance
        if z1.shape[1] > 1:
            total = total + temporal_weight * info_nce(z1, z2, temperature)  # (B, T, D)
        levels += 1
        if z1.shape[1] == 1:
            return total / levels
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)  # (B, T/2, D)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)


def augment_view(
    x: Tensor,
    valid: Tensor,
    *,
    jitter_std: float,
    scale_std: float,
    time_mask_prob: float,
    time_mask_fill: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One random view of ``x (B, T, F)``: ``x · s + ε`` with ``s ~ N(1, scale_std)`` per
    (window, feature) and ``ε ~ N(0, jitter_std)`` per value, then steps masked with
    probability ``time_mask_prob`` filled with 0 or the window's feature means.
    Invalid steps (``valid`` False) stay 0."""
    B, T, n = x.shape
    scale = 1.0 + scale_std * torch.randn(B, 1, n, device=x.device, generator=generator)
    noise = jitter_std * torch.randn(B, T, n, device=x.device, generator=generator)
    view = (x * scale + noise) * valid.unsqueeze(-1).to(x.dtype)
    if time_mask_prob > 0:
        masked = sample_time_mask(B, T, time_mask_prob, device=x.device, generator=generator)
        view = apply_mask_token(view, masked & valid, valid, time_mask_fill)
    return view


class ContrastiveModule(PretrainingModule):
    """Backbone trained with TS2Vec's hierarchical contrastive loss (no extra head)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)  # (B, T, F) -> (B, T, D)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """Hierarchical InfoNCE between two augmented views of ``batch["x"]``."""
        x, valid = window_batch(batch)
        cfg = self.pretrain_cfg
        views = [
            augment_view(
                x,
                valid,
                jitter_std=cfg.jitter_std,
                scale_std=cfg.scale_std,
                time_mask_prob=cfg.time_mask_prob,
                time_mask_fill=cfg.time_mask_fill,
                generator=generator,
            )
            for _ in range(2)
        ]
        z = self.backbone(torch.cat(views, dim=0))  # one pass over both views: (2B, T, D)
        z1, z2 = z.chunk(2, dim=0)
        return hierarchical_contrastive_loss(z1, z2, cfg.temperature, cfg.temporal_weight)
