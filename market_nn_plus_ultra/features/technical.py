"""Technical indicators: returns, velocity, RSI, MACD, Bollinger width, ATR, volume z-score.

Definitions follow TA-Lib's (Wilder smoothing seeded with a simple average for RSI and
ATR; EMAs seeded with a simple average and TA-Lib's MACD alignment; Bollinger bands with
the population standard deviation) and agree with it to 1e-6 once the seed has decayed;
the warm-up rows are NaN exactly where TA-Lib's are.
"""

from __future__ import annotations

import numpy as np

from .registry import register
from .rolling import lag_difference, log_returns, rolling_mean_std, seeded_ema

__all__ = [
    "atr_14",
    "bb_width_20",
    "log_return_1",
    "macd",
    "rsi_14",
    "velocity_5",
    "volume_z_20",
]

_TECH = ("technical",)


@register(inputs=("close",), warmup=1, tags=(*_TECH, "returns"))
def log_return_1(close: np.ndarray) -> np.ndarray:
    """One-bar log return ``log(close_t / close_{t-1})``."""
    return log_returns(close)


@register(inputs=("close",), warmup=lambda period: period, tags=(*_TECH, "momentum"))
def velocity_5(close: np.ndarray, *, period: int = 5) -> np.ndarray:
    """Price velocity: the mean log return per bar over the last ``period`` bars.

    ``(log close_t - log close_{t-period}) / period`` — a smoothed, multi-step speed of the
    price in log units per bar (0.001 = +0.1 % per bar on average).
    """
    return lag_difference(np.log(close), period) / period


@register(inputs=("close",), warmup=lambda period: period, tags=(*_TECH, "momentum"))
def rsi_14(close: np.ndarray, *, period: int = 14) -> np.ndarray:
    """Relative Strength Index (Wilder, 1978), 0–100, as TA-Lib's ``RSI``.

    Average gain G and loss L of the one-bar close changes are Wilder-smoothed
    (``α = 1/period``), seeded at bar ``period`` with the simple mean of the first
    ``period`` changes; RSI = 100·G/(G+L). A window with no price change at all is 50
    (TA-Lib writes 0 there).
    """
    change = np.diff(close)
    gain = np.maximum(change, 0.0)
    loss = np.subtract(gain, change, out=change)  # max(-d, 0) = max(d, 0) - d, in place
    avg_gain = seeded_ema(gain, 1.0 / period, period)
    total = seeded_ema(loss, 1.0 / period, period)
    total += avg_gain  # G + L
    out = np.empty(len(close))
    out[0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(avg_gain, total, out=out[1:])
    out *= 100.0
    out[1:][total == 0.0] = 50.0
    return out


def _macd_warmup(fast: int, slow: int, signal: int) -> int:
    return max(fast, slow) + signal - 2


@register(
    inputs=("close",),
    outputs=("macd", "macd_signal", "macd_hist"),
    warmup=_macd_warmup,
    tags=(*_TECH, "trend"),
)
def macd(
    close: np.ndarray, *, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line, signal line and histogram (Appel), as TA-Lib's ``MACD``.

    ``macd = EMA_fast(close) - EMA_slow(close)``, ``macd_signal = EMA_signal(macd)``,
    ``macd_hist = macd - macd_signal``, with ``α = 2/(period+1)``. As in TA-Lib, both
    price EMAs start at bar ``slow-1`` (the slow one seeded with the mean of the first
    ``slow`` closes, the fast one with the mean of the ``fast`` closes ending there), the
    signal EMA is seeded with the mean of the first ``signal`` MACD values, and all three
    outputs start together at bar ``slow + signal - 2``.
    """
    fast, slow = min(fast, slow), max(fast, slow)
    start = slow - 1
    ema_fast = seeded_ema(close, 2.0 / (fast + 1), fast, start=start - fast + 1)
    ema_slow = seeded_ema(close, 2.0 / (slow + 1), slow)
    line = ema_fast - ema_slow
    sig = np.full(len(close), np.nan)
    if len(close) > start:
        sig[start:] = seeded_ema(line[start:], 2.0 / (signal + 1), signal)
    line[: start + signal - 1] = np.nan
    return line, sig, line - sig


@register(
    inputs=("close",),
    warmup=lambda period, nbdev: period - 1,
    tags=(*_TECH, "volatility"),
)
def bb_width_20(close: np.ndarray, *, period: int = 20, nbdev: float = 2.0) -> np.ndarray:
    """Bollinger band width ``(upper - lower) / middle`` = 2·nbdev·σ/SMA, as TA-Lib's ``BBANDS``.

    σ is the population standard deviation of the last ``period`` closes and SMA their
    mean (``nbdev = 2`` standard deviations each side).
    """
    mean, std = rolling_mean_std(close, period, ddof=0)
    return 2.0 * nbdev * std / mean


@register(
    inputs=("high", "low", "close"), warmup=lambda period: period, tags=(*_TECH, "volatility")
)
def atr_14(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, period: int = 14) -> np.ndarray:
    """Average True Range (Wilder, 1978) in price units, as TA-Lib's ``ATR``.

    True range ``max(high_t, close_{t-1}) - min(low_t, close_{t-1})`` from bar 1, Wilder
    smoothed (``α = 1/period``) and seeded at bar ``period`` with the mean of the first
    ``period`` true ranges.
    """
    out = np.full(len(close), np.nan)
    if len(close) < 2:
        return out
    prev = close[:-1]
    true_range = np.maximum(high[1:], prev)
    true_range -= np.minimum(low[1:], prev)
    out[1:] = seeded_ema(true_range, 1.0 / period, period)
    return out


@register(inputs=("volume",), warmup=lambda period: period - 1, tags=(*_TECH, "volume"))
def volume_z_20(volume: np.ndarray, *, period: int = 20) -> np.ndarray:
    """Volume z-score: ``(volume_t - mean) / std`` over the last ``period`` bars (bar t included).

    Sample standard deviation (ddof 1); a window of identical volumes scores 0.
    """
    mean, std = rolling_mean_std(volume, period, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (volume - mean) / std
    z[std == 0.0] = 0.0
    return z
