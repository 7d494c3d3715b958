"""Alternative-data features: names, transforms and the as-of join they read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import AlternativeDataSpec
from market_nn_plus_ultra.data.store import write_database
from market_nn_plus_ultra.features import REGISTRY, FeaturePipeline
from market_nn_plus_ultra.features.alternative import (
    ALT_FEATURES,
    alternative_feature_names,
    join_alternative,
    register_alternative,
)
from market_nn_plus_ultra.features.registry import FeatureError, FeatureRegistry


def test_default_features_are_registered_by_tag_and_not_default():
    assert ALT_FEATURES == (
        "alt_macro_rate_10y",
        "alt_macro_cpi_surprise",
        "alt_macro_event_flag",
        "alt_funding_rate",
        "alt_sentiment_score",
        "alt_sentiment_news_volume",
        "alt_implied_vol_iv_30d",
        "alt_implied_vol_iv_skew",
        "alt_onchain_active_addresses",
        "alt_onchain_exchange_netflow",
    )
    assert alternative_feature_names() == list(ALT_FEATURES)
    assert not set(ALT_FEATURES) & set(FeaturePipeline().output_names)  # opt-in only
    assert REGISTRY.get("alt_sentiment_news_volume").inputs == ("sentiment_news_volume",)
    assert REGISTRY.get("alt_funding_rate").tables == ("alt_funding",)


def test_custom_spec_registers_and_refuses_duplicates():
    registry = FeatureRegistry()
    spec = AlternativeDataSpec(name="shorts", columns=["short_interest", "borrow_fee"])
    assert register_alternative([spec], registry) == [
        "alt_shorts_short_interest",
        "alt_shorts_borrow_fee",
    ]
    assert "shorts" in registry.get("alt_shorts_borrow_fee").tags
    with pytest.raises(FeatureError, match="already registered"):
        register_alternative([spec], registry)
    assert register_alternative([spec], registry, replace=True) == [
        "alt_shorts_short_interest",
        "alt_shorts_borrow_fee",
    ]
    unlisted = AlternativeDataSpec(name="free_form", columns=None)  # names unknown until read
    assert register_alternative([unlisted], registry) == []


def test_features_read_the_backward_as_of_join(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    series = pd.DataFrame(
        {
            "timestamp": stamps,
            "symbol": "AAA",
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 100.0,
        }
    )
    # Observations two hours after bars 0, 2 and 4: bar t sees the one from the day before.
    sentiment = pd.DataFrame(
        {
            "timestamp": stamps[[0, 2, 4]] + pd.Timedelta("2h"),
            "symbol": "AAA",
            "sentiment_score": [0.5, -1.0, 2.0],
            "news_volume": [0.0, 9.0, -3.0],
        }
    )
    tables = {"series": series, "assets": pd.DataFrame({"asset_id": [1], "symbol": ["AAA"]})}
    db = write_database(tmp_path / "alt.db", {**tables, "alt_sentiment": sentiment})
    panel = series.set_index(["timestamp", "symbol"])
    joined = join_alternative(panel, db)
    names = ["alt_sentiment_score", "alt_sentiment_news_volume"]
    out = FeaturePipeline(names=names).transform_panel(joined)
    np.testing.assert_array_equal(
        out["alt_sentiment_score"].to_numpy(), [np.nan, 0.5, 0.5, -1.0, -1.0, 2.0]
    )
    # log(1 + count); a negative count is a data error and becomes NaN.
    np.testing.assert_allclose(
        out["alt_sentiment_news_volume"].to_numpy(),
        [np.nan, 0.0, 0.0, np.log(10.0), np.log(10.0), np.nan],
    )
