"""Reward shaping terms on hand-computed cases, alone and through RewardShaper."""

from __future__ import annotations

import math

import pytest
import torch

from market_nn_plus_ultra.config import ConfigError, config_from_dict
from market_nn_plus_ultra.config.reinforcement import RewardConfig
from market_nn_plus_ultra.rl.reward import (
    REWARD_TERMS,
    RewardShaper,
    cvar_penalty,
    differential_sharpe,
    differential_sortino,
    drawdown_penalty,
    entropic_term,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _shaper(**terms) -> RewardShaper:
    raw = {name: {"enabled": True, **params} for name, params in terms.items()}
    return RewardShaper(RewardConfig.model_validate(raw), 1, torch.device("cpu"))


def _play(shaper: RewardShaper, returns: list[float], equity: list[float] | None = None):
    """Feed one env's returns; the terms of every bar."""
    out = []
    equity = equity or [1.0] * len(returns)
    for r, e in zip(returns, equity, strict=True):
        _, terms = shaper(_t(r), _t(0.0), _t(e))
        out.append({k: float(v[0]) for k, v in terms.items()})
    return out


def test_differential_sharpe_formula():
    # A = 0.01, B = 0.0005 (variance 0.0004), r = 0.03:
    # (B·ΔA − ½A·ΔB) / var^1.5 = (0.0005·0.02 − 0.005·0.0004) / 0.0004^1.5 = 8e-6 / 8e-6
    got = differential_sharpe(_t(0.03), _t(0.01), _t(0.0005))
    assert float(got) == pytest.approx(1.0, rel=1e-5)
    assert float(differential_sharpe(_t(0.03), _t(0.01), _t(0.0001))) == 0.0  # no variance


def test_differential_sharpe_through_the_moving_moments():
    # eta = 0.5. Bar 1: no moments yet → 0. Bar 2: bias-corrected A = 0.01, B = 1e-4,
    # variance 0 → 0. Bar 3: A = (0.5·0.5·0.01 + 0.5·(−0.02)) / 0.75 = −0.01,
    # B = (0.25·1e-4 + 0.5·4e-4) / 0.75 = 3e-4, variance 2e-4;
    # D = (3e-4·0.04 + 0.005·(9e-4 − 3e-4)) / (2e-4)^1.5 = 1.5e-5 / 2.828e-6.
    terms = _play(_shaper(differential_sharpe={"eta": 0.5}), [0.01, -0.02, 0.03])
    got = [t["differential_sharpe"] for t in terms]
    assert got[:2] == [0.0, 0.0]
    assert got[2] == pytest.approx(1.5e-5 / (2e-4) ** 1.5, rel=1e-4)


def test_differential_sortino_gain_and_loss_branches():
    # eta = 0.5. Bar 1 (−0.02): 0. Bar 2 (+0.01): A = −0.02, DD² = 4e-4 → DD = 0.02;
    # gain: (0.01 + 0.01) / 0.02 = 1. Bar 3 (−0.01): A = (0.25·−0.02 + 0.5·0.01)/0.75 = 0,
    # DD² = (0.25·4e-4) / 0.75 = 1.333e-4; loss: DD²·r / DD³ = r / DD = −0.01 / 0.011547.
    terms = _play(_shaper(differential_sortino={"eta": 0.5}), [-0.02, 0.01, -0.01])
    got = [t["differential_sortino"] for t in terms]
    assert got[0] == 0.0
    assert got[1] == pytest.approx(1.0, rel=1e-5)
    assert got[2] == pytest.approx(-0.01 / math.sqrt(1e-4 / 0.75), rel=1e-4)
    # the loss branch with a non-zero mean: (DD²(r − ½A) − ½A r²) / DD³
    r, a, dd2 = -0.02, 0.01, 4e-4
    want = (dd2 * (r - 0.5 * a) - 0.5 * a * r * r) / dd2**1.5
    assert float(differential_sortino(_t(r), _t(a), _t(dd2))) == pytest.approx(want, rel=1e-5)


def test_differential_terms_are_clipped():
    got = _play(_shaper(differential_sortino={"eta": 0.5, "clip": 0.5}), [-0.02, 0.01])
    assert got[1]["differential_sortino"] == pytest.approx(0.5)


def test_drawdown_penalty_against_the_running_peak():
    equity = [1.1, 0.88, 0.924, 1.2]
    terms = _play(_shaper(drawdown={}), [0.1, -0.2, 0.05, 0.3], equity)
    got = [t["drawdown"] for t in terms]
    assert got == pytest.approx([0.0, 0.2, 0.16, 0.0], abs=1e-6)
    assert float(drawdown_penalty(_t(0.5), _t(2.0))) == pytest.approx(0.75)


def test_cvar_penalty_over_a_ring_of_recent_returns():
    # window 4, alpha 0.5: tails of [.01] → −.01 → 0 (a gain); [.01, −.03] → .03;
    # [.01, −.03, .02] (k = 2) → (.03 − .01)/2 = .01; [+ −.01] → (.03 + .01)/2 = .02;
    # the ring then drops .01: [−.03, .02, −.01, −.05] → (.05 + .03)/2 = .04.
    shaper = _shaper(cvar={"alpha": 0.5, "window": 4})
    got = [t["cvar"] for t in _play(shaper, [0.01, -0.03, 0.02, -0.01, -0.05])]
    assert got == pytest.approx([0.0, 0.03, 0.01, 0.02, 0.04], abs=1e-7)
    recent = _t(-0.1, 0.2, -0.3, 0.0).view(1, 4)
    assert float(cvar_penalty(recent, torch.tensor([2]), 1.0)) == pytest.approx(0.0)  # mean > 0
    assert float(cvar_penalty(recent, torch.tensor([4]), 0.25)) == pytest.approx(0.3)


def test_entropic_term_is_the_exponential_utility_gap():
    # λ = 10, r = 0.05: U = (1 − e^{−0.5}) / 10 = 0.0393469; U − r = −0.0106531
    assert float(entropic_term(_t(0.05), 10.0)) == pytest.approx(-0.0106531, rel=1e-5)
    assert float(entropic_term(_t(-0.05), 10.0)) == pytest.approx(
        (1 - math.exp(0.5)) / 10 + 0.05, rel=1e-5
    )
    small = float(entropic_term(_t(1e-3), 10.0))
    assert small == pytest.approx(-10.0 * 1e-6 / 2, rel=1e-2)  # ≈ −λ r² / 2


def test_total_reward_combines_every_term_with_its_weight_and_sign():
    cfg = RewardConfig.model_validate(
        {
            "scale": 3.0,
            "differential_sharpe": {"enabled": True, "weight": 0.1, "eta": 0.5},
            "differential_sortino": {"enabled": True, "weight": 0.2, "eta": 0.5},
            "drawdown": {"enabled": True, "weight": 0.3},
            "cvar": {"enabled": True, "weight": 0.4, "window": 8, "alpha": 0.5},
            "entropic": {"enabled": True, "weight": 0.5, "risk_aversion": 5.0},
            "turnover": {"enabled": True, "weight": 0.6},
        }
    )
    shaper = RewardShaper(cfg, 2, torch.device("cpu"))
    equity = torch.ones(2)
    for net, turnover in [((0.01, -0.02), (0.5, 0.1)), ((-0.03, 0.01), (0.2, 0.0))]:
        net, turnover = _t(*net), _t(*turnover)
        equity = equity * (1 + net)
        reward, terms = shaper(net, turnover, equity)
        assert tuple(terms) == REWARD_TERMS
        signs = {"drawdown": -1, "cvar": -1, "turnover": -1}
        weights = {"differential_sharpe": 0.1, "differential_sortino": 0.2, "drawdown": 0.3}
        weights |= {"cvar": 0.4, "entropic": 0.5, "turnover": 0.6}
        want = net + sum(signs.get(k, 1) * weights[k] * v for k, v in terms.items())
        torch.testing.assert_close(reward, 3.0 * want)
    assert float(terms["drawdown"][0]) == pytest.approx(0.03, rel=1e-5)


def test_reset_clears_only_the_finished_envs():
    cfg = RewardConfig.model_validate(
        {"differential_sharpe": {"enabled": True, "eta": 0.5}, "drawdown": {"enabled": True}}
    )
    fresh = RewardShaper(cfg, 2, torch.device("cpu"))
    used = RewardShaper(cfg, 2, torch.device("cpu"))
    for r in (0.02, -0.01):
        used(_t(r, r), _t(0, 0), _t(1.02, 1.05))
    used.reset(torch.tensor([True, False]))
    _, a = used(_t(0.01, 0.01), _t(0, 0), _t(1.0, 1.0))
    _, b = fresh(_t(0.01, 0.01), _t(0, 0), _t(1.0, 1.0))
    assert float(a["differential_sharpe"][0]) == float(b["differential_sharpe"][0]) == 0.0
    assert float(a["drawdown"][0]) == 0.0 and float(a["drawdown"][1]) > 0.0
    assert float(a["differential_sharpe"][1]) != 0.0


def test_reward_fields_are_validated_with_their_names():
    with pytest.raises(ConfigError, match=r"reinforcement\.reward\.cvar\.alpha"):
        config_from_dict({"reinforcement": {"reward": {"cvar": {"alpha": 0.0}}}})
    with pytest.raises(ConfigError, match=r"did you mean `reinforcement\.reward\.drawdown`"):
        config_from_dict({"reinforcement": {"reward": {"drawdwn": {}}}})
