"""The GPU hot-path fixes compute what the old code computed, without host syncs.

Each test holds an independent reference (the old formulation, written out here) and
checks the new code against it on the same weights and inputs.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import (
    DiagonalSSM,
    MarketStateEmbedding,
    MoEFeedForward,
    RotaryEmbedding,
)
from market_nn_plus_ultra.models.registry import build_backbone


@contextlib.contextmanager
def _no_host_sync():
    """``.tolist()``, ``.item()`` and ``bool(tensor)`` raise inside the block."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("host sync on the hot path")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("tolist", "item", "__bool__"):
            mp.setattr(torch.Tensor, name, refuse)
        yield


# --- rotary ---------------------------------------------------------------------------


def test_rotary_grows_without_register_buffer_and_keeps_the_state_dict(monkeypatch):
    rot = RotaryEmbedding(8, max_seq_len=4)
    keys_before = set(rot.state_dict())

    def refuse(*_args, **_kwargs):
        raise AssertionError("register_buffer called in forward")

    monkeypatch.setattr(rot, "register_buffer", refuse)
    cos, sin = rot(10)  # longer than the cache: grows to max(10, 2·4)
    assert rot.cos.shape == (10, 4) and cos.shape == (10, 4)
    inv = 10_000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float32) / 8)
    angles = torch.arange(10, dtype=torch.float32)[:, None] * inv  # (10, 4)
    torch.testing.assert_close(cos, angles.cos())
    torch.testing.assert_close(sin, angles.sin())
    assert set(rot.state_dict()) == keys_before == set()  # nothing persistent
    assert "cos" in dict(rot.named_buffers())  # still a buffer: follows .to(device)


# --- state-space kernel cache ----------------------------------------------------------


def _ssm_reference(ssm: DiagonalSSM, u: torch.Tensor) -> torch.Tensor:
    """The old forward: kernel and its FFT rebuilt on every call."""
    T = u.shape[1]
    x = u.float().transpose(1, 2)
    n = 2 * T
    k = torch.fft.rfft(ssm.kernel(T), n=n)
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * k, n=n)[..., :T]
    return (y + ssm.d[:, None] * x).transpose(1, 2)


