"""The gated diagonal state-space mixer (S4D) and its FFT causal convolution.

:class:`DiagonalSSM` maps ``(B, T, H) -> (B, T, H)``, one linear time-invariant SSM per
channel applied as a causal convolution with its length-``T`` kernel;
:class:`GatedSSMMixer` puts it behind projections and a SiLU gate. Both are causal over
``T``; :mod:`~market_nn_plus_ultra.models.layers` re-exports them with the other blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.models.embedding import Dropout

__all__ = ["DiagonalSSM", "GatedSSMMixer"]


def _fft_size(length: int) -> int:
    """The smallest even 2·3·5-smooth size ``≥ 2·length − 1``: an FFT that long turns the
    circular product into the linear causal convolution, and smooth sizes are fast."""
    n = max(2, 2 * length - 1)
    while True:
        n += n % 2
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


class _CausalFFTConv(torch.autograd.Function):
    """``y_t = Σ_{j≤t} k_{t−j} x_j`` for ``x (B, H, T)`` and per-channel kernels ``k (H, T)``
    by FFTs of size ``n ≥ 2T − 1``; the backward is the two matching correlations by the
    same FFTs, ``dx = irfft(G·conj(K))`` and ``dk = irfft(Σ_B G·conj(X))`` (autograd
    differentiates each FFT separately, through full complex transforms)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, n: int) -> Tensor:
        x_f, k_f = torch.fft.rfft(x, n=n), torch.fft.rfft(k, n=n)  # (B, H, F), (H, F)
        ctx.save_for_backward(x_f, k_f)
        ctx.n = n
        return torch.fft.irfft(x_f * k_f, n=n)[..., : x.shape[-1]]  # (B, H, T)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x_f, k_f = ctx.saved_tensors
        T = grad.shape[-1]
        g_f = torch.fft.rfft(grad, n=ctx.n)  # (B, H, F)
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.fft.irfft(g_f * k_f.conj(), n=ctx.n)[..., :T]  # (B, H, T)
        if ctx.needs_input_grad[1]:
            grad_k = torch.fft.irfft((g_f * x_f.conj()).sum(0), n=ctx.n)[..., :T]  # (H, T)
        return grad_x, grad_k, None


