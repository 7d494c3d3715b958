"""Shared layers: shapes, gradients, causality, and hand-checked values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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
    apply_rotary,
    make_norm,
)

D = 16

BLOCKS = {
    "attention": lambda: CausalSelfAttention(D, n_heads=4, max_seq_len=8),
    "conv": lambda: DilatedCausalConv(D, kernel=3, dilation=2),
    "ssm": lambda: DiagonalSSM(D, state_dim=4),
    "gated_ssm": lambda: GatedSSMMixer(D, state_dim=4),
    "swiglu": lambda: SwiGLU(D, ff_mult=2),
    "moe": lambda: MoEFeedForward(D, num_experts=4, top_k=2, ff_mult=2),
    "moe_unaligned": lambda: MoEFeedForward(12, num_experts=3, top_k=2, ff_mult=2),
    "grn": lambda: GatedResidualNetwork(D, 8),
    "glu": lambda: GatedLinearUnit(D, D),
}


def _width(name: str) -> int:
    return 12 if name == "moe_unaligned" else D


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_shape_and_finite_gradients(name: str) -> None:
    block = BLOCKS[name]()
    x = torch.randn(2, 11, _width(name), requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.pow(2).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in block.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("t", [0, 5, 12])
def test_block_is_causal(name: str, t: int) -> None:
    block = BLOCKS[name]().eval()
    x = torch.randn(2, 14, _width(name))
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :]) * 3.0
    with torch.no_grad():
        y, y2 = block(x), block(x2)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert (y[:, t + 1 :] - y2[:, t + 1 :]).abs().max() > 1e-3  # the perturbation mattered


def test_make_norm_choices_and_error() -> None:
    assert isinstance(make_norm("rms", 4), nn.RMSNorm)
    assert isinstance(make_norm("layer", 4), nn.LayerNorm)
    with pytest.raises(ValueError, match="'rms' or 'layer'"):
        make_norm("batch", 4)


def test_apply_rotary_rotates_pairs_by_position() -> None:
    # head size 2 → one frequency of exactly 1 rad per step: (1, 0) at step p → (cos p, sin p)
    rotary = RotaryEmbedding(2, max_seq_len=4)
    cos, sin = rotary(4)
    x = torch.tensor([1.0, 0.0]).repeat(1, 1, 4, 1)  # (B=1, H=1, T=4, hd=2)
    out = apply_rotary(x, cos, sin)[0, 0]
    steps = torch.arange(4.0)
    torch.testing.assert_close(out, torch.stack([steps.cos(), steps.sin()], dim=-1))


def test_rotary_scores_depend_only_on_relative_position() -> None:
    rotary = RotaryEmbedding(8, max_seq_len=32)
    cos, sin = rotary(32)
    q, k = torch.randn(8), torch.randn(8)
    seq_q = apply_rotary(q.repeat(1, 1, 32, 1), cos, sin)[0, 0]  # (T, hd)
    seq_k = apply_rotary(k.repeat(1, 1, 32, 1), cos, sin)[0, 0]
    torch.testing.assert_close(seq_q[7] @ seq_k[3], seq_q[20] @ seq_k[16])


def test_rotary_extends_beyond_max_seq_len() -> None:
    short = RotaryEmbedding(8, max_seq_len=4)
    cos, sin = short(11)
    assert cos.shape == (11, 4) and short.cos.shape[0] >= 11
    reference = RotaryEmbedding(8, max_seq_len=64)
    torch.testing.assert_close(cos, reference.cos[:11])
    torch.testing.assert_close(sin, reference.sin[:11])
    # attention with a short cache gives exactly what a long cache gives
    attn_short = CausalSelfAttention(D, 4, max_seq_len=4).eval()
    attn_long = CausalSelfAttention(D, 4, max_seq_len=64).eval()
    attn_long.load_state_dict(attn_short.state_dict())
    x = torch.randn(2, 20, D)
    with torch.no_grad():
        torch.testing.assert_close(attn_short(x), attn_long(x))


def test_dilated_conv_receptive_field() -> None:
    conv = DilatedCausalConv(D, kernel=3, dilation=4).eval()
    x = torch.zeros(1, 30, D)
    x2 = x.clone()
    x2[:, 10] = 1.0  # an impulse at step 10 reaches steps 10, 14 and 18 only
    with torch.no_grad():
        diff = (conv(x2) - conv(x)).abs().sum(-1)[0]
    assert set(torch.nonzero(diff > 1e-6).flatten().tolist()) == {10, 14, 18}


def test_diagonal_ssm_fft_matches_recurrent_scan() -> None:
    ssm = DiagonalSSM(6, state_dim=5, dt_min=1e-2, dt_max=0.5)
    with torch.no_grad():
        ssm.log_a_real.add_(torch.randn_like(ssm.log_a_real) * 0.5)
        ssm.d.copy_(torch.randn(6))
    u = torch.randn(3, 40, 6, dtype=torch.float64)
    with torch.no_grad():
        y_fft = ssm(u.float()).double()
        # independent reference: complex ZOH discretisation and a step-by-step recurrence
        a = torch.complex(-ssm.log_a_real.exp(), ssm.a_imag).to(torch.complex128)  # (H, N)
        dt = ssm.log_dt.exp().double()[:, None]  # (H, 1)
        a_bar = torch.exp(dt * a)
        b_bar = (a_bar - 1) / a
        c = torch.view_as_complex(ssm.c.contiguous()).to(torch.complex128)
        state = torch.zeros(3, 6, 5, dtype=torch.complex128)
        ys = []
        for step in range(40):
            state = a_bar * state + b_bar * u[:, step, :, None]
            ys.append(2 * (c * state).sum(-1).real + ssm.d.double() * u[:, step])
        y_scan = torch.stack(ys, dim=1)
    torch.testing.assert_close(y_fft, y_scan, atol=2e-4, rtol=1e-4)


def test_diagonal_ssm_kernel_is_impulse_response() -> None:
    ssm = DiagonalSSM(4, state_dim=3)
    impulse = torch.zeros(1, 12, 4)
    impulse[0, 0] = 1.0
    with torch.no_grad():
        response = ssm(impulse)[0].T - ssm.d[:, None] * impulse[0].T  # (H, T)
        torch.testing.assert_close(response, ssm.kernel(12), atol=1e-5, rtol=1e-5)


def _expert(moe: MoEFeedForward, e: int, x: torch.Tensor) -> torch.Tensor:
    a, b = (x @ moe.w12[e]).chunk(2, dim=-1)
    return (torch.nn.functional.silu(a) * b) @ moe.w3[e]


@pytest.mark.parametrize("width", [16, 12])  # 12: not grouped-matmul aligned → expert loop
def test_moe_routing_respects_top_k(width: int) -> None:
    moe = MoEFeedForward(width, num_experts=5, top_k=2, ff_mult=2).eval()
    x = torch.randn(2, 7, width)
    with torch.no_grad():
        out = moe(x).reshape(-1, width)
        tokens = x.reshape(-1, width)
        gates, experts, probs = moe.route(tokens)
        assert experts.shape == (14, 2)
        assert (experts[:, 0] != experts[:, 1]).all()
        # the chosen experts are the two most probable ones
        top2 = probs.argsort(dim=-1, descending=True)[:, :2]
        assert torch.equal(experts, top2)
        torch.testing.assert_close(gates.sum(-1), torch.ones(14))
        reference = torch.stack(
            [
                sum(gates[n, j] * _expert(moe, int(experts[n, j]), tokens[n]) for j in range(2))
                for n in range(14)
            ]
        )
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_moe_aux_loss_switch_formula() -> None:
    moe = MoEFeedForward(D, num_experts=4, top_k=1, ff_mult=1, load_balance_weight=0.5)
    x = torch.rand(2, 9, D) + 0.5  # every token has positive features
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform P_e = 1/4 → aux = 0.5 · 4 · Σ_e f_e / 4 = 0.5
    moe(x)
    torch.testing.assert_close(moe.aux_loss, torch.tensor(0.5))
    with torch.no_grad():
        moe.router.weight[2] = 10.0  # every token → expert 2: f_2 = 1, P_2 ≈ 1
    moe(x)
    torch.testing.assert_close(moe.aux_loss, torch.tensor(0.5 * 4.0), atol=1e-6, rtol=0)


def test_moe_aux_loss_has_gradient() -> None:
    moe = MoEFeedForward(D, num_experts=4, top_k=2, ff_mult=1)
    moe(torch.randn(2, 6, D))
    assert moe.aux_loss > 0
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_grn_matches_tft_equations() -> None:
    grn = GatedResidualNetwork(6, 5, d_out=4, d_context=3)
    a, c = torch.randn(2, 7, 6), torch.randn(2, 3)
    with torch.no_grad():
        eta2 = torch.nn.functional.elu(grn.fc2(a) + grn.context(c)[:, None])
        value, gate = grn.glu.proj(grn.fc1(eta2)).chunk(2, dim=-1)
        expected = torch.nn.functional.layer_norm(
            grn.skip(a) + torch.sigmoid(gate) * value, (4,), grn.norm.weight, grn.norm.bias
        )
        torch.testing.assert_close(grn(a, c), expected)
    with pytest.raises(ValueError, match="without d_context"):
        GatedResidualNetwork(6, 5)(a, c)


def test_market_state_embedding() -> None:
    emb = MarketStateEmbedding(num_regimes=3, d_model=D)
    regime = torch.tensor([[0, 2, 1]])
    out = emb({"regime": regime})
    torch.testing.assert_close(out[0], emb.regime.weight[[0, 2, 1]])
    both = emb({"regime": regime, "volatility": torch.full((1, 3), 0.02)})
    vol = emb.volatility(torch.full((1, 3, 1), math.log(0.02)))
    torch.testing.assert_close(both, out + vol)
    with pytest.raises(ValueError, match=r"'regime'.*'volatility'"):
        emb({"regim": regime})


def test_patch_embedding_and_causal_unpatch() -> None:
    patch = PatchEmbedding(n_features=2, d_model=4, patch_size=2)
    x = torch.arange(10.0).reshape(1, 5, 2)  # 5 steps → left pad 1 → 3 patches
    tokens = patch(x)
    assert tokens.shape == (1, 3, 4)
    with torch.no_grad():
        first = patch.proj(torch.tensor([0.0, 0.0, 0.0, 1.0]))  # (pad, step 0)
        torch.testing.assert_close(tokens[0, 0], first)
    h = torch.tensor([10.0, 20.0, 30.0]).reshape(1, 3, 1)
    # patches end at steps 0, 2, 4: step t reads the last patch that already ended
    assert patch.unpatch(h, 5).flatten().tolist() == [10.0, 10.0, 20.0, 20.0, 30.0]
    assert PatchEmbedding(2, 4, 2).unpatch(h[:, :2], 4).flatten().tolist() == [0, 10, 10, 20]
    steps = torch.arange(5.0).reshape(1, 5, 1)
    assert patch.pool(steps).flatten().tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("patch_size", [1, 3])
def test_input_embedding_is_causal(patch_size: int) -> None:
    emb = InputEmbedding(3, D, patch_size=patch_size, num_regimes=4).eval()
    x = torch.randn(2, 13, 3)
    state = {"regime": torch.randint(0, 4, (2, 13)), "volatility": torch.rand(2, 13)}
    x2, state2 = x.clone(), {k: v.clone() for k, v in state.items()}
    x2[:, 8:] += 1.0
    state2["regime"][:, 8:] = (state2["regime"][:, 8:] + 1) % 4
    with torch.no_grad():
        y = emb.unpatch(emb(x, state), 13)
        y2 = emb.unpatch(emb(x2, state2), 13)
    torch.testing.assert_close(y[:, :8], y2[:, :8])
