"""The fast paths of the shared layers compute what the plain PyTorch forms compute.

Each test holds an independent reference — the formulation the layers used before
(written out here), PyTorch's own op, or a float64 gradient check — and compares values
and gradients on the same weights and inputs.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import attention, layers, ssm
from market_nn_plus_ultra.models.embedding import Dropout, dropout, keep_mask
from market_nn_plus_ultra.models.hybrid_transformer import HybridBlock
from market_nn_plus_ultra.models.layers import (
    CausalSelfAttention,
    DiagonalSSM,
    DilatedCausalConv,
    GatedSSMMixer,
    RMSNorm,
    SwiGLU,
    apply_rotary,
    make_norm,
)
from market_nn_plus_ultra.models.lookback import band_mask


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return list(torch.autograd.grad(out, inputs, g))


def _close(a, b, tol: float) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


# --- dropout ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_keeps_one_minus_p_and_follows_the_seed(p: float) -> None:
    n = 400_000
    torch.manual_seed(3)
    mask = keep_mask((n,), p, torch.device("cpu"))
    torch.manual_seed(3)
    again = keep_mask((n,), p, torch.device("cpu"))
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(mask.mean().item() - (1 - p)) < 5 * sigma
    assert torch.equal(mask, again)  # torch.manual_seed fixes the mask
    # both 32-bit halves of each random word are used: neighbours are uncorrelated
    pairs = mask.view(-1, 2) - (1 - p)
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item()) < 5 * p * (1 - p) / math.sqrt(n / 2)


def test_dropout_scales_survivors_and_is_the_identity_when_off() -> None:
    x = torch.full((200, 500), 2.0, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    values = set(y.detach().unique().tolist())
    assert values <= {0.0, 2.0 / 0.8} and len(values) == 2
    assert abs(y.detach().mean().item() - 2.0) < 0.02  # unbiased: E[y] = x
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, y.detach() / 2.0)  # d y / d x = mask / (1 − p)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.2).eval()
    assert isinstance(module, nn.Dropout) and module(x) is x and not module.state_dict()


# --- RMSNorm ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_matches_torch_values_and_gradients(dtype: torch.dtype) -> None:
    norm = make_norm("rms", 24).to(dtype)
    assert isinstance(norm, RMSNorm) and isinstance(norm, nn.RMSNorm)
    with torch.no_grad():
        norm.weight.normal_()
    x = (3 * torch.randn(4, 7, 24, dtype=dtype)).requires_grad_()
    out = norm(x)
    reference = F.rms_norm(x, (24,), norm.weight, 1e-6)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    _close([out], [reference], tol)
    _close(_grads(out, [x, norm.weight]), _grads(reference, [x, norm.weight]), tol)


# --- attention --------------------------------------------------------------------------


def _attention_reference(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The half-split rotary form through SDPA (the layer's formulation before)."""
    B, T, D = x.shape
    H = attn.n_heads
    q, k, v = attn.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
    cos, sin = attn.rotary(T)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if attn.span is not None and attn.span < T:
        mask = band_mask(T, attn.span, x.device, q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.proj(y.transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("span", [None, 5])
def test_rotary_pairs_side_by_side_give_the_half_split_attention(dtype, span) -> None:
    attn = CausalSelfAttention(16, 2, max_seq_len=8, span=span).to(dtype)
    x = torch.randn(2, 13, 16, dtype=dtype, requires_grad=True)
    params = [x, attn.qkv.weight, attn.proj.weight]
    out, reference = attn(x), _attention_reference(attn, x)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _close([out], [reference], tol)
    _close(_grads(out, params), _grads(reference, params), tol)


def _dense_attention(q, k, v, mask, keep, p):
    """``dropout(softmax(q·kᵀ/√hd + mask)) · v`` over the full square, ``keep (B,H,T,T)``."""
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + mask).softmax(-1)
    return (weights * keep) @ v / (1 - p)


def _blocks(T: int, span: int | None) -> list[tuple[int, int, int]]:
    """The query blocks and first keys the dropout attention visits (its documented rule)."""
    size = max(32, -(-T // 8))
    return [
        (lo, min(lo + size, T), 0 if span is None else max(0, lo - span + 1))
        for lo in range(0, T, size)
    ]


@pytest.mark.parametrize(("T", "span"), [(20, None), (70, None), (70, 9), (300, None)])
def test_dropout_attention_in_blocks_equals_the_dense_masked_softmax(monkeypatch, T, span):
    """The same keep mask laid over the full square: values and gradients agree."""
    B, H, hd, p = 2, 2, 4, 0.3
    parts = _blocks(T, span)
    dense_keep = (torch.rand(B * H, T, T) > p).double()  # (B·H, T, T)
    flat = torch.cat([dense_keep[:, lo:hi, klo:hi].reshape(B * H, -1) for lo, hi, klo in parts], 1)

    def fixed_mask(shape, p_, device):
        assert tuple(shape) == tuple(flat.shape) and p_ == p
        return flat.float()

    monkeypatch.setattr(attention, "keep_mask", fixed_mask)
    q, k, v = (torch.randn(B, H, T, hd, dtype=torch.float64, requires_grad=True) for _ in "qkv")
    mask = band_mask(T, span or T, torch.device("cpu"), torch.float64)
    out = attention._CausalAttentionWithDropout.apply(q, k, v, mask, p, span)
    reference = _dense_attention(q, k, v, mask, dense_keep.view(B, H, T, T), p)
    _close([out], [reference], 1e-10)
    _close(_grads(out, [q, k, v]), _grads(reference, [q, k, v]), 1e-10)


def test_attention_drops_in_training_and_equals_the_reference_in_eval() -> None:
    attn = CausalSelfAttention(16, 2, dropout=0.5, max_seq_len=8).train()
    x = torch.randn(2, 40, 16)
    first, second = attn(x), attn(x)
    assert not torch.allclose(first, second)  # fresh masks per call
    attn.eval()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _attention_reference(attn, x))


# --- dilated causal convolution ---------------------------------------------------------


def _conv_reference(conv: DilatedCausalConv, x: torch.Tensor) -> torch.Tensor:
    """``F.conv1d`` on ``(B, D, T)`` with left padding (the layer's formulation before)."""
    h = conv.depthwise(F.pad(x.transpose(1, 2), (conv.pad, 0))).transpose(1, 2)
    return conv.pointwise(F.gelu(h))


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (3, 4), (1, 1), (4, 3)])
def test_depthwise_shifted_sums_equal_conv1d(kernel: int, dilation: int) -> None:
    conv = DilatedCausalConv(8, kernel, dilation).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    params = [x, conv.depthwise.weight, conv.depthwise.bias, conv.pointwise.weight]
    out, reference = conv(x), _conv_reference(conv, x)
    _close([out], [reference], 1e-12)
    _close(_grads(out, params), _grads(reference, params), 1e-12)
    with torch.no_grad():  # without autograd the layer runs F.conv1d itself
        _close([conv(x)], [reference], 1e-12)


