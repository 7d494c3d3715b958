"""``moe_transformer`` — the hybrid stack with mixture-of-experts feed-forwards.

Same blocks as ``hybrid_transformer`` (rotary attention, dilated causal conv, gated SSM),
but each feed-forward is a :class:`MoEFeedForward`: ``cfg.num_experts`` SwiGLU experts
of width ``ff_mult · d_model``, ``cfg.top_k`` of them per token, so capacity grows with
the expert count while the compute per token stays that of ``top_k`` experts. Routing is
per token and drops nothing, so the backbone stays causal. After each forward,
``aux_loss`` is the sum of the layers' weighted Switch load-balancing losses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.hybrid_transformer import HybridTransformer
from market_nn_plus_ultra.models.layers import MoEFeedForward
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = ["MoETransformer", "build_moe_transformer"]


class MoETransformer(nn.Module):
    """A :class:`HybridTransformer` whose feed-forwards are mixtures of experts."""

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        self.d_model = cfg.d_model

        def moe() -> nn.Module:
            return MoEFeedForward(
                cfg.d_model,
                num_experts=cfg.num_experts,
                top_k=cfg.top_k,
                ff_mult=cfg.ff_mult,
                router_dropout=cfg.router_dropout,
                dropout=cfg.dropout,
                load_balance_weight=cfg.load_balance_weight,
            )

        self.stack = HybridTransformer(cfg, n_features, ffn_factory=moe)
        self.moe_layers = [m for m in self.stack.modules() if isinstance(m, MoEFeedForward)]

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` → ``(B, T, D)``; refreshes :attr:`aux_loss`."""
        return self.stack(x, market_state)

    @property
    def aux_loss(self) -> Tensor:
        """Sum over MoE layers of ``load_balance_weight · E · Σ_e f_e P_e`` (last forward)."""
        return torch.stack([m.aux_loss for m in self.moe_layers]).sum()


@register_backbone("moe_transformer")
def build_moe_transformer(cfg: ModelConfig, n_features: int) -> MoETransformer:
    """Hybrid blocks with top-k routed SwiGLU experts."""
    return MoETransformer(cfg, n_features)
