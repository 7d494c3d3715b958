"""Backtest convention: hand-computed cases, ragged calendars, weights, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.backtest import backtest


def _frame(rows):
    out = pd.DataFrame(rows, columns=["timestamp", "symbol", "position", "realised_return"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out


def test_hand_computed_with_costs():
    p = _frame(
        [
            ("2024-01-01", "A", 1.0, 0.01),
            ("2024-01-01", "B", -0.5, 0.02),
            ("2024-01-02", "A", 1.0, -0.02),
            ("2024-01-02", "B", 0.5, 0.04),
            ("2024-01-03", "A", 0.0, np.nan),
            ("2024-01-03", "B", 0.5, np.nan),
        ]
    )
    res = backtest(p, cost_bps=10)
    c = 10 / 1e4
    a1 = 1.0 * 0.01 - c * 1.0
    b1 = -0.5 * 0.02 - c * 0.5
    a2 = 1.0 * -0.02 - c * 0.0
    b2 = 0.5 * 0.04 - c * 1.0
    np.testing.assert_allclose(res.returns.iloc[:2], [(a1 + b1) / 2, (a2 + b2) / 2], rtol=1e-12)
    assert np.isnan(res.returns.iloc[2])
    assert res.metrics["n_periods"] == 2
    assert res.metrics["turnover"] == pytest.approx(((1 + 0.5) / 2 + (0 + 1.0) / 2) / 2)
    assert res.metrics["total_return"] == pytest.approx(
        (1 + (a1 + b1) / 2) * (1 + (a2 + b2) / 2) - 1
    )


def test_zero_cost_is_position_times_return():
    rng = np.random.default_rng(0)
    ts = pd.date_range("2024-01-01", periods=50, freq="D", tz="UTC")
    p = pd.DataFrame(
        {
            "timestamp": np.repeat(ts, 3),
            "symbol": np.tile(["A", "B", "C"], 50),
            "position": rng.uniform(-1, 1, 150),
            "realised_return": rng.normal(0, 0.01, 150),
        }
    )
    res = backtest(p)
    expected = (p.position * p.realised_return).groupby(p.timestamp).mean().to_numpy()
    np.testing.assert_allclose(res.returns.to_numpy(), expected, rtol=1e-12)


def test_ragged_calendar_previous_position_is_per_symbol():
    p = _frame(
        [
            ("2024-01-01", "A", 1.0, 0.0),
            ("2024-01-02", "B", 1.0, 0.0),
            ("2024-01-03", "A", 1.0, 0.0),
        ]
    )
    res = backtest(p, cost_bps=100)
    # A pays once (0→1 on day 1), holds on day 3; B pays on day 2.
    np.testing.assert_allclose(res.costs.to_numpy(), [0.01, 0.01, 0.0])


def test_weights():
    p = _frame([("2024-01-01", "A", 1.0, 0.01), ("2024-01-01", "B", 1.0, 0.03)])
    res = backtest(p, weights=pd.Series({"A": 3.0, "B": 1.0}))
    assert res.returns.iloc[0] == pytest.approx((3 * 0.01 + 0.03) / 4)


def test_missing_column_error_names_it():
    p = pd.DataFrame({"timestamp": [], "symbol": [], "position": []})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['realised_return'\]"):
        backtest(p)