def test_depthwise_conv_function_gradcheck_without_bias() -> None:
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: layers._DepthwiseCausalConv.apply(x, w, None, 3), (x, w)
    )


# --- state-space kernel and FFT convolution ---------------------------------------------


def _kernel_reference(s: DiagonalSSM, length: int) -> torch.Tensor:
    """``K_l = 2·Re(C B̄ Ā^l)`` with exp/cos/sin over the full ``(H, N, L)`` grid."""
    dt = s.log_dt.exp()[:, None]
    a_re, a_im = -s.log_a_real.exp(), s.a_imag
    mag, ang = (dt * a_re).exp(), dt * a_im
    p, q = mag * ang.cos() - 1.0, mag * ang.sin()
    den = a_re**2 + a_im**2
    b_re, b_im = (p * a_re + q * a_im) / den, (q * a_re - p * a_im) / den
    c_re, c_im = s.c[..., 0], s.c[..., 1]
    w_re, w_im = c_re * b_re - c_im * b_im, c_re * b_im + c_im * b_re
    steps = torch.arange(length, dtype=dt.dtype)
    decay = ((dt * a_re)[..., None] * steps).exp()
    phase = ang[..., None] * steps
    return 2.0 * (decay * (w_re[..., None] * phase.cos() - w_im[..., None] * phase.sin())).sum(1)