def test_ssm_caches_its_kernel_in_eval_and_rebuilds_after_an_update():
    torch.manual_seed(0)
    ssm = DiagonalSSM(6, state_dim=4).eval()
    u = torch.randn(2, 20, 6)
    with torch.no_grad():
        first = ssm(u)
        cached = ssm._spectrum_cache[1]
        second = ssm(u)
        assert ssm._spectrum_cache[1] is cached  # reused, not rebuilt
        torch.testing.assert_close(first, _ssm_reference(ssm, u), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(second, first, rtol=0, atol=0)
        ssm.log_dt.add_(0.3)  # an optimiser step / load_state_dict bumps the version
        updated = ssm(u)
        assert ssm._spectrum_cache[1] is not cached
        torch.testing.assert_close(updated, _ssm_reference(ssm, u), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(updated, first)
    assert "_spectrum_cache" not in ssm.state_dict()


def test_ssm_training_forward_still_backpropagates_into_the_kernel():
    ssm = DiagonalSSM(4, state_dim=2).train()
    ssm(torch.randn(1, 8, 4)).sum().backward()
    assert ssm.log_dt.grad is not None and ssm.log_dt.grad.abs().sum() > 0


# --- mixture of experts -----------------------------------------------------------------


def _moe_reference(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """The old fallback: sort by expert, split by ``counts.tolist()``, loop over experts."""
    B, T, D = x.shape
    tokens = x.reshape(B * T, D)
    gates, experts, _ = moe.route(tokens)
    flat = experts.reshape(-1)
    order = flat.argsort(stable=True)
    source = order // moe.top_k
    counts = torch.bincount(flat, minlength=moe.num_experts)
    outs = []
    for e, chunk in enumerate(tokens[source].split(counts.tolist())):
        a, b = (chunk @ moe.w12[e]).chunk(2, dim=-1)
        outs.append((F.silu(a) * b) @ moe.w3[e])
    h = torch.cat(outs) * gates.reshape(-1)[order, None]
    return torch.zeros_like(tokens).index_add(0, source, h).view(B, T, D)


@pytest.mark.parametrize("d_model", [16, 12])  # 12: not a multiple of 8 → dense fallback
def test_moe_forward_matches_the_per_expert_loop_without_host_sync(d_model):
    torch.manual_seed(0)
    moe = MoEFeedForward(d_model, num_experts=4, top_k=2, ff_mult=2).eval()
    x = torch.randn(3, 7, d_model)
    with torch.no_grad():
        with _no_host_sync():
            out = moe(x)
            aux = moe.aux_loss
        reference = _moe_reference(moe, x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(aux)


def test_moe_dense_and_grouped_paths_equal_the_old_loop():
    torch.manual_seed(1)
    moe = MoEFeedForward(16, num_experts=4, top_k=2, ff_mult=2).eval()
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        reference = _moe_reference(moe, x)
        tokens = x.reshape(-1, 16)
        gates, experts, _ = moe.route(tokens)
        counts = torch.bincount(experts.reshape(-1), minlength=4)
        torch.testing.assert_close(moe(x), reference, rtol=1e-5, atol=1e-6)
        dense = moe._dense(tokens, gates, experts).view_as(reference)
        grouped = moe._grouped(tokens, gates, experts, counts).view_as(reference)
    torch.testing.assert_close(dense, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grouped, reference, rtol=1e-5, atol=1e-6)


def test_moe_dense_path_gradients_equal_the_old_loop():
    torch.manual_seed(2)
    moe = MoEFeedForward(12, num_experts=3, top_k=1, ff_mult=2)
    x = torch.randn(2, 5, 12)
    _moe_reference(moe, x).square().sum().backward()
    expected = [p.grad.clone() for p in moe.parameters()]
    moe.zero_grad()
    moe(x).square().sum().backward()  # D=12: the dense path
    for p, g in zip(moe.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


# --- temporal fusion ----------------------------------------------------------------------


def _tft_cfg(**kw) -> ModelConfig:
    return ModelConfig(
        architecture="temporal_fusion", d_model=16, tft_hidden=16, n_heads=2, dropout=0.0, **kw
    )


def test_temporal_fusion_fused_attention_equals_the_explicit_matrix():
    torch.manual_seed(0)
    model = build_backbone(_tft_cfg(), 5).eval()
    x = torch.randn(3, 24, 5)
    with torch.no_grad():
        fused = model(x)
        assert model.last_attention is None and model.last_variable_weights is None
        explicit, weights, attn = model.interpret(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert weights.shape == (3, 24, 5) and attn.shape == (3, 24, 24)
    assert not model.record_weights  # interpret() restores the flag
    with torch.no_grad():
        model(x)
    assert model.last_attention is attn  # plain forwards leave the recorded ones alone


def test_temporal_fusion_training_forward_keeps_no_weights():
    model = build_backbone(_tft_cfg(), 4).train()
    model(torch.randn(2, 10, 4)).sum().backward()
    assert model.last_attention is None and model.last_variable_weights is None


# --- market state embedding -----------------------------------------------------------


def test_market_state_embedding_uses_every_parameter_with_regime_only():
    """DDP without find_unused_parameters fails at step 2 if a parameter gets no grad."""
    torch.manual_seed(0)
    emb = MarketStateEmbedding(num_regimes=3, d_model=8)
    regime = torch.tensor([[0, 1, 2, 1]])
    out = emb({"regime": regime})
    torch.testing.assert_close(out, emb.regime(regime).expand_as(out))  # value unchanged
    out.square().sum().backward()
    for name, p in emb.named_parameters():
        assert p.grad is not None, f"{name} would be an unused parameter under DDP"
    vol = emb({"volatility": torch.full((1, 4), math.e)})
    torch.testing.assert_close(vol, emb.volatility(torch.ones(1, 4, 1)))
