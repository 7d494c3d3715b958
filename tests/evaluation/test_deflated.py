"""Deflated and probabilistic Sharpe: the paper's numerical example and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from market_nn_plus_ultra.evaluation.deflated import (
    EULER_GAMMA,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    return_moments,
)
from market_nn_plus_ultra.evaluation.metrics import sharpe_ratio


def test_the_papers_numerical_example():
    # Bailey & López de Prado (2014), §4: annualised SR 2.5 over 5 years of daily returns
    # (250 a year), skew −3, kurtosis 10, 100 trials whose annualised SR vary with V = 1/2.
    sr, n, variance = 2.5 / math.sqrt(250), 1250, 0.5 / 250
    sr0 = expected_max_sharpe(100, variance)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)  # the paper's E[max SR], per day
    assert deflated_sharpe(sr, n, -3.0, 10.0, 100, variance) == pytest.approx(0.9004, abs=5e-4)
    # by hand with scipy's normal
    spread = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / 100) + EULER_GAMMA * norm.ppf(
        1 - 1 / (100 * math.e)
    )
    assert sr0 == pytest.approx(math.sqrt(variance) * spread, rel=1e-12)
    z = (sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 + 3.0 * sr + (10 - 1) / 4 * sr**2)
    assert deflated_sharpe(sr, n, -3.0, 10.0, 100, variance) == pytest.approx(norm.cdf(z))


def test_probabilistic_sharpe_by_hand():
    # normal returns (skew 0, kurtosis 3): z = SR·√(n−1)/√(1 + SR²/2)
    sr, n = 0.05, 500
    z = sr * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2)
    assert probabilistic_sharpe(sr, n) == pytest.approx(norm.cdf(z), rel=1e-12)
    assert probabilistic_sharpe(0.0, 100) == 0.5
    # negative skew and fat tails widen the estimate's spread: less confidence
    assert probabilistic_sharpe(sr, n, skew=-2.0, kurtosis=9.0) < probabilistic_sharpe(sr, n)
    # against a benchmark equal to the estimate: exactly a coin flip
    assert probabilistic_sharpe(sr, n, benchmark=sr) == 0.5
    # a variance term that is not positive has no meaning: NaN, not a number
    assert math.isnan(probabilistic_sharpe(0.8, 100, skew=5.0, kurtosis=3.0))


def test_more_trials_deflate_more_and_one_trial_is_no_selection():
    assert expected_max_sharpe(1, 0.01) == 0.0
    assert deflated_sharpe(0.05, 500, 0.0, 3.0, 1, 0.0) == probabilistic_sharpe(0.05, 500)
    values = [expected_max_sharpe(n, 0.01**2) for n in (2, 10, 100, 1000)]
    assert values == sorted(values) and values[0] > 0
    # N = 2: √V·((1−γ)·Φ⁻¹(1/2) + γ·Φ⁻¹(1 − 1/(2e))), Φ⁻¹(1/2) = 0
    assert values[0] == pytest.approx(0.01 * EULER_GAMMA * norm.ppf(1 - 1 / (2 * math.e)))
    dsr = [deflated_sharpe(0.08, 750, -0.5, 5.0, n, 0.02**2) for n in (2, 10, 100, 1000)]
    assert dsr == sorted(dsr, reverse=True)


def test_return_moments_match_the_metrics():
    r = np.random.default_rng(0).standard_t(5, 1000) * 0.01 + 0.0005
    sharpe, n, skew, kurt = return_moments(np.append(r, np.nan))
    assert n == 1000
    assert sharpe * math.sqrt(252) == pytest.approx(sharpe_ratio(r))
    centred = r - r.mean()
    sd = math.sqrt(np.mean(centred**2))
    assert skew == pytest.approx(np.mean(centred**3) / sd**3)
    assert kurt == pytest.approx(np.mean(centred**4) / sd**4)
    assert kurt > 3.5  # Student t(5): fat tails
    flat = return_moments(np.zeros(20))
    assert math.isnan(flat[0]) and flat[1] == 20


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="excess kurtosis"):
        probabilistic_sharpe(0.1, 100, kurtosis=-0.5)
    with pytest.raises(ValueError, match="n_trials=0"):
        expected_max_sharpe(0, 0.1)
    with pytest.raises(ValueError, match="sharpe_variance=-1"):
        expected_max_sharpe(3, -1.0)
    with pytest.raises(ValueError, match="n_obs=1"):
        deflated_sharpe(0.1, 1, 0.0, 3.0, 5, 0.01)