def _ssm(dtype: torch.dtype, d_model: int = 6, state_dim: int = 5) -> DiagonalSSM:
    s = DiagonalSSM(d_model, state_dim, dt_min=1e-2, dt_max=0.5).to(dtype)
    with torch.no_grad():
        s.log_a_real.add_(0.5 * torch.randn_like(s.log_a_real))
        s.d.copy_(torch.randn(d_model))
    return s


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 128])
def test_s4d_kernel_equals_the_full_grid_formula(length: int) -> None:
    s64 = _ssm(torch.float64)
    params = [s64.log_dt, s64.log_a_real, s64.a_imag, s64.c]
    new, old = s64.kernel(length), _kernel_reference(s64, length)
    _close([new], [old], 1e-12)
    _close(_grads(new, params), _grads(old, params), 1e-10)
    s32 = _ssm(torch.float32)
    s32.load_state_dict(s64.state_dict())
    scale = old.abs().max().item()
    torch.testing.assert_close(s32.kernel(length), old.float(), atol=1e-5 * scale, rtol=0)


def test_s4d_kernel_gradcheck_with_the_skip() -> None:
    s = _ssm(torch.float64, d_model=3, state_dim=4)
    params = (s.log_dt, s.log_a_real, s.a_imag, s.c, s.d)
    for length in (1, 13):
        assert torch.autograd.gradcheck(partial(ssm._S4DKernel.apply, length=length), params)


def _ssm_reference(s: DiagonalSSM, u: torch.Tensor) -> torch.Tensor:
    """FFT of size 2T, kernel from the full-grid formula, ``D·u`` added after; the input in
    float32, as the layer runs it."""
    T = u.shape[1]
    x = u.float().transpose(1, 2)
    spectrum = torch.fft.rfft(_kernel_reference(s, T), n=2 * T)
    y = torch.fft.irfft(torch.fft.rfft(x, n=2 * T) * spectrum, n=2 * T)[..., :T]
    return (y + s.d[:, None] * x).transpose(1, 2).to(u.dtype)


@pytest.mark.parametrize("T", [1, 5, 127, 128])
def test_fft_convolution_function_equals_the_direct_causal_sum(T: int) -> None:
    x = torch.randn(2, 3, T, dtype=torch.float64, requires_grad=True)  # (B, H, T)
    k = torch.randn(3, T, dtype=torch.float64, requires_grad=True)  # (H, T)
    out = ssm._CausalFFTConv.apply(x, k, ssm._fft_size(T))
    # y_t = Σ_{j ≤ t} k_{t−j} x_j: conv1d (a correlation) with the kernel flipped
    reference = F.conv1d(F.pad(x, (T - 1, 0)), k.flip(-1).unsqueeze(1), groups=3)
    _close([out], [reference], 1e-10)
    _close(_grads(out, [x, k]), _grads(reference, [x, k]), 1e-10)
    if T <= 5:
        assert torch.autograd.gradcheck(
            partial(ssm._CausalFFTConv.apply, n=ssm._fft_size(T)), (x, k)
        )


