"""Shared building blocks of the backbones, tensors in and tensors out.

Every block maps ``(B, T, D) -> (B, T, D)`` and is causal over ``T``: the output at step
``t`` depends only on inputs at steps ``<= t``. Read top to bottom: norms, the
convolution mixer, the feed-forwards (dense and, re-exported from
:mod:`~market_nn_plus_ultra.models.moe`, mixture-of-experts), then the TFT gates.
Rotary attention lives in :mod:`~market_nn_plus_ultra.models.attention`, the state-space
mixer in :mod:`~market_nn_plus_ultra.models.ssm` and the input embeddings (with
:class:`Dropout`) in :mod:`~market_nn_plus_ultra.models.embedding`; all are re-exported
here.

In eager float CPU training the norm, attention with dropout, convolution and dropout
take hand-written paths (closed-form backward passes, fewer copies, a faster dropout
mask) that compute the same functions as the plain PyTorch forms; CUDA, autocast and
``torch.compile`` take the plain forms. The SSM's closed-form kernel gradient and FFT
convolution run everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from market_nn_plus_ultra.models.attention import (
    CausalSelfAttention,
    RotaryEmbedding,
    apply_rotary,
)
from market_nn_plus_ultra.models.embedding import (
    Dropout,
    InputEmbedding,
    MarketStateEmbedding,
    PatchEmbedding,
    eager_cpu,
)

# the MoE block lives in moe.py; re-exported here so `from ...layers import MoEFeedForward`
# keeps working, and the SwiGLU width rule is shared with its experts
from market_nn_plus_ultra.models.moe import MoEFeedForward, ffn_hidden
from market_nn_plus_ultra.models.ssm import DiagonalSSM, GatedSSMMixer

__all__ = [
    "CausalSelfAttention",
    "DiagonalSSM",
    "DilatedCausalConv",
    "Dropout",
    "GatedLinearUnit",
    "GatedResidualNetwork",
    "GatedSSMMixer",
    "InputEmbedding",
    "MarketStateEmbedding",
    "MoEFeedForward",
    "PatchEmbedding",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "apply_rotary",
    "make_norm",
    "run_blocks",
]


def run_blocks(blocks: nn.ModuleList, h: Tensor, checkpointing: bool) -> Tensor:
    """Apply ``blocks`` in turn; with ``checkpointing`` (training only) each block's
    activations are recomputed in the backward pass instead of stored."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            h = checkpoint(block, h, use_reentrant=False)
        else:
            h = block(h)
    return h


