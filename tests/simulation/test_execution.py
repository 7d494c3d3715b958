"""Execution simulator: frictions off = the backtest convention; hand-computed frictions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.stress import simulate_backtest
from market_nn_plus_ultra.simulation.execution import effective_targets, simulate_execution


def _ragged_predictions(seed: int, bars: int = 40, symbols: str = "ABCDE") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2023-01-02", periods=bars, freq="B", tz="UTC")
    frame = pd.DataFrame(
        {
            "timestamp": np.repeat(ts, len(symbols)),
            "symbol": np.tile(list(symbols), bars),
            "position": rng.uniform(-1.0, 1.0, bars * len(symbols)),
            "realised_return": rng.normal(0.0, 0.02, bars * len(symbols)),
        }
    )
    # Ragged: symbols list late, delist early and skip bars; the last bar has no return.
    keep = rng.uniform(size=len(frame)) > 0.25
    keep &= ~((frame.symbol == "E") & (frame.timestamp < ts[10]))
    keep &= ~((frame.symbol == "D") & (frame.timestamp > ts[30]))
    frame = frame[keep].copy()
    frame.loc[frame.timestamp == ts[-1], "realised_return"] = np.nan
    frame.loc[(frame.symbol == "C") & (frame.timestamp >= ts[-3]), "realised_return"] = np.nan
    return frame.sample(frac=1.0, random_state=seed)  # row order must not matter


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cost_bps", [0.0, 7.5])
def test_frictions_off_reproduce_the_backtest_convention(seed, cost_bps):
    frame = _ragged_predictions(seed)
    expected = backtest(frame, cost_bps=cost_bps)
    got, sim = simulate_backtest(frame, SimulationConfig(cost_bps=cost_bps))
    for name in ("returns", "gross", "costs", "turnover"):
        a, b = getattr(expected, name), getattr(got, name)
        assert a.index.equals(b.index)
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.net_by_row, expected.net_by_row, rtol=0, atol=1e-12)
    for key, value in expected.metrics.items():
        assert got.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), key
    assert got.metrics["cost_commission"] == pytest.approx(expected.costs.dropna().sum())
    assert sim.positions.dtype == torch.float64


def test_hand_computed_frictions():
    # One symbol, capital 1,000 (slot 1,000), four bars.
    cfg = SimulationConfig(
        cost_bps=10,
        fixed_cost=1.0,
        capital=1000.0,
        half_spread_bps=5,
        spread_vol_mult=0.5,
        impact_coef=2.0,
        participation_cap=0.5,
        borrow_bps=252e4 * 0.001,  # 0.1% per bar at 252 bars a year
        leverage_funding_bps=252e4 * 0.002,  # 0.2% per bar on |position| above 1
    )
    targets = torch.tensor([1.0, 1.5, -0.2, -0.2], dtype=torch.float64).view(1, 4, 1)
    returns = torch.tensor([0.01, -0.02, 0.03, float("nan")], dtype=torch.float64).view(1, 4, 1)
    sigma = torch.full_like(targets, 0.02)
    volume = torch.tensor([1600.0, 2000.0, 4000.0, 4000.0], dtype=torch.float64).view(1, 4, 1)
    adv = torch.full_like(targets, 10_000.0)
    funding = torch.tensor([0.0, 0.001, 0.002, 0.0], dtype=torch.float64).view(1, 4, 1)
    res = simulate_execution(
        targets,
        returns,
        cfg,
        volatility=sigma,
        dollar_volume=volume,
        adv=adv,
        funding=funding,
        periods_per_year=252,
    )
    # Cap: 0.5 × volume / 1000 → 0.8, 1.0, 2.0, 2.0 position units per bar.
    held = [0.8, 1.5, -0.2, -0.2]
    fills = [0.8, 0.7, -1.7, 0.0]
    np.testing.assert_allclose(res.positions.flatten(), held, atol=1e-15)
    np.testing.assert_allclose(res.fills.flatten(), fills, atol=1e-15)
    net = []
    for t in range(3):
        size, h = abs(fills[t]), held[t]
        commission = 0.001 * size
        fixed = 1.0 / 1000 if size else 0.0
        spread = (0.0005 + 0.5 * 0.02) * size
        impact = 2.0 * 0.02 * math.sqrt(size * 1000 / 10_000) * size
        borrow = 0.001 * max(-h, 0.0)
        lever = 0.002 * max(abs(h) - 1.0, 0.0)
        fund = h * funding.flatten()[t].item()
        charges = [commission, fixed, spread, impact, borrow, lever, fund]
        got = [res.costs[k][0, t, 0].item() for k in res.costs]
        np.testing.assert_allclose(got, charges, rtol=1e-12, atol=1e-15)
        net.append(h * returns.flatten()[t].item() - sum(charges))
    np.testing.assert_allclose(res.portfolio[0, :3], net, rtol=1e-12)
    assert math.isnan(res.portfolio[0, 3].item())
    np.testing.assert_allclose(res.turnover[0, :3], [0.8, 0.7, 1.7])


def test_partial_fills_carry_over_and_absent_bars_do_not_trade():
    cfg = SimulationConfig(cost_bps=0, capital=1000.0, participation_cap=0.1)
    targets = torch.ones(1, 5, 1, dtype=torch.float64)
    volume = torch.full((1, 5, 1), 4000.0, dtype=torch.float64)  # 0.4 units per bar
    present = torch.tensor([True, True, False, True, True]).view(1, 5, 1)
    res = simulate_execution(
        targets, torch.zeros_like(targets), cfg, present=present, dollar_volume=volume
    )
    np.testing.assert_allclose(res.positions.flatten(), [0.4, 0.8, 0.8, 1.0, 1.0])
    np.testing.assert_allclose(
        res.targets.flatten() - res.positions.flatten(), [0.6, 0.2, 0.2, 0, 0]
    )


def test_constant_latency_shifts_the_targets():
    targets = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1) / 10
    res = simulate_execution(
        targets, torch.zeros_like(targets), SimulationConfig(cost_bps=0, latency_bars=[2])
    )
    np.testing.assert_allclose(res.positions.flatten(), [0.0, 0.0, 0.1, 0.2, 0.3])


def test_random_latency_takes_the_newest_arrived_decision():
    B, T, S = 4, 30, 3
    targets = torch.rand(B, T, S, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    bars, probs = [0, 1, 4], [0.2, 0.5, 0.3]
    got = effective_targets(
        targets,
        bars,
        probs,
        torch.zeros(B, S, dtype=torch.float64),
        torch.Generator().manual_seed(9),
    )
    # Reference: replay the same draws with a loop over decisions.
    u = torch.rand(B, T, S, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    lag = np.array(bars)[np.searchsorted(np.cumsum(probs)[:-1], u.numpy(), side="right")]
    expected = np.zeros((B, T, S))
    newest = np.full((B, S), -1)
    for t in range(T):
        for u_ in range(t + 1):
            arrived = (u_ + lag[:, u_]) <= t
            newest = np.where(arrived & (u_ > newest), u_, newest)
        b, s = np.indices((B, S))
        expected[:, t] = np.where(newest >= 0, targets.numpy()[b, np.maximum(newest, 0), s], 0.0)
    np.testing.assert_allclose(got.numpy(), expected)


def test_position_and_gross_limits():
    cfg = SimulationConfig(cost_bps=0, max_position=1.0, max_gross=0.5)
    targets = torch.tensor([[2.0, -0.5], [0.2, 0.2]], dtype=torch.float64).view(1, 2, 2)
    res = simulate_execution(targets, torch.zeros_like(targets), cfg)
    # Bar 0: clip to (1, -0.5), gross 0.75 → scaled by 0.5/0.75; bar 1 within limits.
    np.testing.assert_allclose(res.positions[0, 0], [2 / 3, -1 / 3])
    np.testing.assert_allclose(res.positions[0, 1], [0.2, 0.2])


def test_scenarios_are_independent_in_a_batch():
    cfg = SimulationConfig(cost_bps=3, half_spread_bps=2, participation_cap=0.2, capital=1e4)
    gen = torch.Generator().manual_seed(1)
    targets = torch.rand(3, 20, 4, generator=gen, dtype=torch.float64) * 2 - 1
    returns = torch.randn(3, 20, 4, generator=gen, dtype=torch.float64) / 100
    volume = torch.rand(3, 20, 4, generator=gen, dtype=torch.float64) * 1e4
    batch = simulate_execution(targets, returns, cfg, dollar_volume=volume)
    for b in range(3):
        one = simulate_execution(
            targets[b : b + 1], returns[b : b + 1], cfg, dollar_volume=volume[b : b + 1]
        )
        torch.testing.assert_close(batch.portfolio[b], one.portfolio[0], rtol=0, atol=1e-15)


def test_missing_inputs_name_the_option():
    targets = torch.zeros(1, 3, 1)
    with pytest.raises(ValueError, match=r"participation_cap.*dollar_volume"):
        simulate_execution(targets, targets, SimulationConfig(participation_cap=0.1))
    with pytest.raises(ValueError, match=r"impact_coef.*volatility"):
        simulate_execution(targets, targets, SimulationConfig(impact_coef=0.1))
    with pytest.raises(ValueError, match="latency_probs"):
        SimulationConfig(latency_bars=[0, 1], latency_probs=[0.5])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cfg = SimulationConfig(
        cost_bps=4, half_spread_bps=1, impact_coef=0.3, participation_cap=0.2, capital=1e5
    )
    gen = torch.Generator().manual_seed(4)
    targets = torch.rand(8, 50, 5, generator=gen, dtype=torch.float64) * 2 - 1
    returns = torch.randn(8, 50, 5, generator=gen, dtype=torch.float64) / 100
    extra = {
        "volatility": torch.full_like(targets, 0.01),
        "dollar_volume": torch.rand(8, 50, 5, generator=gen, dtype=torch.float64) * 1e5,
    }
    extra["adv"] = extra["dollar_volume"]
    cpu = simulate_execution(targets, returns, cfg, **extra)
    gpu = simulate_execution(
        targets.cuda(), returns.cuda(), cfg, **{k: v.cuda() for k, v in extra.items()}
    )
    torch.testing.assert_close(gpu.portfolio.cpu(), cpu.portfolio, rtol=1e-10, atol=1e-12)