@pytest.mark.parametrize("T", [1, 5, 127, 128])
def test_ssm_fft_convolution_equals_the_plain_fft_path(T: int) -> None:
    """float32, as the layer always runs; the old path: 2T-point FFTs, D·u added after."""
    s = _ssm(torch.float32)
    u = torch.randn(3, T, 6, requires_grad=True)
    params = [u, s.log_dt, s.log_a_real, s.a_imag, s.c, s.d]
    out, reference = s(u), _ssm_reference(s, u)
    scale = reference.abs().max().item()
    torch.testing.assert_close(out, reference, atol=1e-5 * scale, rtol=0)
    for new, old in zip(_grads(out, params), _grads(reference, params), strict=True):
        torch.testing.assert_close(new, old, atol=1e-5 * old.abs().max().item(), rtol=0)
    with torch.no_grad():  # the cached-spectrum path without autograd
        torch.testing.assert_close(s(u), reference, atol=1e-5 * scale, rtol=0)


def test_fft_size_is_smooth_even_and_long_enough() -> None:
    assert [ssm._fft_size(t) for t in (1, 2, 100, 127, 128, 129)] == [2, 4, 200, 256, 256, 270]
    for t in range(1, 600):
        n = ssm._fft_size(t)
        rest = n
        for f in (2, 3, 5):
            while rest % f == 0:
                rest //= f
        assert n >= 2 * t - 1 and n % 2 == 0 and rest == 1


# --- the hybrid block end to end ---------------------------------------------------------


def _gated_ssm_reference(mixer: GatedSSMMixer, x: torch.Tensor) -> torch.Tensor:
    u, gate = mixer.in_proj(x).chunk(2, dim=-1)
    return mixer.out_proj(_ssm_reference(mixer.ssm, u) * F.silu(gate))


def _block_reference(block: HybridBlock, x: torch.Tensor) -> torch.Tensor:
    def norm(i: int, h: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(h, (h.shape[-1],), block.norms[i].weight, 1e-6)

    x = x + _attention_reference(block.attn, norm(0, x))
    x = x + _conv_reference(block.conv, norm(1, x))
    x = x + _gated_ssm_reference(block.ssm, norm(2, x))
    return x + block.ffn(norm(3, x))


def test_hybrid_block_equals_the_plain_formulation() -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, dropout=0.0, ssm_state_dim=4, max_seq_len=8)
    block = HybridBlock(cfg, 2, SwiGLU(16, 2)).double().train()
    with torch.no_grad():  # weights away from 1: the norm weights fold into the mixers
        for norm in block.norms:
            norm.weight.normal_()
    x = torch.randn(2, 37, 16, dtype=torch.float64, requires_grad=True)
    params = [x, *block.parameters()]
    out, reference = block(x), _block_reference(block, x)
    # float64 throughout except the SSM, which runs in float32 either way
    _close([out], [reference], 1e-6)
    _close(_grads(out, params), _grads(reference, params), 1e-6)


def test_hybrid_block_state_dict_is_unchanged() -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, ssm_state_dim=4, conv_kernel=3)
    shapes = {k: tuple(v.shape) for k, v in HybridBlock(cfg, 2, SwiGLU(16, 2)).state_dict().items()}
    assert shapes == {
        **{f"norms.{i}.weight": (16,) for i in range(4)},
        "attn.qkv.weight": (48, 16),
        "attn.proj.weight": (16, 16),
        "conv.depthwise.weight": (16, 1, 3),
        "conv.depthwise.bias": (16,),
        "conv.pointwise.weight": (16, 16),
        "conv.pointwise.bias": (16,),
        "ssm.in_proj.weight": (32, 16),
        "ssm.ssm.log_dt": (16,),
        "ssm.ssm.log_a_real": (16, 4),
        "ssm.ssm.a_imag": (16, 4),
        "ssm.ssm.c": (16, 4, 2),
        "ssm.ssm.d": (16,),
        "ssm.out_proj.weight": (16, 16),
        "ffn.w12.weight": (48, 16),
        "ffn.w3.weight": (16, 24),
    }
