"""read_panel: values, ordering, ranges, indicators, cache hits and invalidation."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.data.store import StoreError, update_database, write_database


def _series(symbol: str, n: int, freq: str, seed: int, price: float = 100.0) -> pd.DataFrame:
    """``n`` random-walk OHLCV bars of ``symbol`` from 2024-01-01, closes near ``price``."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame(
        {
            "timestamp": ts,
            "symbol": symbol,
            "open": close * 0.999,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(1, 1000, n).astype(float),
        }
    )


@pytest.fixture()
def db(tmp_path):
    series = pd.concat([_series("AAA", 60, "D", 1), _series("BBB", 90, "12h", 2)])
    indicators = pd.concat(
        [
            series[["timestamp", "symbol"]].assign(
                name="sma", value=np.arange(len(series), dtype=float)
            ),
            series[["timestamp", "symbol"]].iloc[::4].assign(name="flag", value=1.0),
        ]
    )
    assets = pd.DataFrame({"asset_id": [1, 2], "symbol": ["AAA", "BBB"]})
    path = tmp_path / "m.db"
    write_database(path, {"series": series, "assets": assets, "indicators": indicators})
    return path, series, indicators


def test_panel_equals_reference(db, tmp_path):
    path, series, indicators = db
    panel = read_panel(path, cache=False)
    expected = series.set_index(["timestamp", "symbol"]).sort_index()
    assert list(panel.index.names) == ["timestamp", "symbol"]
    assert str(panel.index.dtypes["timestamp"]) == "datetime64[ns, UTC]"
    assert panel.index.equals(expected.index)
    np.testing.assert_array_equal(panel[list(expected.columns)].to_numpy(), expected.to_numpy())
    wide = indicators.pivot_table(index=["timestamp", "symbol"], columns="name", values="value")
    wide = wide.reindex(expected.index)
    np.testing.assert_array_equal(panel["sma"].to_numpy(), wide["sma"].to_numpy())
    np.testing.assert_array_equal(panel["flag"].to_numpy(), wide["flag"].to_numpy())
    assert list(panel.columns[:5]) == ["open", "high", "low", "close", "volume"]


def test_symbols_and_inclusive_range(db):
    path, *_ = db
    panel = read_panel(path, symbols=["BBB"], start="2024-01-05", end="2024-01-07", cache=False)
    stamps = panel.index.get_level_values("timestamp")
    assert set(panel.index.get_level_values("symbol")) == {"BBB"}
    assert stamps.min() == pd.Timestamp("2024-01-05", tz="UTC")
    # a date-only end includes that whole day
    assert stamps.max() == pd.Timestamp("2024-01-07 12:00", tz="UTC")
    assert len(panel) == 6


def test_unknown_symbol_suggests(db):
    path, *_ = db
    with pytest.raises(StoreError, match=r"AAB \(did you mean AAA\?\)"):
        read_panel(path, symbols=["AAB"])


