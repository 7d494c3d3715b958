"""Sequence models on tensors: shared layers, backbones, heads and the registry.

Importing this package imports every backbone and head module, so their
``@register_backbone`` / ``@register_head`` decorators fill the registries.
"""

from market_nn_plus_ultra.models.layers import (
    CausalSelfAttention,
    DiagonalSSM,
    DilatedCausalConv,
    GatedLinearUnit,
    GatedResidualNetwork,
    GatedSSMMixer,
    InputEmbedding,
    MarketStateEmbedding,
    MoEFeedForward,
    PatchEmbedding,
    RotaryEmbedding,
    SwiGLU,
)
from market_nn_plus_ultra.models.registry import (
    BACKBONES,
    HEADS,
    TradingModel,
    build_backbone,
    build_head,
    build_model,
    count_parameters,
    estimate_flops,
    register_backbone,
    register_head,
)

__all__ = [
    "BACKBONES",
    "HEADS",
    "CausalSelfAttention",
    "DiagonalSSM",
    "DilatedCausalConv",
    "GatedLinearUnit",
    "GatedResidualNetwork",
    "GatedSSMMixer",
    "InputEmbedding",
    "MarketStateEmbedding",
    "MoEFeedForward",
    "PatchEmbedding",
    "RotaryEmbedding",
    "SwiGLU",
    "TradingModel",
    "build_backbone",
    "build_head",
    "build_model",
    "count_parameters",
    "estimate_flops",
    "register_backbone",
    "register_head",
]
