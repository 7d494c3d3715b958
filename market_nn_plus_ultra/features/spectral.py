"""Spectral features: how the energy of recent log returns splits across frequency bands.

For each bar t the last ``window`` one-bar log returns (ending at t, so causal) go
through a real FFT with a rectangular window; the power ``|X_k|²`` of the non-constant
bins ``k = 1 .. window/2`` is split by frequency ``f = k/window`` cycles per bar into

* ``low``  — ``f <= 1/6``: cycles of 6 bars or longer (trend, slow oscillation),
* ``mid``  — ``1/6 < f <= 1/3``: cycles of 3–6 bars,
* ``high`` — ``f > 1/3``: cycles shorter than 3 bars (bar-to-bar reversal noise),

and each band's share of the total is reported (the three sum to 1). The window mean
only moves bin 0, so a drift does not count as low-frequency energy. A window with no
energy at all (flat prices) gets the white-noise shares, proportional to the number of
bins in each band; so does a window whose returns are all equal (a constant drift has
no power outside bin 0).

The power is not computed by an FFT per window: ``|X_k|²`` is a cosine transform of the
window's lag products ``R_d = Σ r_m r_{m+d}``, each of which slides in O(1) per bar, so the
compiled kernel (:func:`._kernels._band_shares`) costs O(window) per bar instead of
O(window · log window) and agrees with a direct FFT to rounding (tested).
"""

from __future__ import annotations

import functools

import numpy as np

from ._kernels import _band_shares
from .registry import register
from .rolling import log_returns

__all__ = ["band_bins", "fft_energy"]


def band_bins(window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks over bins ``1 .. window//2`` for the low, mid and high bands."""
    freq = np.arange(1, window // 2 + 1) / window
    low = freq <= 1.0 / 6.0
    high = freq > 1.0 / 3.0
    return low, ~(low | high), high


@register(
    inputs=("close",),
    outputs=("fft_energy_low", "fft_energy_mid", "fft_energy_high"),
    warmup=lambda window: window,
    tags=("spectral",),
)
def fft_energy(close: np.ndarray, *, window: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of the FFT power of the last ``window`` log returns in low, mid and high bands.

    The bands hold cycles of 6 bars or longer, 3–6 bars and under 3 bars; the three
    shares sum to 1 (see the module doc).
    """
    if window < 6:
        raise ValueError(f"fft_energy: window must be at least 6 bars, got {window}")
    shares = np.full((3, len(close)), np.nan)
    returns = log_returns(close)[1:]
    if len(returns) < window:
        return shares[0], shares[1], shares[2]
    weights, white = _band_weights(window)
    # returns[j] is earned by bar j + 1: the window ending at returns[j] belongs to bar j + 1
    _band_shares(
        np.ascontiguousarray(returns, dtype=np.float64), window, weights, white, shares[:, 1:]
    )
    return shares[0], shares[1], shares[2]


@functools.lru_cache(maxsize=16)
def _band_weights(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the lag weights Σ_{k∈band} cos(2πkd/W) (×2 for d ≥ 1), and white shares."""
    bins = np.arange(1, window // 2 + 1)
    cosines = np.cos(2.0 * np.pi * np.outer(bins, np.arange(window)) / window)  # (bins, W)
    masks = band_bins(window)
    weights = np.stack([cosines[mask].sum(axis=0) for mask in masks])
    weights[:, 1:] *= 2.0
    counts = np.array([mask.sum() for mask in masks], dtype=np.float64)
    return weights, counts / counts.sum()