def _grid(length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Lags ``l = s·j + i`` with ``s ≈ √length``: the exponents ``(i…, s·j…)`` of the two
    power grids, ``(s + m,)``, and the lag of every ``(j, i)``, ``(m, s)``; cached."""
    key = (length, device, dtype, torch.is_inference_mode_enabled())
    if key not in _GRIDS:
        if len(_GRIDS) >= 64:  # many window lengths: start over rather than grow
            _GRIDS.clear()
        s = math.isqrt(max(length - 1, 0)) + 1
        m = -(-length // s)
        lags = torch.arange(m * s, device=device, dtype=dtype).view(m, s)  # (m, s)
        _GRIDS[key] = (torch.cat([lags[0], lags[:, 0]]), lags)
    return _GRIDS[key]


_GRIDS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _powers(z: Tensor, exponents: Tensor) -> Tensor:
    """``exp(z · e)`` for ``z (H, N)`` complex and real ``exponents (E,)`` → ``(H, E, N)``
    (in real arithmetic: complex ``exp`` is not vectorised on CPU)."""
    e = exponents[:, None]  # (E, 1)
    mag, ang = (z.real[:, None] * e).exp(), z.imag[:, None] * e  # (H, E, N)
    return torch.complex(mag * ang.cos(), mag * ang.sin())


class _S4DKernel(torch.autograd.Function):
    """The S4D kernel ``K_l = Re Σ_n W_n Ā_n^l`` (``W = 2·C·B̄``, ``l < length``), plus the
    skip ``D`` at lag 0 when given, with its gradient in closed form.

    With ``l = s·j + i`` (``s ≈ √length``), ``Ā^l = Ā^i · (Ā^s)^j``: the powers are taken
    on ``(H, s, N)`` and ``(H, length/s, N)`` grids and ``K`` is one product-and-sum, so
    no exp/cos/sin runs over the full ``(H, N, length)`` grid. The backward needs the
    two transposed sums ``S₀ = Σ_l G_l conj(Ā)^l`` and ``S₁ = Σ_l l·G_l conj(Ā)^l``, taken
    on the same grids, then the chain rule through ``z = Δ·A``, ``Ā = e^z``,
    ``B̄ = (Ā − 1)/A`` and ``W = 2·C·B̄`` on ``(H, N)`` (one autograd node instead of
    about two hundred small ones).
    """

    @staticmethod
    def forward(ctx, log_dt, log_a_real, a_imag, c, d, length: int):
        exponents, lags = _grid(length, log_dt.device, log_dt.dtype)
        m, s = lags.shape
        dt = log_dt.exp()[:, None]  # (H, 1)
        a = torch.complex(-log_a_real.exp(), a_imag)  # (H, N)
        z = dt * a  # log Ā
        lam = z.exp()  # Ā
        b_bar = (lam - 1.0) / a  # B̄
        c2 = 2.0 * torch.view_as_complex(c.contiguous())  # the 2 of 2·Re
        w = c2 * b_bar  # (H, N)
        powers = _powers(z, exponents)  # (H, s + m, N): Ā^i, then Ā^{s·j}
        fine, coarse = powers[:, :s], torch.view_as_real(powers[:, s:])  # (H,s,N), (H,m,N,2)
        left = torch.view_as_real((w[:, None] * fine).conj_physical())  # Re, −Im: (H, s, N, 2)
        k = (coarse[:, :, None] * left[:, None]).sum((-2, -1))  # (H, m, s): Re(W·Ā^l)
        k = k.view(k.shape[0], m * s)[:, :length].contiguous()  # (H, length)
        if d is not None:
            k[:, 0] += d
        ctx.save_for_backward(dt, a, lam, b_bar, c2, w, fine, coarse, lags)
        return k

    @staticmethod
    def backward(ctx, grad):
        dt, a, lam, b_bar, c2, w, fine, coarse, lags = ctx.saved_tensors
        (m, s), (H, N) = lags.shape, a.shape
        g = F.pad(grad, (0, m * s - grad.shape[1])).view(H, 1, m, s, 1)  # (H, 1, m, s, 1)
        g = torch.cat([g, g * lags[..., None]], dim=1)  # G and l·G, (H, 2, m, s, 1)
        coarse = coarse.view(H, 1, m, 1, 2 * N)  # re/im interleaved
        r = (g * coarse).sum(2).view(H, 2, s, N, 2)  # Σ_j G·Ā^{s·j}, (H, 2, s, N, 2)
        t = (fine[:, None] * torch.view_as_complex(r)).sum(2).conj()  # (H, 2, N): S₀, S₁
        s0, s1 = t[:, 0], t[:, 1]
        g_b = c2.conj() * s0  # ∇B̄
        g_z = w.conj() * s1 + (lam / a).conj() * g_b  # ∇z: through Ā^l and through B̄
        g_a = dt * g_z - (b_bar / a).conj() * g_b  # ∇A
        grad_log_dt = (a.conj() * g_z).real.sum(-1) * dt[:, 0]  # (H,)
        grad_c = torch.view_as_real(2.0 * b_bar.conj() * s0)  # (H, N, 2)
        grad_d = grad[:, 0] if ctx.needs_input_grad[4] else None
        return grad_log_dt, g_a.real * a.real, g_a.imag, grad_c, grad_d, None


class DiagonalSSM(nn.Module):
    """S4D diagonal state-space layer (Gu et al. 2022, "On the Parameterization and
    Initialization of Diagonal State Space Models"), one SSM per channel.

    Per channel ``h``: ``s_t = Ā s_{t-1} + B̄ u_t``, ``y_t = 2·Re(C s_t) + D u_t`` with a
    complex diagonal ``A`` (``N = state_dim`` states), zero-order-hold discretisation
    ``Ā = exp(Δ A)``, ``B̄ = (Ā - 1) / A`` (``B = 1``; ``C`` carries the scale). The
    length-``T`` kernel ``K_l = 2·Re(C B̄ Ā^l)`` (the skip ``D`` added at lag 0) is applied
    by a zero-padded FFT convolution: O(T log T), causal because ``K`` has no negative
    lags. Runs in float32 under autocast (half-precision FFTs need power-of-two lengths
    and lose precision). With ``span`` the kernel keeps its first ``span`` taps (a step
    reads the ``span − 1`` before it and itself) and runs as a direct depthwise
    convolution when shorter than the sequence.
    """

    def __init__(
        self,
        d_model: int,
        state_dim: int = 16,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        span: int | None = None,
    ) -> None:
        super().__init__()
        self.span = span
        u = torch.rand(d_model)
        log_dt = math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        # S4D-Lin initialisation: A_n = -1/2 + i·π·n
        self.log_a_real = nn.Parameter(torch.full((d_model, state_dim), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(state_dim).repeat(d_model, 1).float())
        self.c = nn.Parameter(torch.randn(d_model, state_dim, 2) * math.sqrt(0.5))  # re, im
        self.d = nn.Parameter(torch.ones(d_model))

    def kernel(self, length: int) -> Tensor:
        """The convolution kernel ``K_l = 2·Re(C B̄ Ā^l)``, shape ``(H, length)``."""
        return _S4DKernel.apply(self.log_dt, self.log_a_real, self.a_imag, self.c, None, length)

    def _kernel_with_skip(self, length: int) -> Tensor:
        """``K`` with the skip ``D`` added at lag 0: ``y = K * u`` then includes ``D·u``."""
        return _S4DKernel.apply(self.log_dt, self.log_a_real, self.a_imag, self.c, self.d, length)

    def _cached(self, length: int, n: int) -> Tensor:
        """Without autograd: ``rfft(K + D·δ, n)`` (or, ``n = 0``, the kernel itself), cached
        and reused while the parameters are unchanged.

        The key holds each parameter's storage and in-place version counter
        (``Tensor._version``, bumped by every optimiser step or ``load_state_dict``), so an
        update always rebuilds it.
        """
        params = (self.log_dt, self.log_a_real, self.a_imag, self.c, self.d)
        key = (
            length,
            n,
            torch.is_inference_mode_enabled(),
            *((p.data_ptr(), p._version, p.device) for p in params),
        )
        cached = self.__dict__.get("_spectrum_cache")
        if cached is None or cached[0] != key:
            k = self._kernel_with_skip(length)  # (H, length)
            cached = (key, k if n == 0 else torch.fft.rfft(k, n=n))
            self.__dict__["_spectrum_cache"] = cached  # a plain attribute: not in state_dict
        return cached[1]

    def forward(self, u: Tensor) -> Tensor:
        T = u.shape[1]
        params = (self.log_dt, self.log_a_real, self.a_imag, self.c, self.d)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        with torch.autocast(device_type=u.device.type, enabled=False):
            x = u.float().transpose(1, 2)  # (B, H, T)
            if self.span is not None and self.span < T:  # direct: T·span MACs per channel
                k = self._kernel_with_skip(self.span) if grad else self._cached(self.span, 0)
                taps = k.flip(-1).unsqueeze(1)  # (H, 1, span), oldest lag first
                y = F.conv1d(F.pad(x, (self.span - 1, 0)), taps, groups=x.shape[1])
            elif grad or (torch.is_grad_enabled() and u.requires_grad):
                y = _CausalFFTConv.apply(x, self._kernel_with_skip(T), _fft_size(T))
            else:
                n = _fft_size(T)
                y = torch.fft.irfft(torch.fft.rfft(x, n=n) * self._cached(T, n), n=n)[..., :T]
        return y.transpose(1, 2).to(u.dtype)  # (B, T, H)


class GatedSSMMixer(nn.Module):
    """``out(SSM(W_u x) ⊙ SiLU(W_g x))``: a diagonal SSM with a multiplicative gate."""

    def __init__(
        self, d_model: int, state_dim: int = 16, dropout: float = 0.0, span: int | None = None
    ) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.ssm = DiagonalSSM(d_model, state_dim, span=span)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``; ``scale (D,)`` multiplies the input channels."""
        w = self.in_proj.weight if scale is None else self.in_proj.weight * scale  # (2D, D)
        u, gate = F.linear(x, w).chunk(2, dim=-1)  # 2 x (B, T, D)
        return self.drop(self.out_proj(self.ssm(u) * F.silu(gate)))
