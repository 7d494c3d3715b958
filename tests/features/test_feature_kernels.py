"""The compiled kernels against plain numpy/scipy references on random series.

The references are written independently of the kernels: recursions through
``scipy.signal.lfilter`` and whole-array numpy, rolling statistics by an explicit
two-pass computation over every window (``sliding_window_view``). Inputs carry NaNs at
the start (warm-up) and in the middle, so the NaN rules are checked too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from market_nn_plus_ultra.features.rolling import rolling_mean_std, rolling_moments, seeded_ema
from market_nn_plus_ultra.features.technical import atr_14, bb_width_20, macd, rsi_14, volume_z_20


def _ref_ema(x: np.ndarray, alpha: float, period: int, start: int = 0) -> np.ndarray:
    out = np.full(len(x), np.nan)
    first = start + period - 1
    if len(x) <= first:
        return out
    seed = np.mean(x[start : first + 1])
    out[first] = seed
    beta = 1.0 - alpha
    out[first + 1 :] = lfilter([alpha], [1.0, -beta], x[first + 1 :], zi=[beta * seed])[0]
    return out


def _ref_rsi(close: np.ndarray, period: int) -> np.ndarray:
    change = np.diff(close)
    gain = np.maximum(change, 0.0)
    loss = np.maximum(-change, 0.0)
    loss[np.isnan(change)] = np.nan
    g = _ref_ema(gain, 1 / period, period)
    total = g + _ref_ema(loss, 1 / period, period)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(total == 0.0, 50.0, 100.0 * g / total)
    return np.r_[np.nan, rsi]


def _ref_rolling(x: np.ndarray, window: int, stat) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[window - 1 :] = stat(sliding_window_view(x, window))
    return out


def _series(n: int, seed: int, *, lead_nans: int = 0, mid_nan: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    x[:lead_nans] = np.nan
    if mid_nan is not None:
        x[mid_nan] = np.nan
    return x


@pytest.mark.parametrize(("lead", "mid"), [(0, None), (7, None), (3, 250)])
def test_recursions_equal_the_lfilter_reference(lead, mid):
    x = _series(600, 1, lead_nans=lead, mid_nan=mid)
    high, low = x * 1.004, x * 0.995
    for alpha, period, start in [(0.1, 10, 0), (2 / 13, 12, 14), (1 / 14, 14, 0)]:
        np.testing.assert_allclose(
            seeded_ema(x, alpha, period, start), _ref_ema(x, alpha, period, start), rtol=1e-12
        )
    np.testing.assert_allclose(rsi_14(x), _ref_rsi(x, 14), rtol=1e-11, atol=1e-11)
    line = _ref_ema(x, 2 / 13, 12, 14) - _ref_ema(x, 2 / 27, 26)
    sig = np.full(len(x), np.nan)
    sig[25:] = _ref_ema(line[25:], 2 / 10, 9)
    line[:33] = np.nan
    for ours, ref in zip(macd(x), (line, sig, line - sig), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=1e-12)
    prev = x[:-1]
    tr = np.maximum(high[1:], prev) - np.minimum(low[1:], prev)
    np.testing.assert_allclose(atr_14(high, low, x), np.r_[np.nan, _ref_ema(tr, 1 / 14, 14)])


def test_recursion_warmup_and_nan_rows_are_exact():
    x = _series(120, 2, mid_nan=60)
    assert np.flatnonzero(np.isnan(rsi_14(x))).tolist() == [*range(14), *range(60, 120)]
    line, sig, hist = macd(x)
    for out in (line, sig, hist):
        assert np.flatnonzero(np.isnan(out)).tolist() == [*range(33), *range(60, 120)]
    # ATR: a NaN high or low blanks its own bar on; a NaN close the next bar on (the true
    # range of bar t uses the close of bar t-1).
    clean = _series(120, 8)
    for which, first_nan in ((0, 50), (1, 50), (2, 51)):
        bars = [clean * 1.01, clean * 0.99, clean.copy()]
        bars[which][50] = np.nan
        assert np.flatnonzero(np.isnan(atr_14(*bars))).tolist() == [
            *range(14),
            *range(first_nan, 120),
        ]
    short = _series(20, 3)
    assert np.isnan(macd(short)[0]).all() and np.isnan(rsi_14(short[:14])).all()
    assert (
        np.isnan(atr_14(short[:14], short[:14], short[:14])).all() and len(rsi_14(short[:0])) == 0
    )


@pytest.mark.parametrize(("lead", "mid", "ddof"), [(0, None, 0), (5, None, 1), (1, 3000, 1)])
def test_rolling_mean_std_equals_a_two_pass_reference(lead, mid, ddof):
    # 5,000 rows cross several exact refreshes (every 1,024 rows) of the rolling update.
    x = _series(5000, 4, lead_nans=lead, mid_nan=mid)
    mean, std = rolling_mean_std(x, 20, ddof=ddof)
    np.testing.assert_allclose(mean, _ref_rolling(x, 20, lambda w: w.mean(axis=1)), rtol=1e-12)
    ref_std = _ref_rolling(x, 20, lambda w: w.std(axis=1, ddof=ddof))
    np.testing.assert_allclose(std, ref_std, rtol=1e-9)
    ref_width = 4.0 * _ref_rolling(x, 20, lambda w: w.std(axis=1) / w.mean(axis=1))
    np.testing.assert_allclose(bb_width_20(x), ref_width, rtol=1e-9)


def test_rolling_std_stays_exact_far_from_zero_over_a_long_series():
    # A price far from 0 with tiny moves: sums of squares would cancel catastrophically.
    rng = np.random.default_rng(5)
    x = 1e5 + np.cumsum(rng.normal(0.0, 1e-3, 200_000))
    _, std = rolling_mean_std(x, 20, ddof=0)
    ref = _ref_rolling(x, 20, lambda w: w.std(axis=1))
    np.testing.assert_allclose(std[19:], ref[19:], rtol=1e-9)


def test_flat_windows_are_exactly_zero_and_volume_z_matches_by_hand():
    volume = np.r_[np.arange(1.0, 31.0), np.full(25, 7.0), np.arange(10.0, 40.0)]
    z = volume_z_20(volume)
    window = sliding_window_view(volume, 20)
    ref = (volume[19:] - window.mean(axis=1)) / window.std(axis=1, ddof=1)
    flat = window.std(axis=1) == 0.0
    ref[flat] = 0.0
    assert flat.sum() == 6 and (z[19:][flat] == 0.0).all()
    np.testing.assert_allclose(z[19:], ref, rtol=1e-10, atol=1e-12)
    _, std = rolling_mean_std(np.full(50, 3.3), 20, ddof=0)
    assert (std[19:] == 0.0).all()


@pytest.mark.parametrize(("lead", "mid"), [(1, None), (1, 2500)])
def test_rolling_moments_equal_pandas(lead, mid):
    returns = np.diff(np.log(_series(4001, 6)))
    returns = np.r_[np.full(lead, np.nan), returns]
    if mid is not None:
        returns[mid] = np.nan
    skew, kurt = rolling_moments(returns, 20)
    series = pd.Series(returns)
    np.testing.assert_allclose(skew, series.rolling(20).skew(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kurt, series.rolling(20).kurt(), rtol=1e-8, atol=1e-10)
    assert np.isnan(rolling_moments(np.zeros(30), 20)[0][19:]).all()  # flat: undefined


def test_unusable_periods_are_named_errors():
    x = _series(50, 7)
    with pytest.raises(ValueError, match="rsi_14: period must be at least 1 bars, got 0"):
        rsi_14(x, period=0)
    with pytest.raises(ValueError, match="macd: signal must be at least 1 bars, got 0"):
        macd(x, signal=0)
    with pytest.raises(ValueError, match="volume_z_20: period must be at least 2 bars, got 1"):
        volume_z_20(x, period=1)
    with pytest.raises(ValueError, match="period must be at least 1, got 0"):
        seeded_ema(x, 0.5, 0)


def test_long_series_prefixes_give_identical_rolling_values():
    # Blocks of 1,024 rows take a check-free path unless a value is NaN or repeats the one
    # before it; both paths must give the same bits, whatever follows the cut.
    x = _series(5000, 9)
    x[3000] = x[2999]  # a repeat in the fourth block
    x[4100] = np.nan  # a NaN in the last
    full_width, full_z = bb_width_20(x), volume_z_20(x)
    full_mean, full_std = rolling_mean_std(x, 20, ddof=1)
    for cut in (2999, 3001, 3500, 4096, 4101):
        np.testing.assert_array_equal(bb_width_20(x[:cut]), full_width[:cut])
        np.testing.assert_array_equal(volume_z_20(x[:cut]), full_z[:cut])
        mean, std = rolling_mean_std(x[:cut], 20, ddof=1)
        np.testing.assert_array_equal(mean, full_mean[:cut])
        np.testing.assert_array_equal(std, full_std[:cut])
    assert np.isnan(full_width[4100:4120]).all() and np.isfinite(full_width[4120:]).all()
