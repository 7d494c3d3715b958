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
bins in each band.

The FFT runs over zero-copy sliding-window views in chunks, so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .registry import register
from .rolling import log_returns

__all__ = ["band_bins", "fft_energy"]

_CHUNK_ROWS = 16_384  # windows per FFT batch: ~9 MB of complex spectrum per chunk


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
    n = len(close)
    shares = np.full((3, n), np.nan)
    returns = log_returns(close)[1:]
    if len(returns) < window:
        return shares[0], shares[1], shares[2]
    low, mid, _ = band_bins(window)
    # Frequencies rise with the bin, so each band is a contiguous run of bins (none empty
    # for window >= 6) and one reduceat sums them — no BLAS call per chunk.
    starts = np.array([0, low.sum(), low.sum() + mid.sum()])
    counts = np.diff(np.append(starts, window // 2))
    white = counts / counts.sum()
    views = sliding_window_view(returns, window)  # (n - window, window), no copy
    out = shares[:, window:]  # window j ends at return j + window - 1 = bar j + window
    for lo in range(0, len(views), _CHUNK_ROWS):
        spectrum = np.fft.rfft(views[lo : lo + _CHUNK_ROWS], axis=1)  # (chunk, window//2 + 1)
        # |X_k|² summed over a band = the sum of the squared real and imaginary parts, read
        # as interleaved floats: squaring in place skips the strided .real/.imag passes.
        parts = spectrum.view(np.float64)  # (chunk, 2·(window//2 + 1)): re, im, re, im, …
        np.multiply(parts, parts, out=parts)
        energy = np.add.reduceat(parts, 2 * (starts + 1), axis=1)  # (chunk, 3), bin 0 left out
        total = energy.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            band = energy / total
        band[total[:, 0] == 0.0] = white
        out[:, lo : lo + len(band)] = band.T
    return shares[0], shares[1], shares[2]
