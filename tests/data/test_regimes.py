"""Causal regime labellers: values against brute-force references, causality, storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import RegimeConfig
from market_nn_plus_ultra.data.regimes import (
    band_labels,
    label_by_quantiles,
    read_regimes,
    read_sectors,
    regime_labels,
    regime_measures,
    regimes_table,
)
from market_nn_plus_ultra.data.store import update_database, write_database

SECTORS = {"AAA": "tech", "BBB": "tech", "CCC": "energy", "DDD": "energy"}


def _panel(n: int = 220, seed: int = 0) -> pd.DataFrame:
    """Ragged daily panel: DDD trades every other day only."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2023-01-02", periods=n, freq="D", tz="UTC").as_unit("ns")
    frames = []
    for i, symbol in enumerate(SECTORS):
        stamps = days[::2] if symbol == "DDD" else days
        # Volatility that changes over time, so the bands are actually used.
        scale = 0.01 * (1 + (np.arange(len(stamps)) // 40) % 3)
        close = 50.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, scale)))
        volume = rng.integers(1_000, 5_000, len(stamps)).astype(float)
        frames.append(
            pd.DataFrame({"timestamp": stamps, "symbol": symbol, "close": close, "volume": volume})
        )
    return pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()


def _reference_labels(measure: np.ndarray, bands, labels, min_history: int) -> list:
    out = []
    for t in range(len(measure)):
        hist = measure[: t + 1]
        hist = hist[~np.isnan(hist)]
        if np.isnan(measure[t]) or len(hist) < min_history:
            out.append(None)
            continue
        cuts = np.quantile(hist, bands)
        out.append(labels[int((measure[t] > cuts).sum())])
    return out


def test_label_by_quantiles_hand_case():
    idx = pd.MultiIndex.from_product(
        [pd.date_range("2024-01-01", periods=5, tz="UTC"), ["X"]], names=["timestamp", "symbol"]
    )
    values = pd.Series([1.0, 2.0, 3.0, 0.0, 5.0], index=idx)
    # Expanding medians from t=2: 2, 1.5, 2 → 3 is above, 0 below, 5 above.
    expanding = label_by_quantiles(values, [0.5], ["lo", "hi"], min_history=3)
    assert expanding.tolist() == [None, None, "hi", "lo", "hi"]
    # Two-bar window: medians 1.5, 2.5, 1.5, 2.5 from t=1.
    rolling = label_by_quantiles(values, [0.5], ["lo", "hi"], window=2, min_history=3)
    assert rolling.tolist() == [None, "hi", "hi", "lo", "hi"]


def test_volatility_labels_match_brute_force():
    panel = _panel()
    cfg = RegimeConfig(labellers=["volatility"], vol_window=10, min_history=30)
    labels = regime_labels(panel, cfg)
    for symbol in SECTORS:
        close = panel.xs(symbol, level="symbol")["close"].to_numpy()
        ret = np.diff(np.log(close), prepend=np.nan)
        vol = np.full(len(ret), np.nan)
        for t in range(10, len(ret)):
            vol[t] = np.std(ret[t - 9 : t + 1], ddof=1)
        expected = _reference_labels(vol, cfg.bands, ["low", "mid", "high"], 30)
        got = labels.xs(symbol, level="symbol")["volatility"].tolist()
        assert got == expected
    assert set(labels["volatility"].dropna()) == {"low", "mid", "high"}


@pytest.mark.parametrize("measure", ["dollar_volume", "amihud"])
def test_liquidity_measure_matches_numpy(measure):
    panel = _panel()
    cfg = RegimeConfig(labellers=["liquidity"], liquidity_window=5, liquidity_measure=measure)
    got = regime_measures(panel, cfg)["liquidity"].xs("CCC", level="symbol").to_numpy()
    sym = panel.xs("CCC", level="symbol")
    dollar = sym["close"].to_numpy() * sym["volume"].to_numpy()
    if measure == "dollar_volume":
        per_bar = dollar
    else:
        per_bar = -np.abs(np.diff(np.log(sym["close"].to_numpy()), prepend=np.nan)) / dollar
    expected = np.full(len(per_bar), np.nan)
    for t in range(4, len(per_bar)):
        expected[t] = per_bar[t - 4 : t + 1].mean()
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


