"""Multi-head causal self-attention with rotary positions, for every attention backbone.

:class:`CausalSelfAttention` maps ``(B, T, D) -> (B, T, D)``, causal over ``T`` (or a
causal band of ``span`` steps); :mod:`~market_nn_plus_ultra.models.layers` re-exports it
with the other blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.models.embedding import Dropout, eager_cpu, keep_mask
from market_nn_plus_ultra.models.lookback import band_mask

__all__ = ["CausalSelfAttention", "RotaryEmbedding", "apply_rotary"]


class RotaryEmbedding(nn.Module):
    """Rotary position angles (Su et al. 2021, RoFormer) for heads of size ``head_dim``.

    The cos/sin cache covers ``max_seq_len`` steps and grows (at least doubling) the first
    time a longer sequence arrives, so windows longer than the config's still work. The
    buffers are registered once, in ``__init__``; growing swaps their storage in place
    (no ``register_buffer`` on the hot path), and they are not persistent, so the state dict
    holds no rotary entry.
    """

    def __init__(self, head_dim: int, max_seq_len: int = 512, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head size, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cos, sin = self._angles(max_seq_len)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _angles(self, length: int) -> tuple[Tensor, Tensor]:
        steps = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(steps, self.inv_freq)  # (L, hd/2)
        return angles.cos(), angles.sin()

    def forward(self, seq_len: int) -> tuple[Tensor, Tensor]:
        """cos and sin angles for positions ``0 .. seq_len-1``, each ``(T, head_dim/2)``."""
        if seq_len > self.cos.shape[0]:
            # swap the storage of the existing buffers in place: assigning to a buffer's
            # name would call register_buffer again (a graph break under torch.compile)
            cos, sin = self._angles(max(seq_len, 2 * self.cos.shape[0]))
            with torch.no_grad():
                self.cos.set_(cos)
                self.sin.set_(sin)
        return self.cos[:seq_len], self.sin[:seq_len]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(i, i + hd/2)`` of ``x (B, H, T, hd)`` by the step's angle."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, hd)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary q/k through fused SDPA kernels.

    With ``span`` a step reads only itself and the ``span − 1`` steps before it (a
    causal band, :mod:`~market_nn_plus_ultra.models.lookback`); sequences no longer
    than ``span`` take the plain causal (flash-capable) path. Training with dropout on
    CPU, where SDPA falls back to its math kernel, runs the same math directly
    (:class:`_CausalAttentionWithDropout`: blocks of query rows, a
    :func:`~market_nn_plus_ultra.models.embedding.keep_mask` dropout mask).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        max_seq_len: int = 512,
        span: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout, self.span = n_heads, dropout, span
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.rotary = RotaryEmbedding(d_model // n_heads, max_seq_len)
        self.resid_drop = Dropout(dropout)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``; ``scale (D,)`` multiplies the input channels
        (a preceding norm's weight, folded into the projection)."""
        B, T, D = x.shape
        q, k, v = self._rotated_qkv(x, scale)  # 3 x (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        band = self.span is not None and self.span < T
        if p > 0 and eager_cpu(q):
            mask = self._mask(T, x.device, q.dtype, band)  # (T, T) additive
            y = _CausalAttentionWithDropout.apply(q, k, v, mask, p, self.span if band else None)
        elif band:
            mask = self._mask(T, x.device, q.dtype, band)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        # y: (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_drop(self.proj(y))

    def _rotated_qkv(self, x: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """q, k (rotary applied) and v, each ``(B, H, T, hd)``.

        In float32/float64 eager mode (no autocast) the q and k rows of the projection
        are reordered so each rotary pair ``(i, i + hd/2)`` sits side by side, and the
        rotation is one complex multiply over q, k and v together (v turned by 1, exactly).
        Scores ``q·k`` are unchanged by the reorder (q and k share it) and v keeps its
        order, so the output is the same function as the half-split form.
        """
        B, T, D = x.shape
        H, hd = self.n_heads, D // self.n_heads
        cos, sin = self.rotary(T)  # (T, hd/2) each
        weight = self.qkv.weight if scale is None else self.qkv.weight * scale  # (3D, D)
        plain = x.dtype not in (torch.float32, torch.float64)  # complex needs f32/f64
        if plain or torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling():
            qkv = F.linear(x, weight).view(B, T, 3, H, hd)  # (B, T, 3, H, hd)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
            return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v
        weight = weight[self._pair_order(D, H, x.device)]  # (3D, D), q/k pairs interleaved
        qkv = F.linear(x, weight).view(B, T, 3, H, hd // 2, 2)  # (B, T, 3, H, hd/2, 2)
        turn = self._turn(cos, sin, H, x.dtype)  # (T, 3, H, hd/2) complex
        qkv = torch.view_as_real(torch.view_as_complex(qkv) * turn).flatten(-2)  # (B,T,3,H,hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
        return q, k, v

    def _turn(self, cos: Tensor, sin: Tensor, n_heads: int, dtype: torch.dtype) -> Tensor:
        """``e^{iθ}`` for q and k, 1 for v, laid out ``(T, 3, H, hd/2)`` (contiguous, so the
        complex multiply runs over whole rows); cached per length, head count and dtype."""
        key = (cos.shape[0], n_heads, dtype, cos.data_ptr(), torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_turn_cache")  # plain attribute: no state
        if cached is None or cached[0] != key:
            turn = torch.complex(cos.to(dtype), sin.to(dtype))  # (T, hd/2)
            turn = torch.stack([turn, turn, torch.ones_like(turn)], dim=1)  # (T, 3, hd/2)
            turn = turn[:, :, None].expand(-1, -1, n_heads, -1).contiguous()
            cached = (key, turn)
            self.__dict__["_turn_cache"] = cached
        return cached[1]

    def _pair_order(self, d_model: int, n_heads: int, device: torch.device) -> Tensor:
        """Row order of the ``qkv`` weight putting q/k channel ``i + hd/2`` after ``i``."""
        cache = self.__dict__.setdefault("_order_cache", {})  # plain attribute: no state
        # an index built under inference_mode cannot be saved for a later backward pass
        key = (device, torch.is_inference_mode_enabled())
        if key not in cache:
            rows = torch.arange(3 * d_model, device=device).view(3, n_heads, 2, -1)
            qk = rows[:2].transpose(-1, -2).reshape(-1)  # (2D,): i, i + hd/2, i + 1, …
            cache[key] = torch.cat([qk, rows[2].reshape(-1)])  # (3D,)
        return cache[key]

    def _mask(self, seq_len: int, device: torch.device, dtype: torch.dtype, band: bool) -> Tensor:
        """The additive band (or, ``band=False``, causal) mask, built once per
        (length, device, dtype)."""
        key = (seq_len, device, dtype, band, torch.is_inference_mode_enabled())
        cache = self.__dict__.setdefault("_band_cache", {})  # plain attribute: no state
        if key not in cache:
            cache[key] = band_mask(seq_len, self.span if band else seq_len, device, dtype)
        return cache[key]


class _CausalAttentionWithDropout(torch.autograd.Function):
    """``dropout(softmax(q·kᵀ/√hd + mask)) · v`` for ``q, k, v (B, H, T, hd)`` and an additive
    causal or band ``mask (T, T)``, in blocks of query rows.

    The rows ``lo..hi`` of a block read only keys ``klo..hi`` (``klo = lo − span + 1`` with a
    band, else 0), so the fully masked corner of the score matrix is never formed: with
    blocks of ``T/8`` rows (at least 32) about 55–60% of the scores, softmax and dropout
    work of the full square remains. Every visible key of a row lies inside its block, so
    the softmax — and the function — is that of the full masked matrix. No row is
    empty (a step always sees itself), which is why SDPA's guard for empty rows is not
    needed. The ``1/(1 − p)`` dropout scale is applied to the ``(·, T, hd)`` output.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, p: float, span: int | None):
        B, H, T, hd = q.shape
        q, k, v = (t.reshape(B * H, T, hd) for t in (q, k, v))  # (B·H, T, hd)
        block = max(32, -(-T // 8))
        parts = [
            (lo, min(lo + block, T), 0 if span is None else max(0, lo - span + 1))
            for lo in range(0, T, block)
        ]
        sizes = [(hi - lo) * (hi - klo) for lo, hi, klo in parts]
        keeps = keep_mask((B * H, sum(sizes)), p, q.device).to(q.dtype).split(sizes, dim=1)
        y = torch.empty_like(q)  # (B·H, T, hd)
        weights, kept = [], []
        for (lo, hi, klo), keep in zip(parts, keeps, strict=True):
            scores = torch.baddbmm(  # (B·H, hi − lo, hi − klo)
                mask[lo:hi, klo:hi], q[:, lo:hi], k[:, klo:hi].transpose(1, 2), alpha=hd**-0.5
            )
            w = scores.softmax(dim=-1)
            dropped = w * keep.view(B * H, hi - lo, hi - klo)  # zeros where dropped
            y[:, lo:hi] = torch.bmm(dropped, v[:, klo:hi])
            weights.append(w)
            kept.append(dropped)
        ctx.save_for_backward(q, k, v, *weights, *kept)
        ctx.parts, ctx.p, ctx.shape = parts, p, (B, H, T, hd)
        return y.mul_(1.0 / (1.0 - p)).view(B, H, T, hd)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, *saved = ctx.saved_tensors
        n, (B, H, T, hd) = len(ctx.parts), ctx.shape
        g = grad.reshape(B * H, T, hd) * (1.0 / (1.0 - ctx.p))  # (B·H, T, hd)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for (lo, hi, klo), w, dropped in zip(ctx.parts, saved[:n], saved[n:], strict=True):
            g_rows = g[:, lo:hi]  # (B·H, hi − lo, hd)
            grad_v[:, klo:hi] += torch.bmm(dropped.transpose(1, 2), g_rows)
            # softmax backward through the mask: with t = keep ⊙ w ⊙ g_w,
            # g_s = t − w · Σ_keys t   (B·H, hi − lo, hi − klo)
            t = torch.bmm(g_rows, v[:, klo:hi].transpose(1, 2)).mul_(dropped)
            g_s = torch.addcmul(t, w, t.sum(-1, keepdim=True), value=-1.0)
            grad_q[:, lo:hi] = torch.bmm(g_s, k[:, klo:hi]).mul_(hd**-0.5)
            grad_k[:, klo:hi] += torch.bmm(g_s.transpose(1, 2), q[:, lo:hi]).mul_(hd**-0.5)
        grads = (t.view(B, H, T, hd) for t in (grad_q, grad_k, grad_v))
        return (*grads, None, None, None)
