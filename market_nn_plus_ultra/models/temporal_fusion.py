"""``temporal_fusion`` — the Temporal Fusion Transformer (Lim et al. 2021, "Temporal Fusion
Transformers for Interpretable Multi-horizon Time Series Forecasting"), without statics.

Per step: a variable selection network weighs the F inputs (each through its own GRN;
the softmax weights, on request, in :attr:`TemporalFusion.last_variable_weights`), an LSTM
encoder reads the selected sequence, a gated skip adds its input back, an enrichment
GRN (no static context: our windows carry none), causal interpretable multi-head
attention (one value projection shared by the heads, so the averaged attention is one
interpretable matrix, on request in :attr:`TemporalFusion.last_attention`), a gated skip,
a position-wise GRN and a final gated skip from the LSTM stage.

The hidden width is ``model.tft_hidden`` (so the TFT's size is set like the paper's and
pytorch-forecasting's ``hidden_size``); ``model.d_model`` is not used and the backbone's
``d_model`` attribute is ``tft_hidden``. Multi-horizon decoding happens in the heads,
which read the last step. ``(B, T, F) -> (B, T, tft_hidden)``, causal over ``T``.

The per-variable GRNs run as one grouped (batched) matmul over the F variables, never a
Python loop, and attention runs through fused SDPA kernels in training and inference;
the explicit attention matrix (O(T²) memory) and the variable weights are kept only when
asked for — :meth:`TemporalFusion.interpret`, or ``record_weights = True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import (
    GatedLinearUnit,
    GatedResidualNetwork,
    MarketStateEmbedding,
)
from market_nn_plus_ultra.models.registry import register_backbone

__all__ = [
    "GateAddNorm",
    "InterpretableMultiHeadAttention",
    "TemporalFusion",
    "VariableSelectionNetwork",
    "build_temporal_fusion",
]


class GateAddNorm(nn.Module):
    """``LayerNorm(skip + GLU(x))``: the TFT's gated residual connection."""

    def __init__(self, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.glu = GatedLinearUnit(d, d, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.norm(skip + self.glu(x))


def _grouped_param(groups: int, d_in: int, d_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weights ``(G, d_in, d_out)`` and bias ``(G, d_out)`` initialised like ``nn.Linear``."""
    bound = 1.0 / math.sqrt(d_in)
    weight = nn.Parameter(torch.empty(groups, d_in, d_out).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(groups, d_out).uniform_(-bound, bound))
    return weight, bias


def _grouped_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x (B, T, G, d_in)`` through G separate linear maps → ``(B, T, G, d_out)``."""
    return torch.einsum("btgi,gio->btgo", x, weight) + bias


class _GroupedGRN(nn.Module):
    """G independent GRNs (one per input variable) on ``(B, T, G, d)``, run as batched
    matmuls: ``LayerNorm_g(a + GLU_g(W1_g ELU(W2_g a)))``, all weights per group."""

    def __init__(self, groups: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w2, self.b2 = _grouped_param(groups, d, d)
        self.w1, self.b1 = _grouped_param(groups, d, d)
        self.wg, self.bg = _grouped_param(groups, d, 2 * d)
        self.ln_weight = nn.Parameter(torch.ones(groups, d))
        self.ln_bias = nn.Parameter(torch.zeros(groups, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, a: Tensor) -> Tensor:
        eta = F.elu(_grouped_linear(a, self.w2, self.b2))  # (B, T, G, d)
        eta = _grouped_linear(eta, self.w1, self.b1)  # (B, T, G, d)
        value, gate = _grouped_linear(self.drop(eta), self.wg, self.bg).chunk(2, dim=-1)
        out = a + torch.sigmoid(gate) * value  # (B, T, G, d)
        return F.layer_norm(out, out.shape[-1:]) * self.ln_weight + self.ln_bias


class VariableSelectionNetwork(nn.Module):
    """Embeds each of the F scalar inputs to ``d`` channels, transforms each with its own
    GRN and mixes them with softmax weights from a GRN over all of them (TFT eq. 6–8).

    ``forward`` returns the selected ``(B, T, d)`` and the weights ``(B, T, F)``.
    """

    def __init__(self, n_features: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_features = n_features
        # a per-variable linear embedding of the scalar input: ξ_j = x_j · w_j + b_j
        self.embed_weight = nn.Parameter(torch.randn(n_features, d))
        self.embed_bias = nn.Parameter(torch.zeros(n_features, d))
        self.variable_grns = _GroupedGRN(n_features, d, dropout)
        self.weight_grn = GatedResidualNetwork(n_features * d, d, n_features, dropout=dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        xi = x.unsqueeze(-1) * self.embed_weight + self.embed_bias  # (B, T, F, d)
        weights = self.weight_grn(xi.reshape(B, T, -1)).softmax(dim=-1)  # (B, T, F)
        transformed = self.variable_grns(xi)  # (B, T, F, d)
        selected = (weights.unsqueeze(-1) * transformed).sum(dim=2)  # (B, T, d)
        return selected, weights


class InterpretableMultiHeadAttention(nn.Module):
    """Causal multi-head attention whose heads share one value projection (TFT eq. 14–16).

    ``H̃ = mean_h softmax(Q_h K_hᵀ / √d_k + causal mask) V`` then ``W_H H̃``; because V is
    shared, the head-averaged attention matrix fully explains the output.
    """

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.d_k, self.dropout = n_heads, d // n_heads, dropout
        self.qk = nn.Linear(d, 2 * n_heads * self.d_k)
        self.v = nn.Linear(d, self.d_k)
        self.out = nn.Linear(self.d_k, d)
        self.record_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        qk = self.qk(x).view(B, T, 2, self.n_heads, self.d_k)  # (B, T, 2, nh, dk)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, nh, T, dk)
        v = self.v(x).unsqueeze(1)  # (B, 1, T, dk): one value projection for every head
        p = self.dropout if self.training else 0.0
        if self.record_attention:  # interpretability only: the explicit (B, nh, T, T) matrix
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # (B, nh, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            attn = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)  # (B, nh, T, T)
            self.last_attention = attn.mean(dim=1).detach()  # (B, T, T)
            heads = F.dropout(attn, p, self.training) @ v  # (B, nh, T, dk)
        else:  # fused kernel, O(T) memory, in training and inference alike
            v = v.expand(B, self.n_heads, T, self.d_k)  # a view, no copy
            heads = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.out(heads.mean(dim=1))  # (B, T, d)


class TemporalFusion(nn.Module):
    """The TFT encoder stack; see the module docstring for the data flow."""

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        d, p = cfg.tft_hidden, cfg.dropout
        if d % cfg.n_heads:
            raise ValueError(
                f"model.tft_hidden ({d}) must be divisible by model.n_heads ({cfg.n_heads}) — "
                f"set model.tft_hidden to a multiple of {cfg.n_heads}"
            )
        if cfg.patch_size != 1:
            raise ValueError(
                f"temporal_fusion reads every step; model.patch_size={cfg.patch_size} is not "
                "supported — set model.patch_size=1 or use another model.architecture"
            )
        self.d_model = d
        self.select = VariableSelectionNetwork(n_features, d, p)
        self.market = (
            MarketStateEmbedding(cfg.num_regimes, d) if cfg.market_state_embedding else None
        )
        self.lstm = nn.LSTM(
            d,
            d,
            num_layers=cfg.tft_lstm_layers,
            batch_first=True,
            dropout=p if cfg.tft_lstm_layers > 1 else 0.0,
        )
        self.lstm_gate = GateAddNorm(d, p)
        self.enrich = GatedResidualNetwork(d, d, dropout=p)
        self.attention = InterpretableMultiHeadAttention(d, cfg.n_heads, p)
        self.attention_gate = GateAddNorm(d, p)
        self.position_wise = GatedResidualNetwork(d, d, dropout=p)
        self.output_gate = GateAddNorm(d, p)
        self.last_variable_weights: Tensor | None = None

    @property
    def record_weights(self) -> bool:
        """Whether forwards keep the variable weights and the attention matrix."""
        return self.attention.record_attention

    @record_weights.setter
    def record_weights(self, value: bool) -> None:
        self.attention.record_attention = bool(value)

    @property
    def last_attention(self) -> Tensor | None:
        """Head-averaged attention ``(B, T, T)`` of the last forward run with weights recorded."""
        return self.attention.last_attention

    def interpret(
        self, x: Tensor, market_state: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One forward that keeps the interpretable weights: ``(output (B, T, d),
        variable weights (B, T, F), head-averaged attention (B, T, T))``.

        Also left in :attr:`last_variable_weights` and :attr:`last_attention`. Plain
        forwards keep neither (no O(T²) matrix, no extra tensor per call) unless
        :attr:`record_weights` is set.
        """
        before = self.record_weights
        self.record_weights = True
        try:
            out = self(x, market_state)
        finally:
            self.record_weights = before
        return out, self.last_variable_weights, self.last_attention

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``x (B, T, F)`` (+ optional market state ``(B, T)`` tensors) → ``(B, T, d)``."""
        selected, weights = self.select(x)  # (B, T, d), (B, T, F)
        if self.record_weights:
            self.last_variable_weights = weights.detach()
        if self.market is not None and market_state is not None:
            selected = selected + self.market(market_state)
        encoded, _ = self.lstm(selected)  # (B, T, d)
        phi = self.lstm_gate(encoded, selected)  # gated skip over the LSTM
        theta = self.enrich(phi)  # (B, T, d)
        delta = self.attention_gate(self.attention(theta), theta)
        psi = self.position_wise(delta)  # (B, T, d)
        return self.output_gate(psi, phi)  # (B, T, d)


@register_backbone("temporal_fusion")
def build_temporal_fusion(cfg: ModelConfig, n_features: int) -> TemporalFusion:
    """Temporal Fusion Transformer encoder (width ``model.tft_hidden``), no static inputs."""
    return TemporalFusion(cfg, n_features)