def test_sector_strength_hand_case():
    stamps = pd.date_range("2024-01-01", periods=2, tz="UTC").as_unit("ns")
    moves = {"AAA": 0.1, "BBB": 0.3, "CCC": 0.0, "DDD": -0.2}  # log returns on day 2
    rows = [
        (ts, s, 100.0 * np.exp(m * k), 1.0) for s, m in moves.items() for k, ts in enumerate(stamps)
    ]
    panel = pd.DataFrame(rows, columns=["timestamp", "symbol", "close", "volume"])
    panel = panel.set_index(["timestamp", "symbol"]).sort_index()
    cfg = RegimeConfig(labellers=["sector_rotation"], sector_window=1)
    strength = regime_measures(panel, cfg, SECTORS)["sector_rotation"].xs(stamps[1])
    # tech mean 0.2, energy mean -0.1, cross-section mean 0.05.
    np.testing.assert_allclose(strength[["AAA", "BBB", "CCC", "DDD"]], [0.15, 0.15, -0.15, -0.15])
    # A symbol without a sector gets no strength; at least one sector is required.
    partial = regime_measures(panel, cfg, {"AAA": "tech", "CCC": "energy"})["sector_rotation"]
    assert np.isnan(partial.xs(stamps[1])["BBB"])
    with pytest.raises(ValueError, match=r"assets\.sector"):
        regime_measures(panel, cfg, {})


def test_labels_are_causal_under_truncation():
    panel = _panel()
    cfg = RegimeConfig(quantile_window=50, min_history=20, vol_window=5, sector_window=3)
    full = regime_labels(panel, cfg, SECTORS)
    assert full.notna().sum().min() > 300
    stamps = panel.index.get_level_values("timestamp").unique()
    for cut in stamps[[40, 111, 180]]:
        part = regime_labels(panel.loc[:cut], cfg, SECTORS)
        pd.testing.assert_frame_equal(part, full.loc[:cut])


def test_band_labels_and_errors():
    assert band_labels(RegimeConfig()) == ["low", "mid", "high"]
    assert band_labels(RegimeConfig(bands=[0.2, 0.4, 0.6])) == [
        "band_0",
        "band_1",
        "band_2",
        "band_3",
    ]
    with pytest.raises(ValueError, match=r"labels has 2 entries.*make 3 bands"):
        band_labels(RegimeConfig(labels=["calm", "stormy"]))


def test_table_round_trip(tmp_path):
    panel = _panel(n=120)
    cfg = RegimeConfig(min_history=20)
    wide = regime_labels(panel, cfg, SECTORS)
    table = regimes_table(wide)
    assert list(table.columns) == ["timestamp", "symbol", "name", "value"]
    assert len(table) == int(wide.notna().sum().sum())
    assert table["timestamp"].iloc[0].endswith("Z")

    series = panel.reset_index().assign(open=lambda f: f.close, high=lambda f: f.close)
    series = series.assign(low=series["close"])
    assets = pd.DataFrame(
        {"asset_id": range(4), "symbol": list(SECTORS), "sector": [*SECTORS.values()]}
    )
    db = write_database(tmp_path / "r.db", {"series": series, "assets": assets})
    assert read_sectors(db).to_dict() == SECTORS
    update_database(db, {"regimes": table}, replace_tables=("regimes",))
    back = read_regimes(db)
    expected = wide.dropna(how="all")[sorted(wide.columns)]
    pd.testing.assert_frame_equal(back.fillna("-"), expected.fillna("-"), check_dtype=False)
    with pytest.raises(ValueError, match="no labels named \\['volatilty'\\]"):
        read_regimes(db, ["volatilty"])
