"""The differentiable PnL against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.simulation import (
    equity_curve,
    horizon_pnl,
    pnl_stream,
    smooth_abs,
    trade_sizes,
)

POS = torch.tensor([0.5, 1.0, -1.0, -1.0], dtype=torch.float64)
RET = torch.tensor([0.02, -0.01, 0.03, -0.02], dtype=torch.float64)


def test_hand_computed_with_costs_slippage_and_holding():
    # trades from flat: 0.5, 0.5, -2, 0; trade charge 15 bps; holding 2 bps of |position|
    net = pnl_stream(POS, RET, cost_bps=10, slippage_bps=5, holding_bps=2)
    expected = torch.tensor(
        [
            0.01 - 0.0015 * 0.5 - 0.0002 * 0.5,
            -0.01 - 0.0015 * 0.5 - 0.0002 * 1.0,
            -0.03 - 0.0015 * 2.0 - 0.0002 * 1.0,
            0.02 - 0.0 - 0.0002 * 1.0,
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(net, expected, rtol=0, atol=1e-15)
    assert net.tolist() == pytest.approx([0.00915, -0.01095, -0.0332, 0.0198], abs=1e-15)


def test_zero_costs_equal_position_times_return_exactly():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(3, 50, generator=g) * 2 - 1
    ret = torch.randn(3, 50, generator=g) * 0.01
    assert torch.equal(pnl_stream(pos, ret), pos * ret)


def test_initial_position_per_stream():
    pos = torch.stack([POS, POS])  # (2, 4)
    ret = torch.stack([RET, RET])
    net = pnl_stream(pos, ret, cost_bps=10, initial_position=torch.tensor([0.5, -0.5]))
    # stream 0 starts at 0.5 → no entry trade; stream 1 starts at -0.5 → trade of 1.0
    assert net[0, 0].item() == pytest.approx(0.01, abs=1e-15)
    assert net[1, 0].item() == pytest.approx(0.01 - 0.001 * 1.0, abs=1e-15)
    torch.testing.assert_close(net[:, 1:], net[:1, 1:].expand(2, 3))
    scalar = pnl_stream(POS, RET, cost_bps=10, initial_position=0.5)
    torch.testing.assert_close(scalar, net[0])


def test_trade_sizes_and_equity_curve():
    assert trade_sizes(POS).tolist() == [0.5, 0.5, -2.0, 0.0]
    wealth = equity_curve(torch.tensor([0.1, -0.5, 1.0], dtype=torch.float64))
    assert wealth.tolist() == pytest.approx([1.1, 0.55, 1.1])


def test_horizon_pnl_enters_once_then_holds():
    position = torch.tensor([1.0, -0.5], dtype=torch.float64)
    fwd = torch.tensor([[0.01, 0.02, -0.01], [0.01, -0.02, 0.04]], dtype=torch.float64)
    net = horizon_pnl(position, fwd, cost_bps=20)
    expected = torch.tensor(
        [[0.01 - 0.002, 0.02, -0.01], [-0.005 - 0.001, 0.01, -0.02]], dtype=torch.float64
    )
    torch.testing.assert_close(net, expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="one dim fewer"):
        horizon_pnl(fwd, fwd)


def test_smooth_abs_bounds_and_gradients():
    x = torch.linspace(-1, 1, 201, dtype=torch.float64, requires_grad=True)
    y = smooth_abs(x, 0.01)
    assert torch.all(y <= x.abs() + 1e-15) and torch.all(y >= x.abs() - 0.01)
    assert y[100].item() == 0.0
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all()
    # continuous through 0: the derivative at x = ±0.01 is ±0.01/sqrt(0.01² + 0.01²)
    assert grad[99].item() == pytest.approx(-(0.5**0.5))
    assert grad[101].item() == pytest.approx(0.5**0.5)
    assert abs(grad[100].item()) < 1e-12
    with pytest.raises(ValueError, match="smoothing"):
        smooth_abs(x, -1.0)


def test_gradients_finite_on_flat_positions_with_costs():
    pos = torch.zeros(2, 8, requires_grad=True)
    ret = torch.zeros(2, 8)
    for smoothing in (0.0, 1e-3):
        net = pnl_stream(pos, ret, cost_bps=5, slippage_bps=1, holding_bps=1, smoothing=smoothing)
        (grad,) = torch.autograd.grad(net.sum(), pos)
        assert torch.isfinite(grad).all()
        assert torch.equal(net, torch.zeros_like(net))


def test_negative_costs_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="slippage_bps"):
        pnl_stream(POS, RET, slippage_bps=-1)
