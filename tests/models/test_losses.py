"""Loss functions against hand-computed values, independent references and NaN traps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from market_nn_plus_ultra.config import LossConfig
from market_nn_plus_ultra.models.losses import (
    CompositeTradingLoss,
    classification_loss,
    cvar,
    direction_labels,
    dirichlet_kl_uniform,
    evidential_loss,
    max_drawdown,
    pinball_loss,
    regression_loss,
    sharpe_ratio,
    sortino_ratio,
)

D = torch.float64
R = torch.tensor([0.01, -0.02, 0.03, 0.00], dtype=D)


# ---------------------------------------------------------------- supervised losses


def test_regression_mse_and_huber_by_hand():
    pred, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    assert regression_loss(pred, target, "mse").item() == pytest.approx(2.5)
    # |e| = 1 → ½·1² = 0.5; |e| = 2 → 1·(2 − ½) = 1.5; mean 1.0
    assert regression_loss(pred, target, "huber", delta=1.0).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'mse' or 'huber'"):
        regression_loss(pred, target, "mae")


def test_direction_labels_with_flat_band():
    r = torch.tensor([-0.01, -0.0005, 0.0, 0.0004, 0.002])
    assert direction_labels(r, 0.0005).tolist() == [0, 1, 1, 1, 2]
    assert direction_labels(r, 0.0).tolist() == [0, 0, 1, 2, 2]


def test_classification_uniform_logits_is_log3():
    logits = torch.zeros(4, 3)
    assert classification_loss(logits, torch.tensor([0, 1, 2, 0])).item() == pytest.approx(
        math.log(3)
    )


def test_pinball_by_hand():
    q = torch.tensor([[-1.0, 0.0, 1.0]])
    levels = torch.tensor([0.1, 0.5, 0.9])
    # errors y − q = 1.5, 0.5, −0.5 → 0.15, 0.25, max(−0.45, 0.05) = 0.05
    assert pinball_loss(q, torch.tensor([0.5]), levels).item() == pytest.approx(0.15)


def test_dirichlet_kl_matches_torch_distributions():
    alpha = torch.tensor([[2.0, 3.0, 1.0], [0.5, 4.0, 7.0], [1.0, 1.0, 1.0]], dtype=D)
    reference = kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha)))
    torch.testing.assert_close(dirichlet_kl_uniform(alpha), reference)
    assert dirichlet_kl_uniform(alpha)[2].item() == pytest.approx(0.0, abs=1e-12)


def test_evidential_loss_by_hand():
    # uniform Dirichlet: (1 − ⅓)² + 2·(⅓)² + 3·(⅓·⅔)/4 = 5/6; α̃ = 1 → no KL
    uniform = torch.ones(1, 3, dtype=D)
    assert evidential_loss(uniform, torch.tensor([0]), 1.0).item() == pytest.approx(5 / 6)
    # α = (2, 3, 1), true class 2: S = 6, p = (⅓, ½, ⅙)
    alpha = torch.tensor([[2.0, 3.0, 1.0]], dtype=D)
    data = (1 / 9 + 1 / 4 + 25 / 36) + (2 / 9 + 1 / 4 + 5 / 36) / 7
    kl = kl_divergence(Dirichlet(alpha[0]), Dirichlet(torch.ones(3, dtype=D))).item()
    assert evidential_loss(alpha, torch.tensor([2]), 0.0).item() == pytest.approx(data)
    assert evidential_loss(alpha, torch.tensor([2]), 0.5).item() == pytest.approx(data + 0.5 * kl)


# ---------------------------------------------------------------- risk measures


def test_sharpe_and_sortino_by_hand():
    # mean 0.005; ddof-1 variance (2·0.005² + 2·0.025²)/3; downside sqrt(0.02²/4) = 0.01
    sd = math.sqrt((2 * 0.005**2 + 2 * 0.025**2) / 3)
    assert sharpe_ratio(R, eps=0.0).item() == pytest.approx(0.005 / sd, rel=1e-12)
    assert sharpe_ratio(R, periods_per_year=252, eps=0.0).item() == pytest.approx(
        0.005 / sd * math.sqrt(252), rel=1e-12
    )
    assert sortino_ratio(R, eps=0.0).item() == pytest.approx(0.5, rel=1e-12)
    # the default eps barely moves realistic values
    assert sharpe_ratio(R).item() == pytest.approx(0.005 / sd, rel=1e-4)


def test_risk_measures_match_numpy_references_on_random_returns():
    rng = np.random.default_rng(3)
    r = rng.normal(0.0005, 0.01, size=(3, 500))
    t = torch.tensor(r)
    ref_sharpe = r.mean(1) / r.std(1, ddof=1)
    ref_sortino = r.mean(1) / np.sqrt(np.mean(np.minimum(r, 0) ** 2, axis=1))
    wealth = np.concatenate([np.ones((3, 1)), np.cumprod(1 + r, axis=1)], axis=1)
    ref_mdd = (wealth / np.maximum.accumulate(wealth, axis=1) - 1).min(1)
    k = int(499 * 0.05)
    ref_cvar = np.sort(r, axis=1)[:, : k + 1].mean(1)
    np.testing.assert_allclose(sharpe_ratio(t, eps=0.0).numpy(), ref_sharpe, rtol=1e-12)
    np.testing.assert_allclose(sortino_ratio(t, eps=0.0).numpy(), ref_sortino, rtol=1e-12)
    np.testing.assert_allclose(max_drawdown(t).numpy(), ref_mdd, rtol=1e-12)
    np.testing.assert_allclose(cvar(t, 0.05).numpy(), ref_cvar, rtol=1e-12)
    # dim= works on a transposed layout
    np.testing.assert_allclose(max_drawdown(t.T, dim=0).numpy(), ref_mdd, rtol=1e-12)


def test_max_drawdown_by_hand():
    # wealth 1.1, 0.55, 0.66, 0.594, 0.891: peak 1.1 → trough 0.55 = −50%
    r = torch.tensor([0.1, -0.5, 0.2, -0.1, 0.5], dtype=D)
    assert max_drawdown(r).item() == pytest.approx(-0.5)
    # the starting wealth of 1 is a peak: an immediate loss is a drawdown
    assert max_drawdown(torch.tensor([-0.2, 0.1], dtype=D)).item() == pytest.approx(-0.2)
    assert max_drawdown(torch.tensor([0.1, 0.2], dtype=D)).item() == 0.0


def test_cvar_by_hand():
    # 41 returns → the worst int(40·0.05) + 1 = 3 are averaged
    r = torch.cat([torch.tensor([-0.05, -0.04, -0.03, -0.02]), torch.zeros(37)]).to(D)
    assert cvar(r, 0.05).item() == pytest.approx(-0.04)
    assert cvar(r[:20], 0.05).item() == pytest.approx(-0.05)  # k = 1: the worst return
    with pytest.raises(ValueError, match="alpha"):
        cvar(r, 1.5)


def test_too_short_streams_raise_with_a_fix():
    with pytest.raises(ValueError, match="at least 2 returns"):
        sharpe_ratio(torch.tensor([0.01]))


@pytest.mark.parametrize(
    "returns",
    [torch.zeros(2, 16), torch.full((2, 16), 0.01), torch.full((2, 16), -0.01)],
    ids=["zeros", "constant_gain", "constant_loss"],
)
def test_flat_and_constant_returns_are_finite_with_finite_gradients(returns):
    for fn in (sharpe_ratio, sortino_ratio, max_drawdown, cvar):
        x = returns.clone().requires_grad_(True)
        value = fn(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert torch.isfinite(value).all(), fn.__name__
        assert torch.isfinite(grad).all(), fn.__name__
    assert torch.equal(sharpe_ratio(torch.zeros(4, 8)), torch.zeros(4))


# ---------------------------------------------------------------- composite loss


def test_composite_hand_value_horizon_mode():
    position = torch.tensor([1.0, -1.0], dtype=D)
    targets = torch.tensor([[0.01, 0.02], [0.01, -0.03]], dtype=D)
    loss = CompositeTradingLoss({"pnl": 1.0, "drawdown": 2.0})
    out = loss(position, targets)
    # net = [[0.01, 0.02], [−0.01, 0.03]]; mean 0.0125; drawdowns 0 and −0.01 → mean −0.005
    torch.testing.assert_close(out.net, torch.tensor([[0.01, 0.02], [-0.01, 0.03]], dtype=D))
    assert out.terms["pnl"].item() == pytest.approx(-0.0125)
    assert out.terms["drawdown"].item() == pytest.approx(0.005)
    assert out.total.item() == pytest.approx(-0.0125 + 2 * 0.005)


def test_composite_sequence_mode_charges_costs_between_steps():
    position = torch.tensor([0.5, 1.0, 1.0, -1.0], dtype=D)
    targets = torch.tensor([[0.02, 9.0], [0.01, 9.0], [-0.01, 9.0], [0.0, 9.0]], dtype=D)
    loss = CompositeTradingLoss({"pnl": 1.0}, mode="sequence", cost_bps=10, smoothing=0.0)
    net = loss(position, targets).net
    expected = [0.01 - 0.0005, 0.01 - 0.0005, -0.01, -0.002]
    assert net.tolist() == pytest.approx(expected, abs=1e-15)


def test_composite_mixes_head_loss_and_risk_terms_with_gradients():
    torch.manual_seed(0)
    position = torch.zeros(32, requires_grad=True)
    targets = torch.randn(32, 3) * 0.01
    head_loss = (position**2).sum()
    weights = {"head": 0.5, "pnl": 1.0, "sharpe": 1.0, "sortino": 1.0, "drawdown": 1.0, "cvar": 1.0}
    out = CompositeTradingLoss(weights, cost_bps=5, slippage_bps=2, holding_bps=1)(
        position, targets, head_loss
    )
    (grad,) = torch.autograd.grad(out.total, position)
    assert torch.isfinite(out.total) and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0  # smoothed costs and the PnL still teach a flat book
    assert set(out.terms) == set(weights)


def test_composite_on_all_zero_returns_and_positions_is_finite():
    position = torch.zeros(8, requires_grad=True)
    loss = CompositeTradingLoss({"sharpe": 1, "sortino": 1, "drawdown": 1, "cvar": 1, "pnl": 1})
    out = loss(position, torch.zeros(8, 2))
    (grad,) = torch.autograd.grad(out.total, position)
    assert out.total.item() == 0.0 and torch.isfinite(grad).all()


def test_composite_errors_name_the_fix():
    with pytest.raises(ValueError, match="did you mean 'sharpe'"):
        CompositeTradingLoss({"sharp": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        CompositeTradingLoss({"head": 0.0})
    with pytest.raises(ValueError, match="no head_loss"):
        CompositeTradingLoss({"head": 1.0})(torch.zeros(2), torch.zeros(2, 1))


def test_composite_from_config():
    cfg = LossConfig(head_weight=1.0, sharpe_weight=0.2, pnl_mode="sequence", cost_bps=3)
    loss = CompositeTradingLoss.from_config(cfg)
    assert loss.weights == {"head": 1.0, "sharpe": 0.2}
    assert loss.mode == "sequence" and loss.cost_bps == 3
