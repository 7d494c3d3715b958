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

Each scalar input is embedded to ``model.tft_variable_width`` channels (null: the hidden
width), like pytorch-forecasting's ``hidden_continuous_size``; its GRN runs at that
width and projects to ``tft_hidden`` at the gate.

The embedding is affine in the input and is folded into the layers that read it; the F
per-variable GRNs run as one fused autograd function over blocks of rows (batched
matmuls over the variables, a backward that recomputes each block instead of storing
``(B, T, F, d)`` activations), never a Python loop. Attention runs through fused SDPA
kernels in training and inference; the explicit attention matrix (O(T²) memory) and the
variable weights are kept only when asked for — :meth:`TemporalFusion.interpret`, or
``record_weights = True``.
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


# bytes of a (G, rows, 2d) float32 block of the fused per-variable GRNs: cache-sized on
# CPU, one block for any usual batch on an accelerator
_BLOCK_BYTES, _ACCELERATOR_BLOCK_BYTES = {"cpu": 1 << 21}, 1 << 30


def _hidden(xb: Tensor, u: Tensor, c: Tensor) -> Tensor:
    """``ELU(x u + c)`` for a block of rows ``xb (G, n)``: ``(G, n, v)``."""
    return F.elu(torch.addcmul(c[:, None], xb[..., None], u[:, None]), inplace=True)


def _gated(xb: Tensor, g: Tensor, us: Tensor, cs: Tensor) -> Tensor:
    """The LayerNorm input ``x us + cs + value ⊙ σ(gate)`` from ``g = value | σ(gate)``."""
    d = us.shape[-1]
    skip = torch.addcmul(cs[:, None], xb[..., None], us[:, None])  # (G, n, d)
    return skip.addcmul_(g[..., :d], g[..., d:])


class _VariableGRNs(torch.autograd.Function):
    """``Σ_g w_g (γ_g LayerNorm(o_g) + β_g)``, ``o_g = x_g us_g + cs_g + GLU_g(z_g)``,
    ``z_g = keep ⊙ (W1_g ELU(x_g u_g + c_g) + b1_g)``, over blocks of rows.

    Inputs are variable-major: ``xt, wt (G, N)``; ``u, c (G, v)``, ``us, cs (G, d)`` are the
    embedding folded into the first layer and the skip. The backward pass recomputes each
    block and keeps only the dropout masks (a byte per element): temporaries stay
    block-sized, cache-resident and reused (kept (G, N, ·) activations would be
    page-faulted afresh every step), memory ``O(N · (G + d))``.
    """

    @staticmethod
    def forward(ctx, xt, wt, u, c, w1, b1, wg, bg, us, cs, gamma, beta, p, rows):
        d, n_rows = gamma.shape[-1], xt.shape[1]
        out = xt.new_empty(n_rows, d)  # (N, d)
        unit = (gamma.new_ones(d), gamma.new_zeros(d))  # the affine LayerNorm kernel is faster
        wg_kept, keeps = wg / (1 - p), []
        for a in range(0, n_rows, rows):
            xb = xt[:, a : a + rows]  # (G, n)
            z = torch.baddbmm(b1[:, None], _hidden(xb, u, c), w1)  # (G, n, v)
            keep = None
            if p > 0:  # torch.rand and a uint8 product: several times faster than bernoulli_
                keep = torch.rand(z.shape, dtype=z.dtype, device=z.device) >= p
                keeps.append(keep.view(torch.uint8))
                z.mul_(keeps[-1])
            g = torch.baddbmm(bg[:, None], z, wg_kept)  # (G, n, 2d)
            g[..., d:].sigmoid_()
            y = F.layer_norm(_gated(xb, g, us, cs), (d,), *unit)
            torch.sum(
                y.mul_(gamma[:, None]).mul_(wt[:, a : a + rows, None]), 0, out=out[a : a + rows]
            )
        out.addmm_(wt.t(), beta)  # + Σ_g w_g β_g
        ctx.save_for_backward(xt, wt, u, c, w1, b1, wg_kept, bg, us, cs, gamma, beta)
        ctx.keeps, ctx.kept, ctx.rows = keeps, 1.0 - p, rows
        return out

    @staticmethod
    def backward(ctx, grad):
        xt, wt, u, c, w1, b1, wg_kept, bg, us, cs, gamma, beta = ctx.saved_tensors
        d, grad = gamma.shape[-1], grad.contiguous()
        d_first = xt.new_zeros(xt.shape[0], 2, u.shape[-1])  # (G, 2, v): d u, d c
        d_skip = xt.new_zeros(xt.shape[0], 2, d)  # (G, 2, d): d us, d cs
        dw1, db1, dwg, dbg = (torch.zeros_like(t) for t in (w1, b1, wg_kept, bg))
        dgamma, dwt = gamma.new_zeros(gamma.shape[0], 1, d), torch.empty_like(wt)
        dxt = torch.empty_like(xt) if ctx.needs_input_grad[0] else None
        unit = (gamma.new_ones(d), gamma.new_zeros(d))
        for i, a in enumerate(range(0, xt.shape[1], ctx.rows)):
            rows = slice(a, a + ctx.rows)
            xb, wb, gb = xt[:, rows], wt[:, rows], grad[rows]  # (G, n), (G, n), (n, d)
            h = _hidden(xb, u, c)  # the block again, as in the forward pass
            z = torch.baddbmm(b1[:, None], h, w1)  # (G, n, v)
            keep = ctx.keeps[i] if ctx.keeps else None
            if keep is not None:
                z.mul_(keep)
            g = torch.baddbmm(bg[:, None], z, wg_kept)  # (G, n, 2d)
            g[..., d:].sigmoid_()
            o = _gated(xb, g, us, cs)  # (G, n, d)
            yhat, mean, rstd = torch.ops.aten.native_layer_norm(o, [d], *unit, 1e-5)
            yg = yhat.mul_(gb)  # (G, n, d): LayerNorm(o) ⊙ grad
            dgamma.baddbmm_(wb[:, None], yg)
            dwt[:, rows] = torch.bmm(yg, gamma[..., None]).squeeze(-1)  # + β · grad below
            dy = torch.mul(gb, gamma[:, None]).mul_(wb[..., None])  # (G, n, d)
            do = torch.ops.aten.native_layer_norm_backward(
                dy, o, [d], mean, rstd, None, None, [True, False, False]
            )[0]
            dg = torch.empty_like(g)  # (G, n, 2d): d value | d gate
            torch.mul(do, g[..., d:], out=dg[..., :d])
            torch.mul(do, g[..., :d], out=dg[..., d:])
            torch.ops.aten.sigmoid_backward.grad_input(
                dg[..., d:], g[..., d:], grad_input=dg[..., d:]
            )
            x1 = torch.stack((xb, torch.ones_like(xb)), 1)  # (G, 2, n)
            d_skip.baddbmm_(x1, do)
            dwg.baddbmm_(z.transpose(1, 2), dg)
            dbg += dg.sum(1)
            dz = torch.bmm(dg, wg_kept.transpose(1, 2))  # (G, n, v)
            if keep is not None:
                dz.mul_(keep)
            dw1.baddbmm_(h.transpose(1, 2), dz)
            db1 += dz.sum(1)
            dh = torch.ops.aten.elu_backward(dz @ w1.transpose(1, 2), 1.0, 1, 1.0, True, h)
            d_first.baddbmm_(x1, dh)
            if dxt is not None:
                dxt[:, rows] = (torch.bmm(do, us[..., None]) + torch.bmm(dh, u[..., None]))[..., 0]
        dwt += beta @ grad.t()  # (G, N)
        return (
            dxt, dwt, d_first[:, 0], d_first[:, 1], dw1, db1, dwg / ctx.kept, dbg,
            d_skip[:, 0], d_skip[:, 1], dgamma[:, 0], wt @ grad, None, None,
        )  # fmt: skip


