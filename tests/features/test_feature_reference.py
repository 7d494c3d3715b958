"""Built-in features against TA-Lib, `ta` and pandas on real S&P 500 and NASDAQ daily bars.

The reference data ship with `arch` (1999–2018 daily OHLCV). Recursive indicators are
compared after a warm-up of 300 rows, where the effect of any difference in seeding has
decayed far below 1e-6; the NaN warm-up rows must sit exactly where TA-Lib puts them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import ta
import talib
from arch.data import nasdaq, sp500

from market_nn_plus_ultra.features import FeaturePipeline
from market_nn_plus_ultra.features.calendar import calendar
from market_nn_plus_ultra.features.frequency import periods_per_year
from market_nn_plus_ultra.features.spectral import band_bins, fft_energy
from market_nn_plus_ultra.features.statistical import regime_bull_prob
from market_nn_plus_ultra.features.technical import atr_14, bb_width_20, macd, rsi_14

WARM = 300
TOL = 1e-6


@pytest.fixture(scope="module", params=["sp500", "nasdaq"])
def bars(request) -> pd.DataFrame:
    frame = {"sp500": sp500, "nasdaq": nasdaq}[request.param].load()
    frame = frame.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]]
    return frame.astype(np.float64)


@pytest.fixture(scope="module")
def features(bars) -> pd.DataFrame:
    index = pd.MultiIndex.from_arrays(
        [bars.index.tz_localize("UTC"), ["IDX"] * len(bars)], names=["timestamp", "symbol"]
    )
    panel = bars.set_axis(index)
    return FeaturePipeline().transform_panel(panel).droplevel("symbol")


def _close(ours: np.ndarray, ref: np.ndarray, *, nan_rows: int | None = None) -> None:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if nan_rows is not None:
        assert np.isnan(ours[:nan_rows]).all() and np.isfinite(ours[nan_rows:]).all()
        assert np.isnan(ref[:nan_rows]).all()
    np.testing.assert_allclose(ours[WARM:], ref[WARM:], rtol=0, atol=TOL)


def test_rsi_matches_talib_and_ta(bars, features):
    close = bars["close"].to_numpy()
    _close(features["rsi_14"], talib.RSI(close, 14), nan_rows=14)
    _close(features["rsi_14"], ta.momentum.RSIIndicator(bars["close"], 14).rsi())
    # The registered function and the pipeline column are the same computation.
    np.testing.assert_array_equal(rsi_14(close), features["rsi_14"].to_numpy())


def test_macd_matches_talib_and_ta(bars, features):
    line, signal, hist = talib.MACD(bars["close"].to_numpy(), 12, 26, 9)
    _close(features["macd"], line, nan_rows=33)
    _close(features["macd_signal"], signal, nan_rows=33)
    _close(features["macd_hist"], hist, nan_rows=33)
    ref = ta.trend.MACD(bars["close"], window_slow=26, window_fast=12, window_sign=9)
    _close(features["macd"], ref.macd())
    _close(features["macd_signal"], ref.macd_signal())
    _close(features["macd_hist"], ref.macd_diff())
    ours = macd(bars["close"].to_numpy(), fast=5, slow=20, signal=4)
    for mine, theirs in zip(ours, talib.MACD(bars["close"].to_numpy(), 5, 20, 4), strict=True):
        _close(mine, theirs, nan_rows=22)


def test_bollinger_width_matches_talib_and_ta(bars, features):
    upper, middle, lower = talib.BBANDS(bars["close"].to_numpy(), 20, 2.0, 2.0)
    _close(features["bb_width_20"], (upper - lower) / middle, nan_rows=19)
    wband = ta.volatility.BollingerBands(bars["close"], 20, 2).bollinger_wband() / 100.0
    _close(features["bb_width_20"], wband)
    three = bb_width_20(bars["close"].to_numpy(), period=10, nbdev=3.0)
    upper, middle, lower = talib.BBANDS(bars["close"].to_numpy(), 10, 3.0, 3.0)
    _close(three, (upper - lower) / middle, nan_rows=9)


def test_atr_matches_talib_and_ta(bars, features):
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    _close(features["atr_14"], talib.ATR(high, low, close, 14), nan_rows=14)
    ref = ta.volatility.AverageTrueRange(bars["high"], bars["low"], bars["close"], 14)
    _close(features["atr_14"], ref.average_true_range())
    _close(atr_14(high, low, close, period=5), talib.ATR(high, low, close, 5), nan_rows=5)


def test_return_statistics_match_pandas_rolling(bars, features):
    log_ret = np.log(bars["close"]).diff()
    assert periods_per_year(bars.index.tz_localize("UTC").as_unit("ns").asi8) == 252.0
    _close(features["realised_vol_20"], log_ret.rolling(20).std() * np.sqrt(252.0), nan_rows=20)
    _close(features["skew_20"], log_ret.rolling(20).skew(), nan_rows=20)
    _close(features["kurt_20"], log_ret.rolling(20).kurt(), nan_rows=20)


def test_hand_checked_returns_velocity_and_volume_z(bars, features):
    close, volume = bars["close"].to_numpy(), bars["volume"].to_numpy()
    t = 1234
    assert features["log_return_1"].iloc[t] == pytest.approx(
        np.log(close[t] / close[t - 1]), abs=1e-15
    )
    assert features["velocity_5"].iloc[t] == pytest.approx(
        (np.log(close[t]) - np.log(close[t - 5])) / 5, abs=1e-15
    )
    window = volume[t - 19 : t + 1]
    expected = (volume[t] - window.mean()) / window.std(ddof=1)
    assert features["volume_z_20"].iloc[t] == pytest.approx(expected, rel=1e-9)
    assert np.isnan(features["velocity_5"].iloc[4]) and np.isfinite(features["velocity_5"].iloc[5])


def test_small_hand_cases():
    # Closes rise by 1 for 14 bars: no losses, RSI = 100; then flat forever: RSI stays 100
    # (Wilder averages of gains decay but losses stay 0).
    close = np.r_[np.arange(100.0, 115.0), np.full(5, 114.0)]
    rsi = rsi_14(close)
    assert np.isnan(rsi[:14]).all() and np.allclose(rsi[14:], 100.0)
    # A fully flat series has no moves at all: RSI 50, zero Bollinger width and ATR.
    flat = np.full(40, 10.0)
    assert np.allclose(rsi_14(flat)[14:], 50.0)
    assert np.allclose(bb_width_20(flat)[19:], 0.0)
    assert np.allclose(atr_14(flat, flat, flat)[14:], 0.0)
    # ATR: true range uses the previous close when it gaps outside the bar.
    high = np.array([10.0, 12.0, 11.0])
    low = np.array([9.0, 11.0, 10.5])
    cls = np.array([9.5, 11.5, 10.8])
    # TR = [max(12, 9.5) - min(11, 9.5), max(11, 11.5) - min(10.5, 11.5)] = [2.5, 1.0]
    assert atr_14(high, low, cls, period=2)[2] == pytest.approx(1.75)


@pytest.mark.parametrize(("period", "band"), [(16, 0), (4, 1), (2, 2)])
def test_fft_energy_puts_a_pure_cycle_in_its_band(period, band):
    # log close = a sinusoid with a whole number of cycles per 64-bar window: its
    # returns have all their power in one bin, at frequency 1/period.
    t = np.arange(400)
    close = 100 * np.exp(0.01 * np.cos(2 * np.pi * t / period + 0.3))
    shares = fft_energy(close)
    assert np.isnan(shares[band][:64]).all()
    np.testing.assert_allclose(shares[band][64:], 1.0, atol=1e-9)


def test_fft_energy_matches_a_direct_fft_per_window(bars):
    close = bars["close"].to_numpy()[:600]
    shares = np.stack(fft_energy(close))
    returns = np.diff(np.log(close))
    freq = np.arange(1, 33) / 64
    bands = [freq <= 1 / 6, (freq > 1 / 6) & (freq <= 1 / 3), freq > 1 / 3]
    for t in (64, 65, 333, 599):
        power = np.abs(np.fft.rfft(returns[t - 64 : t]))[1:] ** 2  # returns ending at bar t
        expected = [power[b].sum() / power.sum() for b in bands]
        np.testing.assert_allclose(shares[:, t], expected, rtol=1e-12)
    flat = np.stack(fft_energy(np.full(80, 7.0)))[:, 70]  # no energy: white-noise shares
    np.testing.assert_allclose(flat, [10 / 32, 11 / 32, 11 / 32])


@pytest.mark.parametrize("window", [6, 64, 129])
def test_fft_energy_sliding_sums_match_a_direct_fft_through_gaps_and_calm(window):
    rng = np.random.default_rng(window)
    returns = rng.normal(0.0, 1e-2, 3000)
    returns[900:1400] *= 1e-5  # volatility collapses 10^5-fold, then recovers
    returns[1600:1700] = 0.0  # flat prices
    returns[2000 : 2000 + window + 20] = 2e-4  # a constant drift: no power outside the mean
    returns[2200:2400] = 1e-3 + rng.normal(0.0, 1e-7, 200)  # a drift 10^4 times the noise
    close = 100 * np.exp(np.cumsum(returns))
    close[2500] = np.nan  # a gap poisons every window that holds it
    shares = np.stack(fft_energy(close, window=window))
    r = np.diff(np.log(close))
    low, mid, high = band_bins(window)
    white = np.array([low.sum(), mid.sum(), high.sum()]) / (window // 2)
    checked = 0
    for t in range(window, len(close)):  # the window of returns ending at bar t
        x = r[t - window : t]
        if np.isnan(x).any():
            assert np.isnan(shares[:, t]).all()
            continue
        power = np.abs(np.fft.rfft(x))[1:] ** 2
        if power.sum() <= 1e-20 * window * (x @ x) or not x.any():  # nothing outside bin 0
            np.testing.assert_allclose(shares[:, t], white)
            continue
        expected = [power[b].sum() / power.sum() for b in (low, mid, high)]
        np.testing.assert_allclose(shares[:, t], expected, rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked > 2000


def test_regime_probability_and_calendar_by_hand(bars):
    close = bars["close"].to_numpy()
    prob = regime_bull_prob(close)
    t = 2000
    returns = np.diff(np.log(close))
    sigma = returns[t - 60 : t].std(ddof=1)  # the 60 returns ending at bar t
    z = np.log(close[t] / close[t - 20]) / (sigma * np.sqrt(20))
    assert prob[t] == pytest.approx(0.5 * (1 + math.erf(z / np.sqrt(2))), abs=1e-12)
    assert np.isnan(prob[:60]).all() and np.isfinite(prob[60:]).all()
    stamps = pd.DatetimeIndex(["2024-01-01 06:00", "2024-01-07 18:00"], tz="UTC").as_unit("ns").asi8
    hour_sin, hour_cos, dow_sin, dow_cos = calendar(stamps)
    np.testing.assert_allclose(hour_sin, [1.0, -1.0], atol=1e-12)  # 06:00 and 18:00
    np.testing.assert_allclose(hour_cos, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(dow_sin, [0.0, np.sin(2 * np.pi * 6 / 7)], atol=1e-12)  # Mon, Sun
    np.testing.assert_allclose(dow_cos, [1.0, np.cos(2 * np.pi * 6 / 7)], atol=1e-12)
