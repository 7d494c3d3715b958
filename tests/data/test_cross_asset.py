"""Cross-asset views: alignment, bounded forward fill, calendar guards, storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import CrossAssetConfig
from market_nn_plus_ultra.data.cross_asset import (
    CalendarMismatchError,
    cross_asset_view,
    parse_context_columns,
    read_cross_asset_view,
)
from market_nn_plus_ultra.data.store import update_database, write_database


def _panel(calendars: dict[str, pd.DatetimeIndex], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, stamps in calendars.items():
        close = 100 + rng.normal(size=len(stamps)).cumsum()
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": pd.DatetimeIndex(stamps).as_unit("ns"),
                    "symbol": symbol,
                    "close": close,
                    "volume": rng.uniform(1, 2, len(stamps)),
                }
            )
        )
    return pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()


DAYS = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")


def test_hand_case_exact_fill_and_drop():
    # SPY misses days 3, 6 and 7 (0-based 2, 5, 6) and ends on day 8.
    panel = _panel({"AAA": DAYS, "SPY": DAYS[[0, 1, 3, 4, 7]]})
    spy = panel.xs("SPY", level="symbol")["close"]
    view = cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close"], fill_limit=1))
    got = view.values.xs("AAA", level="symbol")["spy_close"].to_numpy()
    expected = [spy.iloc[0], spy.iloc[1], spy.iloc[1], spy.iloc[2], spy.iloc[3], spy.iloc[3]]
    np.testing.assert_array_equal(got[:6], expected)
    assert np.isnan(got[6])  # second missing bar in a row: beyond fill_limit=1
    assert got[7] == spy.iloc[4]

    stats = view.stats.set_index(["symbol", "name"]).loc[("AAA", "spy_close")]
    assert (stats["bars"], stats["exact"], stats["filled"], stats["missing"]) == (8, 5, 2, 1)
    assert stats["fill_rate"] == pytest.approx(2 / 8)
    assert view.dropped_rows == 1
    table = view.table()
    assert list(table.columns) == ["view", "timestamp", "symbol", "name", "value"]
    assert len(table) == 8 + 5 - 1  # AAA's bars plus SPY's own, less the dropped one
    assert (table["view"] == "context").all()

    unfilled = cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close"], fill_limit=0))
    assert unfilled.dropped_rows == 3


def test_matches_brute_force_on_ragged_calendars():
    rng = np.random.default_rng(1)
    days = pd.date_range("2024-01-01", periods=120, freq="D", tz="UTC")
    calendars = {s: days[np.sort(rng.choice(120, 100, replace=False))] for s in ("A", "B", "C")}
    panel = _panel(calendars, seed=2)
    cfg = CrossAssetConfig(columns=["B:close", "C:volume"], fill_limit=2, min_overlap=0.5)
    view = cross_asset_view(panel, cfg)
    for (target, ctx_symbol, column), name in [
        (("A", "B", "close"), "b_close"),
        (("A", "C", "volume"), "c_volume"),
        (("C", "B", "close"), "b_close"),
    ]:
        ctx = panel.xs(ctx_symbol, level="symbol")[column]
        stamps = calendars[target]
        expected = []
        for i in range(len(stamps)):
            value = np.nan
            for back in range(0, 3):  # the bar itself, then up to 2 earlier bars
                if i - back >= 0 and stamps[i - back] in ctx.index:
                    value = ctx[stamps[i - back]]
                    break
            expected.append(value)
        got = view.values.xs(target, level="symbol")[name].to_numpy()
        np.testing.assert_array_equal(got, np.array(expected))


def test_causal_under_truncation():
    rng = np.random.default_rng(4)
    days = pd.date_range("2024-01-01", periods=90, freq="D", tz="UTC")
    calendars = {s: days[np.sort(rng.choice(90, 70, replace=False))] for s in ("A", "B")}
    panel = _panel(calendars)
    cfg = CrossAssetConfig(columns=["A:close", "B:close"], fill_limit=3, min_overlap=0.3)
    full = cross_asset_view(panel, cfg).values
    for cut in days[[30, 55, 80]]:
        part = cross_asset_view(panel.loc[:cut], cfg).values
        pd.testing.assert_frame_equal(part, full.loc[:cut])


def test_refuses_daily_against_intraday():
    hours = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    panel = _panel({"BTC": hours, "SPY": DAYS})
    with pytest.raises(CalendarMismatchError) as err:
        cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close"]))
    message = str(err.value)
    assert "BTC bars every 0 days 01:00:00 but context SPY bars every 1 days" in message
    assert "min_overlap" in message


def test_refuses_low_overlap_sessions():
    hours = pd.date_range("2024-01-01", periods=24 * 14, freq="h", tz="UTC")
    session = hours[(hours.hour >= 14) & (hours.hour < 21) & (hours.day_of_week < 5)]
    panel = _panel({"BTC": hours, "SPY": session})
    with pytest.raises(CalendarMismatchError, match=r"BTC and context SPY .* share only 2\d%"):
        cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close"], min_overlap=0.5))
    # The same pair passes once the user accepts the lower overlap.
    view = cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close"], min_overlap=0.2))
    row = view.overlap.set_index(["symbol", "context"]).loc[("BTC", "SPY"), "overlap"]
    # Shared span: Mon 01-01 14:00 to Fri 01-12 20:00 = 11 days + 7 hours = 271 BTC bars,
    # of which SPY has 10 sessions x 7 hours.
    assert row == pytest.approx(70 / 271)


def test_user_errors_name_the_fix():
    panel = _panel({"AAA": DAYS, "SPY": DAYS})
    with pytest.raises(ValueError, match="did you mean SPY"):
        cross_asset_view(panel, CrossAssetConfig(columns=["SPX:close"]))
    with pytest.raises(ValueError, match="did you mean SPY:close"):
        cross_asset_view(panel, CrossAssetConfig(columns=["SPY:closee"]))
    with pytest.raises(ValueError, match="is not SYMBOL:column"):
        parse_context_columns(["SPYclose"])
    with pytest.raises(ValueError, match="is empty"):
        cross_asset_view(panel, CrossAssetConfig())
    assert parse_context_columns(["BRK.B:close"])[0].name == "brk_b_close"


def test_table_round_trip(tmp_path):
    panel = _panel({"AAA": DAYS, "SPY": DAYS[[0, 1, 3, 4, 7]]})
    view = cross_asset_view(panel, CrossAssetConfig(columns=["SPY:close", "AAA:volume"]))
    series = panel.reset_index().assign(open=lambda f: f.close, high=lambda f: f.close)
    series = series.assign(low=series["close"])
    db = write_database(tmp_path / "v.db", {"series": series})
    update_database(db, {"cross_asset_views": view.table()})
    back = read_cross_asset_view(db, "context")
    expected = view.values[view.complete][sorted(view.values.columns)]
    pd.testing.assert_frame_equal(back, expected)
    with pytest.raises(ValueError, match="did you mean 'context'"):
        read_cross_asset_view(db, "contxt")
