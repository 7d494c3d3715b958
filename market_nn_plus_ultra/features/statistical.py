"""Statistical features of log returns: realised volatility, skewness, kurtosis, regime.

All windows are trailing and include the current bar; the one-bar log return at bar 0
does not exist, so a ``window``-bar statistic of returns starts at bar ``window``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .frequency import periods_per_year as infer_periods_per_year
from .registry import TIMESTAMP, register
from .rolling import lag_difference, log_returns, rolling_mean_std, rolling_moments

__all__ = ["kurt_20", "realised_vol_20", "regime_bull_prob", "skew_20"]

_STAT = ("statistical",)


@register(
    inputs=("close", TIMESTAMP),
    warmup=lambda window, periods_per_year: window,
    tags=(*_STAT, "volatility"),
)
def realised_vol_20(
    close: np.ndarray,
    timestamp: np.ndarray,
    *,
    window: int = 20,
    periods_per_year: float | None = None,
) -> np.ndarray:
    """Annualised realised volatility: sqrt(periods per year) × rolling std of log returns.

    Sample standard deviation (ddof 1, as pandas ``rolling().std()``) of the last
    ``window`` one-bar log returns. ``periods_per_year`` null infers it from the symbol's
    bar spacing: 252 for daily equities, 365 for daily crypto, bars-per-day × trading
    days for intraday data (see :func:`~market_nn_plus_ultra.features.frequency.periods_per_year`).
    """
    if periods_per_year is None:
        periods_per_year = infer_periods_per_year(timestamp)
    _, std = rolling_mean_std(log_returns(close), window, ddof=1)
    return np.sqrt(periods_per_year) * std


@register(inputs=("close",), warmup=lambda window: window, tags=(*_STAT, "distribution"))
def skew_20(close: np.ndarray, *, window: int = 20) -> np.ndarray:
    """Rolling skewness of the last ``window`` log returns (bias-corrected G1, as pandas)."""
    return rolling_moments(log_returns(close), window)[0]


@register(inputs=("close",), warmup=lambda window: window, tags=(*_STAT, "distribution"))
def kurt_20(close: np.ndarray, *, window: int = 20) -> np.ndarray:
    """Rolling excess kurtosis of the last ``window`` log returns (bias-corrected G2, as pandas)."""
    return rolling_moments(log_returns(close), window)[1]


@register(
    inputs=("close",),
    warmup=lambda window, vol_window: max(window, vol_window),
    tags=(*_STAT, "regime"),
)
def regime_bull_prob(close: np.ndarray, *, window: int = 20, vol_window: int = 60) -> np.ndarray:
    """Soft probability of a bull regime: Φ of the z-score of the trailing ``window``-bar return.

    ``z_t = log(close_t / close_{t-window}) / (σ_t · sqrt(window))`` where σ_t is the sample
    std of one-bar log returns over the last ``vol_window`` bars, and the feature is the
    standard normal CDF Φ(z_t) — the posterior probability that the drift is positive
    under Gaussian returns and a flat prior. 0.5 = no trend; near 1 a strong up-trend,
    near 0 a strong down-trend. Flat prices (σ = 0) give 0.5.
    """
    log_close = np.log(close)  # once: the logarithm is the costliest pass here
    returns = lag_difference(log_close, 1)
    trend = lag_difference(log_close, window)
    _, sigma = rolling_mean_std(returns, vol_window, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = trend / (sigma * np.sqrt(window))
    prob = ndtr(z)
    prob[(sigma == 0.0) & (trend == 0.0)] = 0.5
    return prob
