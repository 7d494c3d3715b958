"""Alternative-data connectors: backward as-of joins with a staleness limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import AlternativeDataSpec, ConfigError, load_config
from market_nn_plus_ultra.data.alternative import (
    AlternativeDataConnector,
    alt_column_hints,
    alt_feature_columns,
    default_alternative_specs,
)
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.data.store import StoreError, write_database


def _bars(symbol: str, stamps: pd.DatetimeIndex) -> pd.DataFrame:
    close = 100.0 + np.arange(len(stamps), dtype=float)
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "symbol": symbol,
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": 1_000.0,
        }
    )


def _panel(series: pd.DataFrame) -> pd.DataFrame:
    frame = series.assign(timestamp=pd.DatetimeIndex(series["timestamp"]).as_unit("ns"))
    return frame.set_index(["timestamp", "symbol"]).sort_index()


@pytest.fixture
def db(tmp_path):
    days = pd.date_range("2024-01-01 21:00", periods=10, freq="D", tz="UTC")
    series = pd.concat([_bars("AAA", days[days.day_of_week < 5]), _bars("BTC", days)])
    assets = pd.DataFrame({"asset_id": [1, 2], "symbol": ["AAA", "BTC"], "sector": ["x", "y"]})
    sentiment = pd.DataFrame(
        {
            # AAA: one observation exactly at a bar, one between bars, one after the last bar.
            "timestamp": pd.to_datetime(
                [
                    "2024-01-02 21:00",
                    "2024-01-04 09:00",
                    "2024-01-30 00:00",
                    "2024-01-01 00:00",
                    "2024-01-06 22:00",
                ],
                utc=True,
            ),
            "symbol": ["AAA", "AAA", "AAA", "BTC", "BTC"],
            "sentiment_score": [0.5, -0.25, 9.0, 1.0, 2.0],
            "news_volume": [3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    macro = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-03 00:00", "2024-01-08 12:00"], utc=True),
            "rate_10y": [4.0, 4.25],
            "cpi_surprise": [0.1, -0.2],
            "event_flag": [1.0, 0.0],
        }
    )
    path = tmp_path / "alt.db"
    write_database(
        path,
        {"series": series, "assets": assets, "alt_sentiment": sentiment, "alt_macro": macro},
    )
    return path, _panel(series)


def _value(frame: pd.DataFrame, when: str, symbol: str, column: str) -> float:
    return float(frame.loc[(pd.Timestamp(when, tz="UTC"), symbol), column])


def test_per_symbol_join_is_backward_with_staleness(db):
    path, panel = db
    spec = AlternativeDataSpec(name="sentiment", max_staleness="2D")
    out = AlternativeDataConnector([spec]).join(panel, path)

    assert list(out.index) == list(panel.index)
    assert {"sentiment_sentiment_score", "sentiment_news_volume"} <= set(out.columns)
    col = "sentiment_sentiment_score"
    # Before the first observation: nothing to carry.
    assert np.isnan(_value(out, "2024-01-01 21:00", "AAA", col))
    # Observation stamped exactly at the bar is visible at that bar.
    assert _value(out, "2024-01-02 21:00", "AAA", col) == 0.5
    # 2024-01-03 21:00: latest observation is 01-02 21:00 (1 day old).
    assert _value(out, "2024-01-03 21:00", "AAA", col) == 0.5
    # The 01-04 09:00 observation reaches the 01-04 21:00 bar, not the earlier one.
    assert _value(out, "2024-01-04 21:00", "AAA", col) == -0.25
    # 01-05 21:00 is 1.5 days after it: still fresh; 01-08 21:00 is 4.5 days: stale → NaN.
    assert _value(out, "2024-01-05 21:00", "AAA", col) == -0.25
    assert np.isnan(_value(out, "2024-01-08 21:00", "AAA", col))
    # The row stamped after every bar (9.0) never appears anywhere.
    assert not (out[col] == 9.0).any()
    # BTC's rows only ever see BTC observations.
    assert _value(out, "2024-01-01 21:00", "BTC", col) == 1.0
    assert _value(out, "2024-01-02 21:00", "BTC", col) == 1.0  # 1.875 days old
    assert np.isnan(_value(out, "2024-01-03 21:00", "BTC", col))  # 2.875 days old
    assert np.isnan(_value(out, "2024-01-06 21:00", "BTC", col))  # 01-06 22:00 is ahead
    assert _value(out, "2024-01-07 21:00", "BTC", col) == 2.0


def test_global_join_reaches_every_symbol(db):
    path, panel = db
    spec = AlternativeDataSpec(name="macro", join="global", max_staleness="7D")
    out = AlternativeDataConnector([spec]).join(panel, path)
    for symbol in ("AAA", "BTC"):
        assert np.isnan(_value(out, "2024-01-02 21:00", symbol, "macro_rate_10y"))
        assert _value(out, "2024-01-03 21:00", symbol, "macro_rate_10y") == 4.0
        assert _value(out, "2024-01-08 21:00", symbol, "macro_rate_10y") == 4.25
        assert _value(out, "2024-01-08 21:00", symbol, "macro_cpi_surprise") == -0.2


def test_matches_brute_force_reference(tmp_path):
    rng = np.random.default_rng(3)
    hours = pd.date_range("2024-03-01", periods=200, freq="h", tz="UTC")
    series = pd.concat([_bars("AAA", hours[::2]), _bars("BBB", hours)])
    obs_times = hours[0] + pd.to_timedelta(np.sort(rng.uniform(0, 200, 60)), unit="h")
    obs_times = obs_times.floor("s")
    side = pd.DataFrame(
        {
            "timestamp": np.concatenate([obs_times, obs_times]),
            "symbol": ["AAA"] * 60 + ["BBB"] * 60,
            "signal": rng.normal(size=120),
        }
    ).drop_duplicates(["timestamp", "symbol"])
    path = tmp_path / "ref.db"
    assets = pd.DataFrame({"asset_id": [1, 2], "symbol": ["AAA", "BBB"]})
    write_database(path, {"series": series, "assets": assets, "alt_feed": side})
    panel = read_panel(path, cache=False)
    spec = AlternativeDataSpec(name="feed", max_staleness="5h", feature_names={"signal": "sig"})
    out = AlternativeDataConnector([spec]).join(panel, path)

    expected = []
    for ts, symbol in panel.index:
        obs = side[(side.symbol == symbol) & (side.timestamp <= ts)]
        obs = obs[obs.timestamp >= ts - pd.Timedelta("5h")]
        expected.append(obs.sort_values("timestamp")["signal"].iloc[-1] if len(obs) else np.nan)
    np.testing.assert_allclose(out["sig"].to_numpy(), np.array(expected), equal_nan=True)
    assert out["sig"].notna().sum() > 50


def test_missing_tables_are_skipped_unless_required(db):
    path, panel = db
    out = AlternativeDataConnector(default_alternative_specs()).join(panel, path)
    assert "funding_rate" not in out.columns
    assert {"sentiment_score", "macro_event_flag"} <= set(out.columns)
    with pytest.raises(StoreError, match="`alt_fundng` is missing"):
        AlternativeDataConnector([AlternativeDataSpec(name="fundng", required=True)]).load(path)


def test_unknown_column_names_table_and_suggests(db):
    path, panel = db
    spec = AlternativeDataSpec(name="sentiment", columns=["sentiment_scor"])
    with pytest.raises(StoreError, match=r"alt_sentiment\.sentiment_scor.*`sentiment_score`"):
        AlternativeDataConnector([spec]).join(panel, path)


def test_column_clash_is_refused(db):
    path, panel = db
    spec = AlternativeDataSpec(name="sentiment", feature_names={"news_volume": "close"})
    with pytest.raises(ValueError, match="overwrite panel columns \\['close'\\]"):
        AlternativeDataConnector([spec]).join(panel, path)


def test_defaults_cover_five_signals_and_bad_staleness_is_explained():
    names = alt_feature_columns(default_alternative_specs())
    assert len(names) >= 5
    assert "sentiment_score" in names and "funding_rate" in names
    with pytest.raises(ConfigError, match="not a pandas Timedelta"):
        load_config(overrides=["data.alternative_data=[{name: x, max_staleness: soon}]"])


@pytest.fixture
def classed_db(tmp_path):
    """AAA (equity) and BTC (crypto) with funding rows for BTC only; CCC has no asset class."""
    days = pd.date_range("2024-01-01 21:00", periods=6, freq="D", tz="UTC")
    series = pd.concat([_bars("AAA", days), _bars("BTC", days), _bars("CCC", days)])
    assets = pd.DataFrame(
        {
            "asset_id": [1, 2, 3],
            "symbol": ["AAA", "BTC", "CCC"],
            "asset_class": ["Equity", "crypto", None],
        }
    )
    funding = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-02 16:00", "2024-01-04 16:00"], utc=True),
            "symbol": "BTC",
            "funding_rate": [1e-4, -2e-4],
        }
    )
    path = tmp_path / "classed.db"
    write_database(path, {"series": series, "assets": assets, "alt_funding": funding})
    return path, _panel(series)


def test_asset_classes_give_other_classes_not_applicable(classed_db, caplog):
    path, panel = classed_db
    spec = AlternativeDataSpec(name="funding", columns=["funding_rate"], asset_classes=["crypto"])
    connector = AlternativeDataConnector([spec])
    with caplog.at_level("WARNING"):
        out = connector.join(panel, path)
    col = "funding_funding_rate"
    aaa = out.xs("AAA", level="symbol")[col]
    btc = out.xs("BTC", level="symbol")[col]
    ccc = out.xs("CCC", level="symbol")[col]
    # the equity is outside the spec's classes: 0.0 on every bar, never NaN
    assert (aaa == 0.0).all()
    # the crypto symbol is joined as of each bar (1D staleness): NaN before and after
    np.testing.assert_allclose(btc.to_numpy(), [np.nan, 1e-4, np.nan, -2e-4, np.nan, np.nan])
    # unknown asset class: joined as is (no rows → NaN) and said so
    assert ccc.isna().all()
    assert "asset_class is unknown for ['CCC']" in caplog.text
    assert connector.asset_classes == {"AAA": "equity", "BTC": "crypto"}
    # without asset_classes the equity is NaN on every bar, which masks all its cells
    plain = AlternativeDataConnector([spec.model_copy(update={"asset_classes": None})])
    assert plain.join(panel, path).xs("AAA", level="symbol")[col].isna().all()


def test_default_specs_declare_crypto_only_tables_and_hints_name_the_fix():
    specs = {s.name: s for s in default_alternative_specs()}
    assert specs["funding"].asset_classes == ["crypto"]
    assert specs["onchain"].asset_classes == ["crypto"]
    assert specs["sentiment"].asset_classes is None and specs["macro"].asset_classes is None
    hints = alt_column_hints([specs["funding"].model_copy(update={"asset_classes": None})])
    assert "alt_funding (data.alternative_data name='funding')" in hints["funding_rate"]
    assert "asset_classes: [crypto]" in hints["funding_rate"]
    with pytest.raises(ConfigError, match="list the asset classes"):
        load_config(overrides=["data.alternative_data=[{name: x, asset_classes: []}]"])


@pytest.mark.parametrize("join", ["per_symbol", "global"])
@pytest.mark.parametrize("seed", range(6))
def test_the_asof_join_equals_pandas_merge_asof(join, seed):
    """Duplicated and missing stamps, unknown symbols, text values, both tolerances."""
    from market_nn_plus_ultra.data.alternative import ResolvedAltColumn, _asof
    from tests.data.asof_reference import merge_asof_join

    rng = np.random.default_rng(seed)
    days = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC")
    keys = pd.DataFrame(
        {
            "timestamp": days[np.sort(rng.integers(0, len(days), 150))].as_unit("ns"),
            "symbol": rng.choice(["AAA", "BBB", "CCC"], 150),
        }
    )
    n = 80
    stamps = pd.Series(
        days[rng.integers(0, len(days), n)] + pd.to_timedelta(rng.integers(0, 3, n), "h")
    )
    stamps[rng.random(n) < 0.05] = pd.NaT
    side = pd.DataFrame(
        {
            "timestamp": stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ").where(stamps.notna()),
            "symbol": rng.choice(["AAA", "BBB", "ZZZ"], n),  # CCC never observed, ZZZ no bars
            "a": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "b": np.where(rng.random(n) < 0.1, "n/a", rng.integers(0, 9, n).astype(str)),
        }
    )
    staleness = pd.Timedelta(days=int(rng.integers(1, 5))) if seed % 2 else pd.Timedelta(days=365)
    columns = [ResolvedAltColumn("alt_x", c, f"x_{c}", join, staleness, None) for c in ("a", "b")]
    got = _asof(keys, side, columns)
    want = merge_asof_join(keys, side, columns)
    pd.testing.assert_frame_equal(got, want)
    assert got.notna().to_numpy().any() and got.isna().to_numpy().any()