class _GroupedGRN(nn.Module):
    """G independent GRNs (one per input variable) from width ``v`` to ``d``:
    ``LayerNorm_g(skip_g(a) + GLU_g(W1_g ELU(W2_g a)))``, all weights per group; the skip
    is the identity when ``v == d``, else a per-group linear map.

    The forward takes the scalars and their embedding and returns the variables mixed by
    the selection weights (:class:`_VariableGRNs`): ``a_g = x_g e_g + b_g`` is affine in
    ``x_g``, so ``W2_g a_g`` and the skip are folded to ``x_g u_g + c_g``.
    """

    def __init__(self, groups: int, width: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        # w2 and the skip's ws meet an affine embedding of one scalar: folded once per
        # forward into (G, ·) vectors, no matmul per row (read by estimate_flops)
        self.folded_weights = ("w2", "ws")
        self.w2, self.b2 = _grouped_param(groups, width, width)
        self.w1, self.b1 = _grouped_param(groups, width, width)
        self.wg, self.bg = _grouped_param(groups, width, 2 * d)
        if width != d:
            self.ws, self.bs = _grouped_param(groups, width, d)
        self.ln_weight = nn.Parameter(torch.ones(groups, d))
        self.ln_bias = nn.Parameter(torch.zeros(groups, d))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, weights: Tensor, embed_weight: Tensor, embed_bias: Tensor
    ) -> Tensor:
        """``x, weights (N, G)``, embedding ``(G, v)`` → ``Σ_g weights_g GRN_g(a_g)`` ``(N, d)``."""
        with torch.autocast(x.device.type, enabled=False):  # one dtype, forward and backward
            u = torch.einsum("gi,gio->go", embed_weight, self.w2)  # (G, v)
            c = torch.einsum("gi,gio->go", embed_bias, self.w2) + self.b2
            us, cs = embed_weight, embed_bias  # the identity skip, v == d
            if hasattr(self, "ws"):
                us = torch.einsum("gi,gio->go", embed_weight, self.ws)  # (G, d)
                cs = torch.einsum("gi,gio->go", embed_bias, self.ws) + self.bs
            d = self.ln_weight.shape[-1]
            budget = _BLOCK_BYTES.get(x.device.type, _ACCELERATOR_BLOCK_BYTES)
            rows = max(1, budget // (x.shape[1] * 2 * d * 4))
            xt = x.t().to(u.dtype).contiguous()  # (G, N)
            wt = weights.t().to(u.dtype).contiguous()
            p = self.drop.p if self.training else 0.0
            return _VariableGRNs.apply(
                xt, wt, u, c, self.w1, self.b1, self.wg, self.bg, us, cs,
                self.ln_weight, self.ln_bias, p, rows,
            )  # fmt: skip


def _fold(linear: nn.Linear, embed_weight: Tensor, embed_bias: Tensor) -> tuple[Tensor, Tensor]:
    """``linear`` applied to the flattened embedding ``(x_f e_f + b_f)_f`` as a map of the
    scalars ``x`` themselves: weight ``(out, F)`` and bias ``(out,)``."""
    w = linear.weight.view(linear.out_features, *embed_weight.shape)  # (out, F, v)
    weight = torch.einsum("ofv,fv->of", w, embed_weight)
    return weight, linear.bias + torch.einsum("ofv,fv->o", w, embed_bias)


class VariableSelectionNetwork(nn.Module):
    """Embeds each of the F scalar inputs to ``width`` channels (default ``d``), transforms
    each with its own GRN to ``d`` and mixes them with softmax weights from a GRN over all
    of them (TFT eq. 6–8).

    ``forward`` returns the selected ``(B, T, d)`` and the weights ``(B, T, F)``. The
    embedding is linear in the inputs and is folded into the layers that read it: the
    weight GRN's input layer and skip become ``(F → ·)`` maps and the per-variable GRNs
    run fused (:class:`_GroupedGRN`), so no ``(B, T, F, width)`` embedding is built.
    """

    def __init__(
        self, n_features: int, d: int, dropout: float = 0.0, width: int | None = None
    ) -> None:
        super().__init__()
        width = d if width is None else width
        self.n_features, self.width = n_features, width
        # a per-variable linear embedding of the scalar input: ξ_j = x_j · w_j + b_j
        self.embed_weight = nn.Parameter(torch.randn(n_features, width))
        self.embed_bias = nn.Parameter(torch.zeros(n_features, width))
        self.variable_grns = _GroupedGRN(n_features, width, d, dropout)
        self.weight_grn = GatedResidualNetwork(n_features * width, d, n_features, dropout=dropout)

    def _weight_logits(self, x: Tensor) -> Tensor:
        """The weight GRN over the flattened embedding of ``x (N, F)``, folded: ``(N, F)``."""
        grn, e, b = self.weight_grn, self.embed_weight, self.embed_bias
        eta = F.linear(x, *_fold(grn.fc2, e, b))  # (N, d)
        skip = x * e[:, 0] + b[:, 0] if isinstance(grn.skip, nn.Identity) else None  # width 1
        skip = F.linear(x, *_fold(grn.skip, e, b)) if skip is None else skip  # (N, F)
        return grn.norm(skip + grn.glu(grn.fc1(F.elu(eta))))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, T, n = x.shape
        flat = x.reshape(B * T, n)  # (B·T, F)
        weights = self._weight_logits(flat).softmax(dim=-1)  # (B·T, F)
        selected = self.variable_grns(flat, weights, self.embed_weight, self.embed_bias)
        return selected.view(B, T, -1), weights.view(B, T, n)


class InterpretableMultiHeadAttention(nn.Module):
    """Causal multi-head attention whose heads share one value projection (TFT eq. 14–16).

    ``H̃ = mean_h softmax(Q_h K_hᵀ / √d_k + causal mask) V`` then ``W_H H̃``; because V is
    shared, the head-averaged attention matrix fully explains the output. Dropout acts on
    each head's output and on the projected output, as in the reference implementation
    (google-research ``tft``, and pytorch-forecasting), not on the attention matrix: the
    matrix stays a distribution and the fused attention kernel runs in training too.
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
        if self.record_attention:  # interpretability only: the explicit (B, nh, T, T) matrix
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # (B, nh, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            attn = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)  # (B, nh, T, T)
            self.last_attention = attn.mean(dim=1).detach()  # (B, T, T)
            heads = attn @ v  # (B, nh, T, dk)
        else:  # fused kernel, O(T) memory, in training and inference alike
            v = v.expand(B, self.n_heads, T, self.d_k)  # a view, no copy
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, dk)
        heads = F.dropout(heads, self.dropout, self.training)
        return F.dropout(self.out(heads.mean(dim=1)), self.dropout, self.training)  # (B, T, d)


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
        width = getattr(cfg, "tft_variable_width", None)
        if width is not None and (not isinstance(width, int) or width < 1):
            raise ValueError(
                f"model.tft_variable_width must be a positive integer or null (= tft_hidden), "
                f"got {width!r}"
            )
        self.d_model = d
        self.select = VariableSelectionNetwork(n_features, d, p, width)
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
