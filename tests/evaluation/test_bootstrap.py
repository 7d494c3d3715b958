"""Stationary bootstrap: interval coverage, paired Sharpe comparison, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.bootstrap import (
    bootstrap_metrics,
    compare_sharpe,
    optimal_block,
    prob_sharpe_exceeds,
)
from market_nn_plus_ultra.evaluation.metrics import annual_return, max_drawdown, sharpe_ratio


def test_sharpe_interval_covers_the_true_value_on_iid_returns():
    mu, sigma = 0.001, 0.01
    true_sharpe = mu / sigma * math.sqrt(252)
    rng = np.random.default_rng(2024)
    hits = 0
    for trial in range(50):
        returns = rng.normal(mu, sigma, 500)
        frame = bootstrap_metrics(returns, reps=200, block_length=1.0, seed=trial)
        hits += frame.loc["sharpe", "low"] <= true_sharpe <= frame.loc["sharpe", "high"]
    # a 95% interval: expect ~47.5 of 50; well above chance even with bootstrap error
    assert hits >= 42


def test_estimates_match_the_metrics_and_intervals_are_ordered():
    returns = np.random.default_rng(5).normal(0.0005, 0.01, 300)
    frame = bootstrap_metrics(returns, reps=300, level=0.9, block_length=3.0, seed=1)
    assert frame.loc["sharpe", "estimate"] == pytest.approx(sharpe_ratio(returns))
    assert frame.loc["cagr", "estimate"] == pytest.approx(annual_return(returns))
    assert frame.loc["max_drawdown", "estimate"] == pytest.approx(max_drawdown(returns))
    assert (frame["low"] < frame["high"]).all()
    assert frame.loc["sharpe", "low"] < frame.loc["sharpe", "estimate"]
    assert frame.loc["sharpe", "estimate"] < frame.loc["sharpe", "high"]
    assert frame.loc["max_drawdown", "high"] <= 0.0
    assert (frame["level"] == 0.9).all() and (frame["reps"] == 300).all()
    again = bootstrap_metrics(returns, reps=300, level=0.9, block_length=3.0, seed=1)
    pd.testing.assert_frame_equal(frame, again)  # seeded: identical
    wider = bootstrap_metrics(returns, reps=300, level=0.99, block_length=3.0, seed=1)
    assert (wider["high"] - wider["low"] >= frame["high"] - frame["low"]).all()


def test_optimal_block_grows_with_dependence():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 600)
    ar = np.zeros(600)
    for t in range(1, 600):  # building an AR(1) test series
        ar[t] = 0.8 * ar[t - 1] + noise[t]
    assert optimal_block(ar) > 3 * optimal_block(noise)
    assert optimal_block(np.zeros(50)) == 1.0  # flat: nothing to preserve
    auto = bootstrap_metrics(ar, reps=50, seed=0)
    assert auto["block_length"].iloc[0] == pytest.approx(optimal_block(ar))


def test_paired_probability():
    base = np.random.default_rng(11).normal(0.0, 0.01, 500)
    assert prob_sharpe_exceeds(base + 0.003, base, reps=300, seed=0) > 0.99
    assert prob_sharpe_exceeds(base, base + 0.003, reps=300, seed=0) < 0.01
    assert prob_sharpe_exceeds(base, base, reps=300, seed=0) == 0.5
    stamps = pd.date_range("2024-01-01", periods=500, freq="D", tz="UTC")
    model = pd.Series(base + 0.003, index=stamps)
    others = {"same": pd.Series(base + 0.003, index=stamps), "worse": pd.Series(base, stamps)}
    probs = compare_sharpe(model.iloc[10:], others, reps=200, block_length=2.0)
    assert probs["same"] == 0.5 and probs["worse"] > 0.99


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="differ in length"):
        prob_sharpe_exceeds(np.zeros(20), np.zeros(21))
    with pytest.raises(ValueError, match="at least 10"):
        bootstrap_metrics([0.01, 0.02, np.nan])
    with pytest.raises(ValueError, match="bootstrap_level"):
        bootstrap_metrics(np.ones(20), level=1.5)
