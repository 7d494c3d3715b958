"""Paired Sharpe differences: arch reference, Holm vs statsmodels, size, power, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import StationaryBootstrap
from statsmodels.stats.multitest import multipletests

from market_nn_plus_ultra.evaluation.bootstrap import compare_sharpe
from market_nn_plus_ultra.evaluation.metrics import sharpe_ratio
from market_nn_plus_ultra.evaluation.paired import (
    holm_adjust,
    mean_sharpe_lift,
    sharpe_differences,
)

KEYS = {"estimate", "low", "high", "p_value", "p_adjusted", "significant", "n"}


def _series(values: np.ndarray, start: int = 0) -> pd.Series:
    stamps = pd.date_range("2020-01-01", periods=len(values) + start, freq="D", tz="UTC")
    return pd.Series(values, index=stamps[start:])


def _sharpe(x: np.ndarray) -> float:
    return x.mean() / x.std(ddof=1) * math.sqrt(252)


def test_matches_arch_stationary_bootstrap_applied_directly():
    rng = np.random.default_rng(7)
    market = rng.normal(0.0004, 0.01, 400)
    model = market + rng.normal(0.0003, 0.004, 400)
    momentum = market + rng.normal(0.0, 0.004, 400)
    cash_like = rng.normal(0.0001, 0.002, 400)
    block, reps, seed, level = 4.0, 400, 3, 0.9
    got = sharpe_differences(
        _series(model),
        {"momentum": _series(momentum), "cash_like": _series(cash_like)},
        reps=reps,
        block_length=block,
        seed=seed,
        level=level,
    )
    # the reference: arch resamples all three series with one index set per replication
    bs = StationaryBootstrap(block, model, momentum, cash_like, seed=np.random.default_rng(seed))
    diffs = bs.apply(
        lambda m, a, b: np.array([_sharpe(m) - _sharpe(a), _sharpe(m) - _sharpe(b)]), reps
    )
    for j, name in enumerate(["momentum", "cash_like"]):
        row = got[name]
        assert set(row) >= KEYS
        other = [momentum, cash_like][j]
        estimate = sharpe_ratio(model) - sharpe_ratio(other)
        assert row["estimate"] == pytest.approx(estimate, rel=1e-12)
        assert row["n"] == 400 and row["reps"] == reps and row["block_length"] == block
        low, high = np.quantile(diffs[:, j], [0.05, 0.95])
        assert row["low"] == pytest.approx(low, rel=1e-9)
        assert row["high"] == pytest.approx(high, rel=1e-9)
        p = (1 + np.sum(np.abs(diffs[:, j] - estimate) >= abs(estimate))) / (1 + reps)
        assert row["p_value"] == pytest.approx(p, abs=1e-12)
        # Bonferroni-level simultaneous interval: each at 1 − 0.1/2
        lo_adj, hi_adj = np.quantile(diffs[:, j], [0.025, 0.975])
        assert row["low_adjusted"] == pytest.approx(lo_adj, rel=1e-9)
        assert row["high_adjusted"] == pytest.approx(hi_adj, rel=1e-9)
        assert row["prob_beat"] == pytest.approx(np.mean(diffs[:, j] > 0))
    p_values = [got[name]["p_value"] for name in ("momentum", "cash_like")]
    holm = multipletests(p_values, method="holm")[1]
    assert [got[name]["p_adjusted"] for name in ("momentum", "cash_like")] == pytest.approx(holm)


def test_holm_matches_statsmodels_and_a_hand_computed_case():
    # sorted 0.01, 0.02, 0.04, 0.30 with m = 4: 0.04, 0.06, 0.08, 0.30
    p = [0.04, 0.01, 0.30, 0.02]
    assert holm_adjust(p) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    # monotone step-down: 0.012 × 2 = 0.024 is lifted to the step before, 0.011 × 3 = 0.033
    assert holm_adjust([0.012, 0.011, 0.5]) == pytest.approx([0.033, 0.033, 0.5])
    # statsmodels runs gc.collect() on every call (slow beside torch): one call, 12 values
    draws = np.random.default_rng(0).uniform(0, 0.2, 12)
    draws[3] = draws[7]  # a tie
    assert holm_adjust(draws) == pytest.approx(multipletests(draws, method="holm")[1])
    assert np.isnan(holm_adjust([0.01, np.nan])[1]) and holm_adjust([0.01, np.nan])[0] == 0.01


def test_identical_series_give_zero_and_are_not_significant():
    r = _series(np.random.default_rng(1).normal(0.0, 0.01, 300))
    for adjust in ("holm", "romano-wolf", "none"):
        row = sharpe_differences(r, {"same": r.copy()}, reps=200, block_length=3, adjust=adjust)[
            "same"
        ]
        assert row["estimate"] == 0.0 and row["low"] == 0.0 and row["high"] == 0.0
        assert row["p_value"] == 1.0 and row["p_adjusted"] == 1.0
        assert row["low_adjusted"] <= 0.0 <= row["high_adjusted"]
        assert not row["significant"] and row["prob_beat"] == 0.5


def test_a_strong_constant_edge_is_significant_and_positive():
    base = np.random.default_rng(11).normal(0.0, 0.01, 500)
    others = {"buy_and_hold": _series(base), "flat_noise": _series(base[::-1].copy())}
    got = sharpe_differences(_series(base + 0.003), others, reps=300, block_length=2)
    row = got["buy_and_hold"]
    assert row["estimate"] == pytest.approx(_sharpe(base + 0.003) - _sharpe(base))
    assert 0 < row["low"] < row["estimate"] < row["high"]
    assert row["low_adjusted"] > 0 and row["significant"]
    assert row["p_value"] == pytest.approx(1 / 301)  # no centred resample reaches the estimate
    assert row["p_adjusted"] == pytest.approx(2 / 301)  # Holm with 2 baselines, both minimal
    # P(beat) from the same resamples equals compare_sharpe's (same bars, seed and indices)
    probs = compare_sharpe(_series(base + 0.003), others, reps=300, block_length=2)
    assert row["prob_beat"] == probs["buy_and_hold"] == 1.0


def test_no_edge_covers_zero_and_rejects_at_about_the_nominal_rate():
    rng = np.random.default_rng(2024)
    rejected, covered, trials = 0, 0, 60
    for trial in range(trials):
        market = rng.normal(0.0, 0.01, 250)  # a random walk both strategies trade
        model = market + rng.normal(0.0, 0.01, 250)
        baseline = market + rng.normal(0.0, 0.01, 250)
        row = sharpe_differences(
            _series(model), {"b": _series(baseline)}, reps=200, block_length=1, seed=trial
        )["b"]
        rejected += row["p_value"] < 0.05
        covered += row["low"] <= 0.0 <= row["high"]
    # true difference 0: expect ~3 rejections of 60 and ~57 intervals holding 0
    assert rejected <= 8 and covered >= 52


def test_romano_wolf_does_not_pay_twice_for_a_duplicated_baseline():
    rng = np.random.default_rng(5)
    market = rng.normal(0.0, 0.01, 300)
    model, base = market + rng.normal(0.001, 0.005, 300), market + rng.normal(0, 0.005, 300)
    single = sharpe_differences(_series(model), {"a": _series(base)}, reps=300, block_length=2)
    twice = {"a": _series(base), "a_again": _series(base)}
    holm = sharpe_differences(_series(model), twice, reps=300, block_length=2)
    rw = sharpe_differences(_series(model), twice, reps=300, block_length=2, adjust="romano-wolf")
    p = single["a"]["p_value"]
    assert 0.0 < p < 0.5
    assert holm["a"]["p_adjusted"] == pytest.approx(min(1.0, 2 * p))
    # perfectly dependent tests: the max over the two equals either one, no penalty
    assert rw["a"]["p_adjusted"] == pytest.approx(p, abs=1 / 301)
    assert rw["a_again"]["p_adjusted"] == rw["a"]["p_adjusted"]
    # max-|t| simultaneous interval of a lone comparison: estimate ± q_level(|t*|)·se
    alone = sharpe_differences(
        _series(model), {"a": _series(base)}, reps=300, block_length=2, adjust="romano-wolf"
    )["a"]
    assert alone["low_adjusted"] < alone["estimate"] < alone["high_adjusted"]
    assert alone["estimate"] - alone["low_adjusted"] == pytest.approx(
        alone["high_adjusted"] - alone["estimate"]
    )


def test_bars_are_those_every_series_shares():
    rng = np.random.default_rng(3)
    model = _series(rng.normal(0.0, 0.01, 200))
    late = _series(rng.normal(0.0, 0.01, 150), start=50)  # starts 50 bars later
    short = model.copy()
    short.iloc[:20] = np.nan
    got = sharpe_differences(model, {"late": late, "short": short}, reps=50, block_length=1)
    assert got["late"]["n"] == got["short"]["n"] == 150
    shared = model.index[50:]
    expected = sharpe_ratio(model[shared]) - sharpe_ratio(late[shared])
    assert got["late"]["estimate"] == pytest.approx(expected)
    assert sharpe_differences(model, {}, reps=50) == {}


def test_errors_name_the_problem():
    model = _series(np.random.default_rng(0).normal(0, 0.01, 100))
    with pytest.raises(ValueError, match=r"share 5 bars.*'tiny': 5"):
        sharpe_differences(model, {"tiny": model.iloc[:5], "ok": model})
    with pytest.raises(ValueError, match="adjust='bonferoni'"):
        sharpe_differences(model, {"b": model}, adjust="bonferoni")
    with pytest.raises(ValueError, match="bootstrap_level"):
        sharpe_differences(model, {"b": model}, level=95)
    with pytest.raises(TypeError, match="b returns are a ndarray"):
        sharpe_differences(model, {"b": model.to_numpy()})


def test_mean_lift_over_runs_matches_arch_applied_to_every_run_at_once():
    """The pooled lift: one index set per resample for every run and the baseline."""
    rng = np.random.default_rng(11)
    market = rng.normal(0.0004, 0.01, 300)
    runs = [market + rng.normal(0.0002 * k, 0.004, 300) for k in range(3)]
    base = market + rng.normal(0.0, 0.004, 300)
    block, reps, seed = 5.0, 300, 4
    got = mean_sharpe_lift(
        [_series(r) for r in runs], _series(base), reps=reps, block_length=block, seed=seed
    )
    estimate = np.mean([sharpe_ratio(r) - sharpe_ratio(base) for r in runs])
    assert got["estimate"] == pytest.approx(estimate, rel=1e-12)
    bs = StationaryBootstrap(block, base, *runs, seed=np.random.default_rng(seed))
    star = bs.apply(lambda b, *rs: np.array([np.mean([_sharpe(r) - _sharpe(b) for r in rs])]), reps)
    low, high = np.quantile(star[:, 0], [0.025, 0.975])
    assert got["low"] == pytest.approx(low, rel=1e-9)
    assert got["high"] == pytest.approx(high, rel=1e-9)
    assert got["n"] == 300 and got["runs"] == 3


def test_mean_lift_of_one_run_is_the_paired_difference():
    rng = np.random.default_rng(5)
    market = rng.normal(0.0003, 0.01, 250)
    run, base = market + rng.normal(0.0, 0.003, 250), market + rng.normal(0.0, 0.003, 250)
    kwargs = {"reps": 200, "block_length": 3.0, "seed": 1}
    pooled = mean_sharpe_lift([_series(run)], _series(base), **kwargs)
    paired = sharpe_differences(_series(run), {"b": _series(base)}, adjust="none", **kwargs)["b"]
    for key in ("estimate", "low", "high", "p_value", "prob_beat"):
        assert pooled[key] == pytest.approx(paired[key], rel=1e-12)
    same = mean_sharpe_lift([_series(base)] * 2, _series(base), **kwargs)
    assert same["estimate"] == 0.0 and same["p_value"] == 1.0
