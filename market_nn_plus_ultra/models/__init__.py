"""Sequence models on tensors: shared layers, backbones, heads and the registry.

Importing this package imports every backbone and head module, so their
``@register_backbone`` / ``@register_head`` decorators fill the registries.
"""

from market_nn_plus_ultra.models.heads import (
    ActionHead,
    DirichletHead,
    HeadOutput,
    QuantileDirichletHead,
    QuantileHead,
    RegressionHead,
)
from market_nn_plus_ultra.models.hybrid_transformer import HybridTransformer
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
from market_nn_plus_ultra.models.losses import LOSS_TERMS, CompositeTradingLoss, TradingLossResult
from market_nn_plus_ultra.models.moe_transformer import MoETransformer
from market_nn_plus_ultra.models.multi_scale import MultiScaleEncoder
from market_nn_plus_ultra.models.omni_mixture import OmniMixture
from market_nn_plus_ultra.models.profiling import (
    ProfileResult,
    StepTiming,
    measure_matmul_peak,
    profile_backbone,
    time_training_step,
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
from market_nn_plus_ultra.models.state_space import StateSpaceModel
from market_nn_plus_ultra.models.temporal_fusion import TemporalFusion

__all__ = [
    "BACKBONES",
    "HEADS",
    "LOSS_TERMS",
    "ActionHead",
    "CausalSelfAttention",
    "CompositeTradingLoss",
    "DiagonalSSM",
    "DilatedCausalConv",
    "DirichletHead",
    "GatedLinearUnit",
    "GatedResidualNetwork",
    "GatedSSMMixer",
    "HeadOutput",
    "HybridTransformer",
    "InputEmbedding",
    "MarketStateEmbedding",
    "MoEFeedForward",
    "MoETransformer",
    "MultiScaleEncoder",
    "OmniMixture",
    "PatchEmbedding",
    "ProfileResult",
    "QuantileDirichletHead",
    "QuantileHead",
    "RegressionHead",
    "RotaryEmbedding",
    "StateSpaceModel",
    "StepTiming",
    "SwiGLU",
    "TemporalFusion",
    "TradingLossResult",
    "TradingModel",
    "build_backbone",
    "build_head",
    "build_model",
    "count_parameters",
    "estimate_flops",
    "measure_matmul_peak",
    "profile_backbone",
    "register_backbone",
    "register_head",
    "time_training_step",
]
