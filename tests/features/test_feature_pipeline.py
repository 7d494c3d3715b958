"""FeaturePipeline on a ragged multi-symbol panel: shape, order, dtype, warm-up, errors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import FeaturesConfig
from market_nn_plus_ultra.features import REGISTRY, FeatureError, FeaturePipeline
from market_nn_plus_ultra.features.pipeline import _blocks
from market_nn_plus_ultra.features.rolling import rolling_sum, seeded_ema
from tests.features.feature_panels import ragged_panel


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return ragged_panel()


def test_default_set_keeps_index_and_appends_every_default_output(panel):
    pipeline = FeaturePipeline()
    out = pipeline.transform_panel(panel)
    assert out.index.equals(panel.index)
    assert list(out.columns[:5]) == list(panel.columns)
    defaults = [o for s in REGISTRY if s.default for o in s.outputs]
    assert list(out.columns[5:]) == defaults
    assert pipeline.last_report.computed == defaults
    assert pipeline.last_report.skipped == {}
    assert (out[defaults].dtypes == np.float64).all()


def test_each_symbol_sees_only_its_own_bars(panel):
    out = FeaturePipeline(names=["log_return_1"]).transform_panel(panel)
    for symbol, rows in panel.groupby(level="symbol"):
        close = rows["close"].to_numpy()
        expected = np.r_[np.nan, np.log(close[1:] / close[:-1])]
        got = out.xs(symbol, level="symbol")["log_return_1"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_warmup_rows_are_nan_exactly_and_reported(panel):
    pipeline = FeaturePipeline()
    out = pipeline.transform_panel(panel)
    warmup = pipeline.last_report.warmup
    assert warmup == pipeline.warmup
    assert warmup["log_return_1"] == 1
    assert warmup["rsi_14"] == 14 and warmup["atr_14"] == 14
    assert warmup["macd"] == warmup["macd_signal"] == warmup["macd_hist"] == 33
    assert warmup["bb_width_20"] == 19 and warmup["volume_z_20"] == 19
    assert warmup["realised_vol_20"] == warmup["skew_20"] == warmup["kurt_20"] == 20
    assert warmup["fft_energy_low"] == 64 and warmup["hour_sin"] == 0
    for symbol, rows in out.groupby(level="symbol"):
        for name, rows_nan in warmup.items():
            values = rows[name].to_numpy()
            assert np.isnan(values[:rows_nan]).all(), (symbol, name)
            assert np.isfinite(values[rows_nan:]).all(), (symbol, name)


def test_float32_output_and_params_from_config(panel):
    config = FeaturesConfig(
        names=["realised_vol_20", "fft_energy"],
        fft_window=16,
        periods_per_year=100.0,
        dtype="float32",
    )
    pipeline = FeaturePipeline.from_config(config)
    out = pipeline.transform_panel(panel)
    assert (out[pipeline.output_names].dtypes == np.float32).all()
    assert pipeline.warmup["fft_energy_low"] == 16
    spy = panel.xs("SPY", level="symbol")["close"]
    ref = np.log(spy).diff().rolling(20).std() * 10.0
    got = out.xs("SPY", level="symbol")["realised_vol_20"]
    np.testing.assert_allclose(got.to_numpy()[20:], ref.to_numpy()[20:], rtol=1e-6)
    shares = out[["fft_energy_low", "fft_energy_mid", "fft_energy_high"]].dropna()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)


def test_unsorted_panel_gives_the_same_features(panel):
    shuffled = panel.sample(frac=1.0, random_state=0)
    a = FeaturePipeline(names=["rsi_14", "macd"]).transform_panel(panel)
    b = FeaturePipeline(names=["rsi_14", "macd"]).transform_panel(shuffled).loc[panel.index]
    pd.testing.assert_frame_equal(a, b)


def test_full_grid_fast_path_matches_the_general_reorder():
    rng = np.random.default_rng(5)
    stamps = pd.date_range("2024-01-01", periods=300, freq="h", tz="UTC")
    index = pd.MultiIndex.from_product([stamps, ["A", "B", "C"]], names=["timestamp", "symbol"])
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (300, 3)), axis=0)).ravel()
    grid = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
         "volume": rng.uniform(1, 2, len(close))},
        index=index,
    )  # fmt: skip
    assert _blocks(grid).grid == (300, 3)
    shuffled = grid.sample(frac=1.0, random_state=1)
    assert _blocks(shuffled).grid is None
    fast = FeaturePipeline().transform_panel(grid)
    general = FeaturePipeline().transform_panel(shuffled).loc[grid.index]
    pd.testing.assert_frame_equal(fast, general, check_exact=True)
    only_b = FeaturePipeline(names=["rsi_14"]).transform_panel(
        grid.xs("B", level=1, drop_level=False)
    )
    np.testing.assert_array_equal(fast.xs("B", level=1)["rsi_14"], only_b["rsi_14"])


def test_duplicate_bar_and_wrong_index_are_clear_errors(panel):
    doubled = pd.concat([panel, panel.iloc[[10]]])
    with pytest.raises(FeatureError, match=r"duplicate bar for .* drop duplicates"):
        FeaturePipeline(names=["rsi_14"]).transform_panel(doubled)
    with pytest.raises(FeatureError, match=r"indexed by \(timestamp, symbol\)"):
        FeaturePipeline(names=["rsi_14"]).transform_panel(panel.reset_index())


def test_calendar_features_skip_on_daily_bars(caplog):
    days = pd.date_range("2024-01-01", periods=50, freq="D", tz="UTC")
    index = pd.MultiIndex.from_product([days, ["BTC-USD"]], names=["timestamp", "symbol"])
    daily = pd.DataFrame({"close": np.linspace(100, 120, 50)}, index=index)
    pipeline = FeaturePipeline(names=["calendar", "log_return_1"])
    with caplog.at_level(logging.INFO, logger="market_nn_plus_ultra.features.pipeline"):
        out = pipeline.transform_panel(daily)
    assert "hour_sin" not in out and "log_return_1" in out
    assert pipeline.last_report.skipped["hour_sin"] == "intraday-only feature on daily data"


def test_kernels_match_direct_formulas():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(rolling_sum(x, 2), [np.nan, 3, np.nan, np.nan, 9, 11, 13])
    y = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    # Seed = mean(2, 4, 6) = 4 at row 2, then y_t = 0.5 y_{t-1} + 0.5 x_t.
    np.testing.assert_allclose(seeded_ema(y, 0.5, 3), [np.nan, np.nan, 4.0, 6.0, 8.0])


def test_a_nan_input_poisons_only_what_depends_on_it(caplog):
    rng = np.random.default_rng(2)
    stamps = pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC")
    index = pd.MultiIndex.from_product([stamps, ["X"]], names=["timestamp", "symbol"])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    close[100] = np.nan
    panel = pd.DataFrame({"close": close}, index=index)
    names = ["log_return_1", "bb_width_20", "rsi_14"]
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.features.pipeline"):
        out = FeaturePipeline(names=names).transform_panel(panel)
    assert "panel column close has 1 NaN values" in caplog.text
    missing = {c: np.flatnonzero(out[c].isna().to_numpy()) for c in names}
    np.testing.assert_array_equal(missing["log_return_1"], [0, 100, 101])
    # Rolling: only the 20 windows that contain bar 100.
    np.testing.assert_array_equal(missing["bb_width_20"], np.r_[0:19, 100:120])
    # Recursive: NaN from the bad bar on.
    np.testing.assert_array_equal(missing["rsi_14"], np.r_[0:14, 100:200])


def test_threads_give_identical_results_and_surface_errors(panel):
    one = FeaturePipeline(threads=1).transform_panel(panel)
    many = FeaturePipeline(threads=3).transform_panel(panel)
    pd.testing.assert_frame_equal(one, many, check_exact=True)
    assert FeaturePipeline(threads=0).threads >= 1
    with pytest.raises(FeatureError, match="threads must be >= 0"):
        FeaturePipeline(threads=-1)
    with pytest.raises(ValueError, match="fft_energy: window must be at least 6"):
        FeaturePipeline(names=["fft_energy"], params={"fft_energy": {"window": 4}}, threads=3
                        ).transform_panel(panel)  # fmt: skip
