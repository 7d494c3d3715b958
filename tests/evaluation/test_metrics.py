"""Metrics agree with empyrical-reloaded on real S&P 500 / NASDAQ returns (1e-9 relative)."""

from __future__ import annotations

import math

import empyrical as ep
import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation import metrics as m


@pytest.fixture(scope="module")
def real() -> tuple[np.ndarray, np.ndarray]:
    from arch.data import nasdaq, sp500

    spx = sp500.load()["Adj Close"].pct_change()
    ndx = nasdaq.load()["Adj Close"].pct_change()
    both = pd.concat([spx, ndx], axis=1, join="inner").dropna()
    return both.iloc[:, 1].to_numpy(), both.iloc[:, 0].to_numpy()


REL = 1e-9


def test_against_empyrical(real):
    r, b = real
    assert m.total_return(r) == pytest.approx(ep.cum_returns_final(r), rel=REL)
    assert m.annual_return(r) == pytest.approx(ep.annual_return(r), rel=REL)
    assert m.annual_volatility(r) == pytest.approx(ep.annual_volatility(r), rel=REL)
    assert m.sharpe_ratio(r) == pytest.approx(ep.sharpe_ratio(r), rel=REL)
    assert m.sortino_ratio(r) == pytest.approx(ep.sortino_ratio(r), rel=REL)
    assert m.max_drawdown(r) == pytest.approx(ep.max_drawdown(r), rel=REL)
    assert m.calmar_ratio(r) == pytest.approx(ep.calmar_ratio(r), rel=REL)
    assert m.cvar(r) == pytest.approx(ep.conditional_value_at_risk(r), rel=REL)
    assert m.value_at_risk(r) == pytest.approx(ep.value_at_risk(r), rel=REL)
    assert m.tail_ratio(r) == pytest.approx(ep.tail_ratio(r), rel=REL)
    assert m.beta(r, b) == pytest.approx(ep.beta(r, b), rel=REL)
    assert m.information_ratio(r, b) == pytest.approx(
        ep.excess_sharpe(r, b) * math.sqrt(252), rel=REL
    )
    assert m.tracking_error(r, b) == pytest.approx(np.std(r - b, ddof=1) * math.sqrt(252), rel=REL)


def test_annualisation_factor(real):
    r, _ = real
    assert m.sharpe_ratio(r, 52) == pytest.approx(ep.sharpe_ratio(r, annualization=52), rel=REL)
    assert m.annual_return(r, 12) == pytest.approx(ep.annual_return(r, annualization=12), rel=REL)


def test_hand_computed():
    r = np.array([0.1, -0.05, 0.0, 0.02])
    assert m.total_return(r) == pytest.approx(1.1 * 0.95 * 1.0 * 1.02 - 1)
    assert m.hit_rate(r) == pytest.approx(2 / 3)
    assert m.max_drawdown([0.1, -0.5, 0.2]) == pytest.approx(-0.5)
    assert m.information_coefficient([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert m.information_coefficient([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_flat_returns_are_nan_not_errors():
    flat = np.zeros(50)
    assert math.isnan(m.sharpe_ratio(flat))
    assert math.isnan(m.sortino_ratio(flat))
    assert m.max_drawdown(flat) == 0.0
    assert math.isnan(m.calmar_ratio(flat))


def test_periods_per_year_inference():
    daily = pd.bdate_range("2020-01-01", periods=300, tz="UTC")
    assert m.infer_periods_per_year(daily) == 252.0
    weekly = pd.date_range("2020-01-01", periods=100, freq="W", tz="UTC")
    assert m.infer_periods_per_year(weekly) == 52.0
    hourly = pd.date_range("2020-01-01", periods=24 * 365 * 2 + 1, freq="h", tz="UTC")
    assert m.infer_periods_per_year(hourly) == pytest.approx(24 * 365.25, rel=1e-3)


def test_compute_metrics_keys(real):
    r, b = real
    out = m.compute_metrics(r, benchmark=b, turnover=0.1)
    assert set(m.METRIC_KEYS) <= set(out)
    assert out["n_periods"] == len(r)
    assert out["sharpe"] == pytest.approx(ep.sharpe_ratio(r), rel=REL)