def _rstd(x: Tensor, eps: float) -> Tensor:
    """``1 / sqrt(mean(x²) + eps)`` over the last axis, ``(..., 1)``, from one reduction."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return norm.square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def _normalize_backward(grad: Tensor, x_hat: Tensor, rstd: Tensor) -> Tensor:
    """``d(x · rstd)/dx`` applied to ``grad``: ``rstd · (g − x̂ · mean(g · x̂))``."""
    mean = (grad * x_hat).mean(-1, keepdim=True)  # (..., 1)
    return torch.addcmul(grad, x_hat, mean, value=-1.0).mul_(rstd)


class _RMSNormalize(torch.autograd.Function):
    """``x̂ = x · rstd`` (RMSNorm without its weight) with the closed-form backward;
    CPU autograd otherwise differentiates the norm op by op."""

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        rstd = _rstd(x, eps)
        x_hat = x * rstd  # (..., D)
        ctx.save_for_backward(x_hat, rstd)
        return x_hat

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x_hat, rstd = ctx.saved_tensors
        return _normalize_backward(grad, x_hat, rstd), None


class _RMSNormFunction(torch.autograd.Function):
    """``y = x̂ · w`` with ``x̂ = x · rstd`` and its backward in closed form:
    ``dx = rstd · (g·w − x̂ · mean(g·w·x̂))``, ``dw = Σ g·x̂``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        rstd = _rstd(x, eps)
        x_hat = x * rstd  # (..., D)
        ctx.save_for_backward(x_hat, weight, rstd)
        return x_hat * weight

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x_hat, weight, rstd = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _normalize_backward(grad * weight, x_hat, rstd)
        if ctx.needs_input_grad[1]:
            grad_w = (grad * x_hat).reshape(-1, x_hat.shape[-1]).sum(0)  # (D,)
        return grad_x, grad_w, None


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters, same function) with a closed-form backward on CPU.

    :meth:`normalize` is the norm without its weight, for a consumer whose first op
    scales channels anyway (a linear layer or a depthwise conv): it multiplies the weight
    into its own, ``W · (x̂ ⊙ w) = (W · diag(w)) · x̂``, so the ``(B, T, D)`` multiply and
    its share of the backward disappear (:class:`~market_nn_plus_ultra.models.hybrid_transformer.HybridBlock`).
    """

    def _eps(self, x: Tensor) -> float:
        return torch.finfo(x.dtype).eps if self.eps is None else self.eps

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None or not torch.is_grad_enabled() or not eager_cpu(x):
            return super().forward(x)
        return _RMSNormFunction.apply(x, self.weight, self._eps(x))

    def normalize(self, x: Tensor) -> Tensor:
        """``x / rms(x)`` over the last axis, without the weight, ``(..., D)``."""
        if torch.is_grad_enabled() and eager_cpu(x):
            return _RMSNormalize.apply(x, self._eps(x))
        return F.rms_norm(x, self.normalized_shape, None, self.eps)


def make_norm(kind: str, dim: int) -> nn.Module:
    """``"rms"`` → RMSNorm (no mean subtraction, cheaper), ``"layer"`` → LayerNorm."""
    if kind == "rms":
        return RMSNorm(dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise ValueError(f"model.norm: unknown normalisation {kind!r} — use 'rms' or 'layer'")


class _DepthwiseCausalConv(torch.autograd.Function):
    """``h[b, t, c] = bias[c] + Σ_j w[c, j] · x[b, t − (k − 1 − j)·dil, c]`` for ``x (B, T, D)``,
    zeros before the first step: ``F.conv1d``'s depthwise sums on ``(B, T, D)`` directly,
    as ``k`` shifted multiply-adds, with the matching shifted sums as the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int) -> Tensor:
        T, k = x.shape[1], weight.shape[1]
        padded = F.pad(x, (0, 0, (k - 1) * dilation, 0))  # (B, pad + T, D)
        h = (
            padded[:, :T] * weight[:, 0]
            if bias is None
            else torch.addcmul(bias, padded[:, :T], weight[:, 0])
        )  # (B, T, D)
        for j in range(1, k):
            h.addcmul_(padded[:, j * dilation : j * dilation + T], weight[:, j])
        ctx.save_for_backward(padded, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        padded, weight = ctx.saved_tensors
        dil, (B, T, D), k = ctx.dilation, grad.shape, weight.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * weight[:, k - 1]  # the lag-0 tap
            for j in range(k - 1):
                lag = (k - 1 - j) * dil
                if lag < T:
                    grad_x[:, : T - lag].addcmul_(grad[:, lag:], weight[:, j])
        if ctx.needs_input_grad[1]:
            p = padded.stride()
            taps = padded.as_strided((B, T, D, k), (p[0], p[1], p[2], dil * p[1]))  # (B,T,D,k)
            grad_w = (grad.unsqueeze(-1) * taps).sum((0, 1))  # (D, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))  # (D,)
        return grad_x, grad_w, grad_b, None


class DilatedCausalConv(nn.Module):
    """Depthwise dilated convolution padded on the left only, then a pointwise mix."""

    def __init__(self, d_model: int, kernel: int = 3, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.pad, self.dilation = (kernel - 1) * dilation, dilation
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, dilation=dilation, groups=d_model)
        self.pointwise = nn.Linear(d_model, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``; ``scale (D,)`` multiplies the input channels
        (a preceding norm's weight, folded into the depthwise taps)."""
        w, b = self.depthwise.weight, self.depthwise.bias  # (D, 1, kernel), (D,)
        w = w if scale is None else w * scale[:, None, None]
        if torch.is_grad_enabled() and eager_cpu(x):
            # CPU's depthwise conv backward is slow; the shifted sums' backward is not
            h = _DepthwiseCausalConv.apply(x, w[:, 0], b, self.dilation)  # (B, T, D)
        else:
            h = F.pad(x.transpose(1, 2), (self.pad, 0))  # (B, D, pad + T)
            h = F.conv1d(h, w, b, dilation=self.dilation, groups=w.shape[0]).transpose(1, 2)
        return self.drop(self.pointwise(F.gelu(h)))


class SwiGLU(nn.Module):
    """Feed-forward ``W3(SiLU(W1 x) ⊙ W2 x)`` (Shazeer 2020, "GLU Variants")."""

    def __init__(self, d_model: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = ffn_hidden(d_model, ff_mult)
        self.w12 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, d_model, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``; ``scale (D,)`` multiplies the input channels."""
        w12 = self.w12.weight if scale is None else self.w12.weight * scale  # (2·hidden, D)
        a, b = F.linear(x, w12).chunk(2, dim=-1)  # 2 x (B, T, hidden)
        return self.drop(self.w3(F.silu(a) * b))


class GatedLinearUnit(nn.Module):
    """TFT's GLU (Lim et al. 2021): ``σ(W_4 γ) ⊙ (W_5 γ)``, ``(…, d_in) -> (…, d_out)``."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(self.drop(x)).chunk(2, dim=-1)  # 2 x (…, d_out)
        return torch.sigmoid(gate) * value


class GatedResidualNetwork(nn.Module):
    """TFT's GRN: ``LayerNorm(skip(a) + GLU(W_1 ELU(W_2 a + W_3 c)))``.

    ``a`` is ``(…, d_in)``; the optional context ``c`` is ``(…, d_context)`` or, for a
    sequence ``a (B, T, d_in)``, a static ``(B, d_context)`` broadcast over ``T``.
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int | None = None,
        d_context: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        d_out = d_in if d_out is None else d_out
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)
        self.fc2 = nn.Linear(d_in, d_hidden)
        self.context = None if d_context is None else nn.Linear(d_context, d_hidden, bias=False)
        self.fc1 = nn.Linear(d_hidden, d_hidden)
        self.glu = GatedLinearUnit(d_hidden, d_out, dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, a: Tensor, context: Tensor | None = None) -> Tensor:
        eta = self.fc2(a)  # (…, d_hidden)
        if context is not None:
            if self.context is None:
                raise ValueError("this GatedResidualNetwork was built without d_context")
            c = self.context(context)
            eta = eta + (c.unsqueeze(-2) if c.dim() < eta.dim() else c)  # (B, T, d_hidden)
        return self.norm(self.skip(a) + self.glu(self.fc1(F.elu(eta))))
