"""Trailing-window and recursive kernels on one symbol's 1-D array.

Everything here is causal (the value at row ``t`` uses rows ``<= t``) and O(n). The
EMA / Wilder recursion (seeded with a simple average exactly as TA-Lib seeds it) and the
rolling mean/std and higher moments are single-pass compiled loops from
:mod:`._kernels`; :func:`rolling_sum` is one cumulative sum. Rows without a full window
are NaN.
"""

from __future__ import annotations

import numpy as np

from ._kernels import MEAN_STD, _rolling_mean_std, _rolling_moments, _seeded_ema

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


def _float64(x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous float64 array (no copy when it already is one)."""
    return np.ascontiguousarray(x, dtype=np.float64)


def _out(x: np.ndarray) -> np.ndarray:
    """An uninitialised output like ``x``; the kernels fill every row.

    Allocated by numpy rather than inside the compiled kernel: numpy's large-array
    allocator (huge pages where the kernel allows them) makes fresh outputs several
    times cheaper to fault in than numba's runtime allocations.
    """
    return np.empty(len(x))


def rolling_mean_std(x: np.ndarray, window: int, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and standard deviation over ``window`` rows; (n,) → two (n,) arrays.

    ``ddof=0`` is the population std (TA-Lib's BBANDS/STDDEV), ``ddof=1`` the sample std
    (pandas ``rolling().std()``). Welford's rolling update, recomputed exactly from the
    window every 1,024 rows and after a NaN leaves it; a window of identical values has
    exactly its value as mean and 0 as std. A NaN inside a window makes that window NaN.
    """
    if window <= ddof:
        raise ValueError(f"window ({window}) must exceed ddof ({ddof})")
    x = _float64(x)
    mean, std = _out(x), _out(x)
    _rolling_mean_std(x, int(window), int(ddof), MEAN_STD, 1.0, mean, std)
    return mean, std


def rolling_moments(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing bias-corrected skewness and excess kurtosis, as pandas ``rolling`` gives them.

    Skewness is the adjusted Fisher–Pearson G1 = sqrt(n(n-1))/(n-2) · m3/m2^1.5 and kurtosis
    G2 = ((n²-1)·m4/m2² - 3(n-1)²) / ((n-2)(n-3)), with central moments m_k of the window.
    Windows whose variance is numerically zero (m2 <= 1e-14, flat prices) are NaN, as in
    pandas. Needs ``window >= 4``.
    """
    if window < 4:
        raise ValueError(f"window ({window}) must be at least 4 for kurtosis")
    x = _float64(x)
    skew, kurt = _out(x), _out(x)
    _rolling_moments(x, int(window), skew, kurt)
    return skew, kurt


def seeded_ema(x: np.ndarray, alpha: float, period: int, start: int = 0) -> np.ndarray:
    """Exponential smoothing ``y_t = (1-alpha)·y_{t-1} + alpha·x_t`` seeded by a simple mean.

    The first output, at row ``start + period - 1``, is the mean of
    ``x[start : start + period]``; earlier rows are NaN. ``alpha = 2/(period+1)`` gives
    TA-Lib's EMA, ``alpha = 1/period`` Wilder's smoothing (RSI, ATR). (n,) → (n,).
    """
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")
    x = _float64(x)
    out = _out(x)
    _seeded_ema(x, float(alpha), int(period), int(start), out)
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
