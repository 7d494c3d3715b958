"""Technical indicators: returns, velocity, RSI, MACD, Bollinger width, ATR, volume z-score.

Definitions follow TA-Lib's (Wilder smoothing seeded with a simple average for RSI and
ATR; EMAs seeded with a simple average and TA-Lib's MACD alignment; Bollinger bands with
the population standard deviation) and agree with it to 1e-6 once the seed has decayed;
the warm-up rows are NaN exactly where TA-Lib's are. RSI, MACD and ATR are each one
fused compiled pass over the symbol's bars (:mod:`._kernels`).
"""

from __future__ import annotations

import numpy as np

from ._kernels import SCALED_CV, ZSCORE, _atr, _macd, _rolling_mean_std, _rsi
from .registry import register
from .rolling import _float64, _out, lag_difference, log_returns

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


def _check_periods(feature: str, least: int = 1, **periods: int) -> None:
    """Reject window lengths the kernels cannot use, naming the feature and parameter."""
    for name, value in periods.items():
        if int(value) < least:
            raise ValueError(f"{feature}: {name} must be at least {least} bars, got {value}")


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
    _check_periods("rsi_14", period=period)
    close = _float64(close)
    out = _out(close)
    _rsi(close, int(period), out)
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
    _check_periods("macd", fast=fast, slow=slow, signal=signal)
    fast, slow = min(fast, slow), max(fast, slow)
    close = _float64(close)
    line, sig, hist = _out(close), _out(close), _out(close)
    _macd(close, int(fast), int(slow), int(signal), line, sig, hist)
    return line, sig, hist


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
    _check_periods("bb_width_20", period=period)
    close = _float64(close)
    width = _out(close)
    _rolling_mean_std(close, int(period), 0, SCALED_CV, 2.0 * nbdev, width, width)
    return width


@register(
    inputs=("high", "low", "close"), warmup=lambda period: period, tags=(*_TECH, "volatility")
)
def atr_14(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, period: int = 14) -> np.ndarray:
    """Average True Range (Wilder, 1978) in price units, as TA-Lib's ``ATR``.

    True range ``max(high_t, close_{t-1}) - min(low_t, close_{t-1})`` from bar 1, Wilder
    smoothed (``α = 1/period``) and seeded at bar ``period`` with the mean of the first
    ``period`` true ranges.
    """
    _check_periods("atr_14", period=period)
    high, low, close = _float64(high), _float64(low), _float64(close)
    out = _out(close)
    _atr(high, low, close, int(period), out)
    return out


@register(inputs=("volume",), warmup=lambda period: period - 1, tags=(*_TECH, "volume"))
def volume_z_20(volume: np.ndarray, *, period: int = 20) -> np.ndarray:
    """Volume z-score: ``(volume_t - mean) / std`` over the last ``period`` bars (bar t included).

    Sample standard deviation (ddof 1); a window of identical volumes scores 0.
    """
    _check_periods("volume_z_20", least=2, period=period)  # the sample std needs 2
    volume = _float64(volume)
    z = _out(volume)
    _rolling_mean_std(volume, int(period), 1, ZSCORE, 1.0, z, z)
    return z
