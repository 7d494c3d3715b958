"""Stress scenarios: stationary-bootstrap indices, shocks, per-path metrics, batched runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.metrics import compute_metrics
from market_nn_plus_ultra.evaluation.stress import (
    PATH_METRICS,
    path_metrics,
    prediction_tensors,
    run_stress,
    shock_returns,
    simulate_backtest,
    stationary_bootstrap_indices,
)


def _predictions(bars: int = 120, symbols: str = "ABC", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2022-01-03", periods=bars, freq="B", tz="UTC")
    n = bars * len(symbols)
    frame = pd.DataFrame(
        {
            "timestamp": np.repeat(ts, len(symbols)),
            "symbol": np.tile(list(symbols), bars),
            "position": np.sign(rng.normal(size=n)) * 0.5,
            "realised_return": rng.normal(0.001, 0.01, n),
            "dollar_volume": rng.uniform(1e6, 2e6, n),
        }
    )
    frame.loc[frame.timestamp == ts[-1], "realised_return"] = np.nan
    return frame


def test_bootstrap_indices_blocks_and_range():
    gen = torch.Generator().manual_seed(0)
    idx = stationary_bootstrap_indices(400, 250, 10.0, gen)
    assert idx.shape == (400, 250) and idx.min() >= 0 and idx.max() < 250
    # A block continues with the next bar (wrapping); new blocks start w.p. 1/10.
    cont = (idx[:, 1:] == (idx[:, :-1] + 1) % 250).double().mean().item()
    assert cont == pytest.approx(0.9 + 0.1 / 250, abs=0.01)
    one_block = stationary_bootstrap_indices(3, 50, 1e12, torch.Generator().manual_seed(1))
    assert torch.equal(one_block, (one_block[:, :1] + torch.arange(50)) % 50)
    again = stationary_bootstrap_indices(400, 250, 10.0, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_shocks_scale_deviations_and_inject_one_crash():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(2, 500, 3, generator=gen, dtype=torch.float64) / 100 + 0.001
    scaled = shock_returns(r, 3.0, None, gen)
    torch.testing.assert_close(scaled.mean(dim=1), r.mean(dim=1))
    torch.testing.assert_close(scaled.std(dim=1), 3.0 * r.std(dim=1))
    crashed = shock_returns(r, 1.0, -0.3, gen)
    changed = (crashed != r).all(dim=2)  # (B, T): the whole cross-section moves at once
    assert changed.sum(dim=1).tolist() == [1, 1]
    torch.testing.assert_close(crashed[changed], (1 + r[changed]) * 0.7 - 1)


def test_path_metrics_match_compute_metrics():
    gen = torch.Generator().manual_seed(2)
    portfolio = torch.randn(5, 60, generator=gen, dtype=torch.float64) / 100
    portfolio[1, 10:13] = float("nan")
    portfolio[:, -1] = float("nan")
    got = path_metrics(portfolio, 252.0)
    keys = {"total_return", "cagr", "volatility", "sharpe", "max_drawdown"}
    assert set(PATH_METRICS) == keys
    for b in range(5):
        expected = compute_metrics(portfolio[b].numpy(), periods_per_year=252.0)
        for key in keys:
            assert got[key][b] == pytest.approx(expected[key], rel=1e-10), key


def test_history_paths_without_frictions_equal_the_convention():
    frame = _predictions()
    base = backtest(frame, cost_bps=4.0)
    cfg = SimulationConfig(cost_bps=4.0, scenarios=6, scenario_resample=False, scenario_chunk=4)
    stress = run_stress(frame, cfg)
    np.testing.assert_allclose(
        stress.paths["total_return"], base.metrics["total_return"], rtol=1e-5
    )
    np.testing.assert_allclose(stress.paths["sharpe"], base.metrics["sharpe"], rtol=1e-4)
    p50 = stress.summary["percentiles"]["max_drawdown"]["p50"]
    assert p50 == pytest.approx(base.metrics["max_drawdown"], rel=1e-5)


def test_bootstrap_and_crash_distribution():
    frame = _predictions()
    cfg = SimulationConfig(cost_bps=2.0, scenarios=200, scenario_block=5.0, seed=3)
    plain = run_stress(frame, cfg)
    assert plain.summary["n"] == 200 and plain.summary["mean_block"] == 5.0
    assert set(plain.summary["percentiles"]["sharpe"]) == {"p5", "p50", "p95"}
    spread = plain.summary["percentiles"]["total_return"]
    assert spread["p5"] < spread["p50"] < spread["p95"]
    assert run_stress(frame, cfg).summary == plain.summary  # seeded: reproducible
    # Holding long on every bar, a -25% crash bar costs every path 25% of its wealth.
    longs = frame.assign(position=1.0)
    calm = run_stress(longs, cfg.model_copy(update={"cost_bps": 0.0}))
    crash = run_stress(longs, cfg.model_copy(update={"cost_bps": 0.0, "scenario_crash": -0.25}))
    np.testing.assert_allclose(
        1 + crash.paths["total_return"], 0.75 * (1 + calm.paths["total_return"]), rtol=1e-4
    )


def test_optimal_block_and_volume_from_close():
    frame = _predictions().drop(columns="dollar_volume").assign(volume=1e4, close=100.0)
    panel = prediction_tensors(frame, SimulationConfig())
    np.testing.assert_allclose(panel.optional["dollar_volume"], 1e6)
    np.testing.assert_allclose(panel.optional["adv"], 1e6)
    stress = run_stress(frame, SimulationConfig(scenarios=8))
    assert stress.summary["mean_block"] >= 1.0


def test_simulator_costs_are_reported_by_kind():
    frame = _predictions()
    cfg = SimulationConfig(cost_bps=5.0, half_spread_bps=3.0, impact_coef=0.2, borrow_bps=100)
    result, sim = simulate_backtest(frame, cfg)
    total = sum(result.metrics[f"cost_{k}"] for k in sim.costs)
    assert total == pytest.approx(result.costs.dropna().sum(), rel=1e-12)
    assert result.metrics["cost_impact"] > 0 and result.metrics["cost_borrow"] > 0
    plain = backtest(frame, cost_bps=5.0)
    assert result.metrics["total_return"] < plain.metrics["total_return"]


def test_stress_errors():
    with pytest.raises(ValueError, match="at least one scenario"):
        run_stress(_predictions(), SimulationConfig())
    with pytest.raises(ValueError, match="duplicate"):
        frame = _predictions()
        run_stress(pd.concat([frame, frame.head(1)]), SimulationConfig(scenarios=2))
