"""Shared building blocks of the backbones, tensors in and tensors out.

Every block maps ``(B, T, D) -> (B, T, D)`` and is causal over ``T``: the output at step
``t`` depends only on inputs at steps ``<= t``. Read top to bottom: norms and rotary
positions, attention, the convolution and state-space mixers, the feed-forwards (dense
and, re-exported from :mod:`~market_nn_plus_ultra.models.moe`, mixture-of-experts),
the TFT gates, then the input embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# the MoE block lives in moe.py; re-exported here so `from ...layers import MoEFeedForward`
# keeps working, and the SwiGLU width rule is shared with its experts
from market_nn_plus_ultra.models.moe import MoEFeedForward, ffn_hidden

__all__ = [
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


def make_norm(kind: str, dim: int) -> nn.Module:
    """``"rms"`` → RMSNorm (no mean subtraction, cheaper), ``"layer"`` → LayerNorm."""
    if kind == "rms":
        return nn.RMSNorm(dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise ValueError(f"model.norm: unknown normalisation {kind!r} — use 'rms' or 'layer'")


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
    """Multi-head causal self-attention with rotary q/k through fused SDPA kernels."""

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, max_seq_len: int = 512
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.rotary = RotaryEmbedding(d_model // n_heads, max_seq_len)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
        cos, sin = self.rotary(T)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_drop(self.proj(y))


class DilatedCausalConv(nn.Module):
    """Depthwise dilated convolution padded on the left only, then a pointwise mix."""

    def __init__(self, d_model: int, kernel: int = 3, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, dilation=dilation, groups=d_model)
        self.pointwise = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.pad(x.transpose(1, 2), (self.pad, 0))  # (B, D, pad + T)
        h = self.depthwise(h).transpose(1, 2)  # (B, T, D)
        return self.drop(self.pointwise(F.gelu(h)))


class DiagonalSSM(nn.Module):
    """S4D diagonal state-space layer (Gu et al. 2022, "On the Parameterization and
    Initialization of Diagonal State Space Models"), one SSM per channel.

    Per channel ``h``: ``s_t = Ā s_{t-1} + B̄ u_t``, ``y_t = 2·Re(C s_t) + D u_t`` with a
    complex diagonal ``A`` (``N = state_dim`` states), zero-order-hold discretisation
    ``Ā = exp(Δ A)``, ``B̄ = (Ā - 1) / A`` (``B = 1``; ``C`` carries the scale). The
    length-``T`` kernel ``K_l = 2·Re(C B̄ Ā^l)`` is applied by a zero-padded FFT
    convolution: O(T log T), causal because ``K`` has no negative lags. Runs in float32
    under autocast (half-precision FFTs need power-of-two lengths and lose precision).
    """

    def __init__(
        self, d_model: int, state_dim: int = 16, dt_min: float = 1e-3, dt_max: float = 1e-1
    ) -> None:
        super().__init__()
        u = torch.rand(d_model)
        log_dt = math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        # S4D-Lin initialisation: A_n = -1/2 + i·π·n
        self.log_a_real = nn.Parameter(torch.full((d_model, state_dim), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(state_dim).repeat(d_model, 1).float())
        self.c = nn.Parameter(torch.randn(d_model, state_dim, 2) * math.sqrt(0.5))  # re, im
        self.d = nn.Parameter(torch.ones(d_model))

    def kernel(self, length: int) -> Tensor:
        """The convolution kernel ``K`` of shape ``(H, length)`` (real arithmetic only)."""
        dt = self.log_dt.exp()[:, None]  # (H, 1)
        a_re, a_im = -self.log_a_real.exp(), self.a_imag  # (H, N)
        mag, ang = (dt * a_re).exp(), dt * a_im  # Ā = mag·e^{i·ang}
        p, q = mag * ang.cos() - 1.0, mag * ang.sin()  # Ā - 1
        den = a_re**2 + a_im**2
        b_re, b_im = (p * a_re + q * a_im) / den, (q * a_re - p * a_im) / den  # B̄ = (Ā-1)/A
        c_re, c_im = self.c[..., 0], self.c[..., 1]
        w_re, w_im = c_re * b_re - c_im * b_im, c_re * b_im + c_im * b_re  # C·B̄
        steps = torch.arange(length, device=dt.device, dtype=dt.dtype)
        decay = ((dt * a_re)[..., None] * steps).exp()  # (H, N, L) = |Ā|^l
        phase = ang[..., None] * steps  # (H, N, L)
        k = decay * (w_re[..., None] * phase.cos() - w_im[..., None] * phase.sin())
        return 2.0 * k.sum(dim=1)  # (H, L)

    def _kernel_spectrum(self, length: int, n: int) -> Tensor:
        """``rfft(K, n)`` of shape ``(H, n // 2 + 1)``, complex64.

        Without autograd (eval, ``no_grad``/``inference_mode``) the spectrum is cached and
        reused while the parameters are unchanged: the key holds each parameter's storage
        and in-place version counter (``Tensor._version``, bumped by every optimiser step
        or ``load_state_dict``), so an update always rebuilds it. With autograd the kernel
        is rebuilt every call, since its graph is needed for the backward pass.
        """
        params = (self.log_dt, self.log_a_real, self.a_imag, self.c)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return torch.fft.rfft(self.kernel(length), n=n)
        key = (
            length,
            torch.is_inference_mode_enabled(),
            *((p.data_ptr(), p._version, p.device) for p in params),
        )
        cached = self.__dict__.get("_spectrum_cache")
        if cached is None or cached[0] != key:
            cached = (key, torch.fft.rfft(self.kernel(length), n=n))
            self.__dict__["_spectrum_cache"] = cached  # a plain attribute: not in state_dict
        return cached[1]

    def forward(self, u: Tensor) -> Tensor:
        T = u.shape[1]
        with torch.autocast(device_type=u.device.type, enabled=False):
            x = u.float().transpose(1, 2)  # (B, H, T)
            n = 2 * T  # zero padding to 2T turns the circular FFT product into a linear one
            spectrum = self._kernel_spectrum(T, n)  # (H, n/2 + 1)
            y = torch.fft.irfft(torch.fft.rfft(x, n=n) * spectrum, n=n)[..., :T]  # (B, H, T)
            y = y + self.d[:, None] * x
        return y.transpose(1, 2).to(u.dtype)  # (B, T, H)


class GatedSSMMixer(nn.Module):
    """``out(SSM(W_u x) ⊙ SiLU(W_g x))``: a diagonal SSM with a multiplicative gate."""

    def __init__(self, d_model: int, state_dim: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.ssm = DiagonalSSM(d_model, state_dim)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        u, gate = self.in_proj(x).chunk(2, dim=-1)  # 2 x (B, T, D)
        return self.drop(self.out_proj(self.ssm(u) * F.silu(gate)))


class SwiGLU(nn.Module):
    """Feed-forward ``W3(SiLU(W1 x) ⊙ W2 x)`` (Shazeer 2020, "GLU Variants")."""

    def __init__(self, d_model: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = ffn_hidden(d_model, ff_mult)
        self.w12 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)  # 2 x (B, T, hidden)
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
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Tensor:
        """``(B, T, F)`` → ``(B, P, D)``; market state is ignored when not enabled."""
        h = self.patch(x)  # (B, P, D)
        if self.market is not None and market_state is not None:
            h = h + self.patch.pool(self.market(market_state))
        return self.drop(h)

    def unpatch(self, h: Tensor, seq_len: int) -> Tensor:
        return self.patch.unpatch(h, seq_len)