def test_missing_database_and_table(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        read_panel(tmp_path / "nope.db")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(StoreError, match="table `series` is missing"):
        read_panel(empty)


def test_cache_hit_and_invalidation(db, tmp_path):
    path, *_ = db
    cache_dir = tmp_path / "cache"
    first = read_panel(path, cache_dir=cache_dir)
    files = list(cache_dir.glob("*.parquet"))
    assert len(files) == 1
    second = read_panel(path, cache_dir=cache_dir)
    pd.testing.assert_frame_equal(first, second)

    # a write to the database must invalidate the cache
    extra = _series("CCC", 5, "D", 3)
    update_database(path, {"series": extra})
    third = read_panel(path, cache_dir=cache_dir)
    assert "CCC" in set(third.index.get_level_values("symbol"))
    assert len(third) == len(first) + 5


def test_offsets_are_converted_to_utc(tmp_path):
    path = tmp_path / "tz.db"
    write_database(path, {"series": _series("AAA", 3, "D", 0)})
    con = sqlite3.connect(path)
    con.execute(
        "UPDATE series SET timestamp = '2024-01-02T05:00:00-05:00' WHERE timestamp LIKE '2024-01-02%'"
    )
    con.commit()
    con.close()
    panel = read_panel(path, cache=False)
    assert pd.Timestamp("2024-01-02 10:00", tz="UTC") in panel.index.get_level_values(0)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2024-01-02T10:00:00.250Z", "2024-01-02 10:00:00.250"),
        ("2024-01-02 10:00:00", "2024-01-02 10:00"),  # no zone: UTC, as the schema says
        ("2024-01-02", "2024-01-02 00:00"),  # mixed with zoned rows: SQLite's parser
    ],
)
def test_timestamp_text_forms(tmp_path, stored, expected):
    path = tmp_path / "forms.db"
    write_database(path, {"series": _series("AAA", 3, "D", 0)})
    con = sqlite3.connect(path)
    con.execute("UPDATE series SET timestamp = ? WHERE timestamp LIKE '2024-01-02%'", (stored,))
    con.commit()
    con.close()
    stamps = read_panel(path, cache=False).index.get_level_values(0)
    assert pd.Timestamp(expected, tz="UTC") in stamps
    assert len(stamps) == 3 and stamps.is_monotonic_increasing


def test_shared_calendar_interleave_matches_reference(tmp_path, monkeypatch):
    import market_nn_plus_ultra.data.panel as panel_module

    monkeypatch.setattr(panel_module, "_BLOCK_ROWS", 7)  # many blocks, one partial
    series = pd.concat([_series(s, 50, "D", i) for i, s in enumerate(["AAA", "BBB", "CCC"])])
    indicators = series[["timestamp", "symbol"]].iloc[1::3].assign(name="sma", value=2.5)
    path = tmp_path / "shared.db"
    write_database(path, {"series": series, "indicators": indicators})
    expected = series.set_index(["timestamp", "symbol"]).sort_index()
    for start, end in ((None, None), ("2024-01-10", "2024-01-20")):
        panel = read_panel(path, start=start, end=end, cache=False)
        want = expected.loc[pd.IndexSlice[start:end, :], :] if start else expected
        assert panel.index.equals(want.index)
        np.testing.assert_array_equal(panel[list(want.columns)].to_numpy(), want.to_numpy())
        sma = indicators.set_index(["timestamp", "symbol"])["value"].reindex(want.index)
        np.testing.assert_array_equal(panel["sma"].to_numpy(), sma.to_numpy())


def test_two_texts_of_one_instant_share_a_timestamp_level(tmp_path):
    path = tmp_path / "dup.db"
    series = pd.concat([_series("AAA", 3, "D", 0), _series("BBB", 3, "D", 1)])
    write_database(path, {"series": series})
    con = sqlite3.connect(path)  # a second spelling of the first bar: the same instant
    con.execute(
        "INSERT INTO series SELECT '2024-01-01T00:00:00+00:00', symbol, open, high, low, close, "
        "volume FROM series WHERE timestamp LIKE '2024-01-01%'"
    )
    con.commit()
    con.close()
    panel = read_panel(path, cache=False)
    assert len(panel) == 8 and panel.index.levels[0].is_unique
    assert panel.index.get_level_values(0).is_monotonic_increasing


def test_a_range_without_bars_ignores_indicator_rows_nearby(db):
    path, _, _ = db  # daily AAA bars at midnight; the query's day of slack reaches them
    panel = read_panel(path, ["AAA"], start="2024-01-01T05:00", end="2024-01-01T10:00", cache=False)
    assert panel.empty


def test_requested_symbol_order_does_not_change_the_row_order(db):
    path, _, _ = db
    panel = read_panel(path, ["BBB", "AAA"], cache=False)
    assert panel.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(panel, read_panel(path, ["AAA", "BBB"], cache=False))
