"""Trailing-window and recursive kernels on one symbol's 1-D array.

Everything here is causal (the value at row ``t`` uses rows ``<= t``) and O(n):
rolling sums come from one cumulative sum (shifted by the first finite value so the
running total stays small and the subtraction keeps its precision), and the EMA /
Wilder recursions run in C through :func:`scipy.signal.lfilter`, seeded with a simple
average exactly as TA-Lib seeds them. Rows without a full window are NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

__all__ = [
    "lag_difference",
    "log_returns",
    "rolling_mean_std",
    "rolling_moments",
    "rolling_sum",
    "seeded_ema",
]


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of the trailing ``window`` values; (n,) → (n,), first ``window-1`` rows NaN.

    A NaN inside a window makes that window NaN (and only that window).
    """
    n = len(x)
    out = _nan(n)
    if n < window:
        return out
    bad = np.isnan(x)
    has_bad = bool(bad.any())
    if has_bad:
        lead = int(np.argmin(bad)) if not bad.all() else n
        if lead and not bad[lead:].any():
            # Only leading NaNs (a return series' first row): sum the rest directly.
            out[lead:] = rolling_sum(x[lead:], window)
            return out
        x = np.where(bad, 0.0, x)
    total = np.cumsum(x)
    out[window - 1] = total[window - 1]
    np.subtract(total[window:], total[:-window], out=out[window:])
    if has_bad:
        out[rolling_sum(bad.astype(np.float64), window) > 0] = np.nan
    return out


def _shifted(x: np.ndarray) -> tuple[np.ndarray, float]:
    """``x`` minus its first finite value, and that value.

    Window statistics are shift-invariant, and the smaller magnitudes keep the cumulative
    sums precise; the shift depends on the first row only, so it carries nothing backwards.
    """
    finite = np.flatnonzero(np.isfinite(x))
    shift = float(x[finite[0]]) if len(finite) else 0.0
    return x - shift, shift


def rolling_mean_std(x: np.ndarray, window: int, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and standard deviation over ``window`` rows; (n,) → two (n,) arrays.

    ``ddof=0`` is the population std (TA-Lib's BBANDS/STDDEV), ``ddof=1`` the sample std
    (pandas ``rolling().std()``). Rounding below zero in the variance is clipped to 0.
    """
    if window <= ddof:
        raise ValueError(f"window ({window}) must exceed ddof ({ddof})")
    shifted, shift = _shifted(x)
    s1 = rolling_sum(shifted, window)
    s2 = rolling_sum(shifted * shifted, window)
    mean_shifted = s1 / window
    var = (s2 - s1 * mean_shifted) / (window - ddof)
    np.maximum(var, 0.0, out=var)
    return mean_shifted + shift, np.sqrt(var)


def rolling_moments(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing bias-corrected skewness and excess kurtosis, as pandas ``rolling`` gives them.

    Skewness is the adjusted Fisher–Pearson G1 = sqrt(n(n-1))/(n-2) · m3/m2^1.5 and kurtosis
    G2 = ((n²-1)·m4/m2² - 3(n-1)²) / ((n-2)(n-3)), with central moments m_k of the window.
    Windows whose variance is numerically zero (m2 <= 1e-14, flat prices) are NaN, as in
    pandas. Needs ``window >= 4``.
    """
    if window < 4:
        raise ValueError(f"window ({window}) must be at least 4 for kurtosis")
    n = float(window)
    d, _ = _shifted(x)
    d2 = d * d
    a = rolling_sum(d, window) / n
    e2 = rolling_sum(d2, window) / n
    e3 = rolling_sum(d2 * d, window) / n
    e4 = rolling_sum(d2 * d2, window) / n
    a2 = a * a
    m2 = e2 - a2
    m3 = e3 - 3.0 * a * e2 + 2.0 * a2 * a
    m4 = e4 - 4.0 * a * e3 + 6.0 * a2 * e2 - 3.0 * a2 * a2
    flat = ~(m2 > 1e-14)
    m2 = np.where(flat, np.nan, m2)
    skew = np.sqrt(n * (n - 1.0)) / (n - 2.0) * m3 / (m2 * np.sqrt(m2))
    kurt = ((n * n - 1.0) * m4 / (m2 * m2) - 3.0 * (n - 1.0) ** 2) / ((n - 2.0) * (n - 3.0))
    return skew, kurt


def seeded_ema(x: np.ndarray, alpha: float, period: int, start: int = 0) -> np.ndarray:
    """Exponential smoothing ``y_t = (1-alpha)·y_{t-1} + alpha·x_t`` seeded by a simple mean.

    The first output, at row ``start + period - 1``, is the mean of
    ``x[start : start + period]``; earlier rows are NaN. ``alpha = 2/(period+1)`` gives
    TA-Lib's EMA, ``alpha = 1/period`` Wilder's smoothing (RSI, ATR). (n,) → (n,).
    """
    n = len(x)
    first = start + period - 1
    if start < 0 or n <= first:
        return _nan(n)
    out = np.empty(n)
    out[:first] = np.nan
    seed = float(np.mean(x[start : first + 1]))
    out[first] = seed
    if n > first + 1:
        beta = 1.0 - alpha
        out[first + 1 :] = lfilter([alpha], [1.0, -beta], x[first + 1 :], zi=[beta * seed])[0]
    return out


def lag_difference(x: np.ndarray, lag: int) -> np.ndarray:
    """``x_t - x_{t-lag}``; (n,) → (n,), first ``lag`` rows NaN."""
    out = _nan(len(x))
    if len(x) > lag:
        np.subtract(x[lag:], x[:-lag], out=out[lag:])
    return out


def log_returns(close: np.ndarray) -> np.ndarray:
    """One-bar log returns ``log(close_t / close_{t-1})``; (n,) → (n,), first row NaN."""
    return lag_difference(np.log(close), 1)
