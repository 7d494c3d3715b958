"""The probabilistic and the deflated Sharpe ratio (Bailey & López de Prado).

Picking the best of ``N`` configurations by Sharpe ratio overstates what the winner
will earn: even with no skill, the best of ``N`` noisy estimates is expected to be
positive. The **deflated Sharpe ratio** (Bailey & López de Prado 2014, "The Deflated
Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality",
J. Portfolio Management 40(5)) is the probability that the true Sharpe ratio exceeds the
best one expected from ``N`` skill-less trials, allowing for the returns' skew and
fat tails:

* probabilistic Sharpe ratio (Bailey & López de Prado 2012), all per period:
  ``PSR(SR*) = Φ( (SR − SR*) · √(n − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4 · SR²) )``
* expected maximum of ``N`` skill-less Sharpe ratios with variance ``V`` across trials:
  ``E[max SR] = √V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))``, ``γ`` ≈ 0.5772
  (Euler–Mascheroni)
* ``DSR = PSR(E[max SR])``.

Sharpe ratios here are **per period** (not annualised): divide an annualised one by
``√periods_per_year``. ``kurtosis`` is the plain (Pearson) kurtosis, 3 for a normal
distribution, not the excess kurtosis.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = [
    "EULER_GAMMA",
    "deflate_trials",
    "deflated_sharpe",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "return_moments",
]

#: The Euler–Mascheroni constant γ.
EULER_GAMMA = 0.5772156649015329


def _check(n_obs: int, kurtosis: float) -> None:
    if n_obs < 2:
        raise ValueError(f"deflated Sharpe: n_obs={n_obs}; at least 2 returns are needed")
    if not kurtosis > 0:
        raise ValueError(
            f"deflated Sharpe: kurtosis={kurtosis} — pass the plain (Pearson) kurtosis, "
            "3 for normal returns, not the excess kurtosis"
        )


def probabilistic_sharpe(
    sharpe: float,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    benchmark: float = 0.0,
) -> float:
    """P(true Sharpe > ``benchmark``) given a per-period Sharpe estimated on ``n_obs`` returns.

    ``skew`` and ``kurtosis`` (Pearson, normal = 3) are the returns' moments. NaN when
    the estimate is NaN or the moments make the variance term non-positive (very skewed
    returns with a large per-period Sharpe).
    """
    _check(n_obs, kurtosis)
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not variance > 0:  # also catches NaN
        return math.nan
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(variance)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max SR] of ``n_trials`` skill-less trials whose Sharpe ratios have this variance.

    Per period, as the inputs. One trial involves no selection: 0.
    """
    if n_trials < 1:
        raise ValueError(f"deflated Sharpe: n_trials={n_trials}; at least one trial is needed")
    if not sharpe_variance >= 0:
        raise ValueError(f"deflated Sharpe: sharpe_variance={sharpe_variance}; a variance is >= 0")
    if n_trials == 1:
        return 0.0
    quantile = stats.norm.ppf
    spread = (1.0 - EULER_GAMMA) * quantile(1.0 - 1.0 / n_trials) + EULER_GAMMA * quantile(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return float(math.sqrt(sharpe_variance) * spread)


def deflated_sharpe(
    sharpe_observed: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    sharpe_variance_across_trials: float,
) -> float:
    """Deflated Sharpe ratio: ``PSR(E[max SR])``, a probability in [0, 1].

    ``sharpe_observed``: the selected trial's per-period Sharpe on ``n_obs`` returns with
    this ``skew`` and (Pearson) ``kurtosis``; ``n_trials``: how many configurations were
    compared; ``sharpe_variance_across_trials``: the variance of their per-period Sharpe
    estimates. Above 0.95, the Sharpe ratio is significant at 5% after the selection.
    """
    benchmark = expected_max_sharpe(n_trials, sharpe_variance_across_trials)
    return probabilistic_sharpe(sharpe_observed, n_obs, skew, kurtosis, benchmark)


def deflate_trials(sharpe, n_obs, skew, kurtosis) -> dict[str, np.ndarray]:
    """PSR and DSR of each of ``N`` compared trials, deflated over all of them.

    Inputs: one value per trial (per-period Sharpe, returns, skew, Pearson kurtosis).
    ``V`` is the variance (ddof=1; 0 for one trial) of the trials' Sharpe ratios. Returns
    arrays of length ``N``: ``probabilistic_sharpe`` (P(SR > 0)), ``deflated_sharpe``
    (P(SR > E[max SR])) and ``expected_max_sharpe`` (the same E[max SR] for every trial).
    """
    sr, n, g3, g4 = (np.asarray(v, dtype=np.float64) for v in (sharpe, n_obs, skew, kurtosis))
    n_trials = len(sr)
    variance = float(np.var(sr, ddof=1)) if n_trials > 1 else 0.0
    sr0 = expected_max_sharpe(n_trials, variance)
    rows = list(zip(sr, n.astype(int), g3, g4, strict=True))
    return {
        "expected_max_sharpe": np.full(n_trials, sr0),
        "probabilistic_sharpe": np.array([probabilistic_sharpe(*row) for row in rows]),
        "deflated_sharpe": np.array([probabilistic_sharpe(*row, sr0) for row in rows]),
    }


def return_moments(returns) -> tuple[float, int, float, float]:
    """``(per-period Sharpe, n_obs, skew, Pearson kurtosis)`` of periodic returns (NaN dropped).

    Sharpe uses ddof=1 as :func:`.metrics.sharpe_ratio` does; skew and kurtosis are the
    sample moments (``scipy.stats``, biased, as in the paper). NaN moments when flat.
    """
    r = np.asarray(returns, dtype=np.float64)
    r = r[~np.isnan(r)]
    n = len(r)
    if n < 2 or np.std(r) == 0:
        return math.nan, n, math.nan, math.nan
    sharpe = float(r.mean() / r.std(ddof=1))
    return sharpe, n, float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))
