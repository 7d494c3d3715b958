"""Yahoo bootstrap against a recorded yfinance 1.x ``download(group_by="ticker")`` response."""

from __future__ import annotations

import socket
import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.importers import DataImportError
from market_nn_plus_ultra.data.store import read_table
from market_nn_plus_ultra.data.yahoo import bootstrap, split_download

yf = pytest.importorskip("yfinance")
runner = CliRunner()
FIELDS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


def _history(dates: pd.DatetimeIndex, base: float, dividend_factor: float) -> pd.DataFrame:
    """One ticker as ``Ticker.history(auto_adjust=False)`` returns it."""
    close = base + np.arange(len(dates), dtype=float)
    frame = pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Adj Close": close * dividend_factor,
            "Volume": np.arange(1, len(dates) + 1, dtype=np.int64) * 1000,
        },
        index=dates,
    )
    frame.index.name = "Date"
    return frame


def _recorded(shift: float = 0.0) -> pd.DataFrame:
    """Built the way yfinance 1.x ``multi._download_impl`` assembles it: every ticker
    reindexed to the union of the calendars, concatenated with keys on a (Ticker, Price)
    column index; a failed ticker is ``utils.empty_df()`` (all NaN)."""
    weekdays = pd.DatetimeIndex(["2024-01-05", "2024-01-08", "2024-01-09"], name="Date")
    every_day = pd.date_range("2024-01-05", "2024-01-09", freq="D", name="Date")
    dfs = {
        "SPY": _history(weekdays, 470.0 + shift, 0.98),
        "BTC-USD": _history(every_day, 44000.0 + shift, 1.0),
        "NOPE": pd.DataFrame(index=pd.DatetimeIndex([], name="Date"), columns=FIELDS, dtype=float),
    }
    union = weekdays.union(every_day)
    dfs = {k: v.reindex(union) for k, v in dfs.items()}
    return pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])


@pytest.fixture()
def recorded(monkeypatch):
    calls = []

    def download(tickers, **kwargs):
        calls.append((tickers, kwargs))
        return _recorded()

    monkeypatch.setattr(yf, "download", download)
    return calls


def _dump(path) -> dict[str, list]:
    with sqlite3.connect(path) as con:
        return {
            t: con.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall()
            for t in ("series", "assets", "metadata")
        }


def test_recorded_layout_matches_the_installed_yfinance():
    # The real function's defaults and the empty frame a failed ticker gets.
    from yfinance import utils

    assert list(utils.empty_df().columns) == FIELDS
    assert _recorded().columns.names == ["Ticker", "Price"]


def test_bootstrap_writes_adjusted_bars_and_reports_failed_tickers(tmp_path, recorded):
    result = bootstrap(tmp_path / "y.db", ["spy", "BTC-USD", "NOPE"], "2024-01-01", "2024-02-01")

    ((tickers, kwargs),) = recorded
    assert tickers == ["SPY", "BTC-USD", "NOPE"]
    assert kwargs["group_by"] == "ticker" and kwargs["auto_adjust"] is False
    assert kwargs["progress"] is False and kwargs["interval"] == "1d"
    assert result.symbols == ("BTC-USD", "SPY") and result.rows == 3 + 5
    assert any("NOPE" in w for w in result.warnings)

    got = read_table(tmp_path / "y.db", "series").set_index(["symbol", "timestamp"])
    spy = got.loc["SPY"]
    assert list(spy.index) == list(
        pd.to_datetime(["2024-01-05", "2024-01-08", "2024-01-09"], utc=True)
    )
    np.testing.assert_allclose(spy["close"], [470 * 0.98, 471 * 0.98, 472 * 0.98])
    np.testing.assert_allclose(spy["open"], [469.5 * 0.98, 470.5 * 0.98, 471.5 * 0.98])
    np.testing.assert_array_equal(spy["volume"], [1000.0, 2000.0, 3000.0])
    assert len(got.loc["BTC-USD"]) == 5  # weekends kept: ragged calendars
    assets = read_table(tmp_path / "y.db", "assets").set_index("symbol")
    assert (
        assets.loc["BTC-USD", "asset_class"] == "crypto"
        and assets.loc["SPY", "asset_class"] == "equity"
    )


def test_running_twice_gives_the_same_database_and_overwrite_rebuilds(
    tmp_path, recorded, monkeypatch
):
    db = tmp_path / "y.db"
    bootstrap(db, ["SPY", "BTC-USD"], "2024-01-01", "2024-02-01")
    first = _dump(db)
    bootstrap(db, ["SPY", "BTC-USD"], "2024-01-01", "2024-02-01")
    assert _dump(db) == first

    monkeypatch.setattr(yf, "download", lambda tickers, **kw: _recorded(shift=10.0)[["SPY"]])
    bootstrap(db, ["SPY"], "2024-01-01", "2024-02-01", overwrite=True)
    got = read_table(db, "series")
    assert set(got["symbol"]) == {"SPY"} and got["close"].iloc[0] == pytest.approx(480 * 0.98)


def test_intraday_times_are_converted_from_the_exchange_zone(tmp_path, monkeypatch):
    # Intraday downloads carry the exchange zone (index named "Datetime"); DST moves UTC.
    idx = pd.DatetimeIndex(["2024-03-08 09:30", "2024-03-11 09:30"], name="Datetime")
    frame = _history(idx.tz_localize("America/New_York"), 100.0, 1.0)
    data = pd.concat({"QQQ": frame}, axis=1, names=["Ticker", "Price"])
    monkeypatch.setattr(yf, "download", lambda tickers, **kw: data)
    bootstrap(tmp_path / "y.db", ["QQQ"], "2024-03-01", "2024-03-12", interval="1h")
    got = read_table(tmp_path / "y.db", "series")
    assert list(got["timestamp"]) == list(
        pd.to_datetime(["2024-03-08 14:30", "2024-03-11 13:30"], utc=True)
    )
    flat, missing = split_download(frame, ["QQQ"])  # multi_level_index=False layout
    assert missing == [] and flat["QQQ"]["Close"].tolist() == [100.0, 101.0]


def test_no_rows_at_all_is_an_error_naming_the_tickers(tmp_path, monkeypatch):
    monkeypatch.setattr(yf, "download", lambda tickers, **kw: _recorded()[["NOPE"]])
    with pytest.raises(DataImportError, match="no rows for NOPE"):
        bootstrap(tmp_path / "y.db", ["NOPE"], "2024-01-01", "2024-02-01")
    assert not (tmp_path / "y.db").exists()


def test_cli_takes_several_tickers_after_one_flag(tmp_path, recorded):
    db = tmp_path / "OUT.db"
    args = ["data", "bootstrap", str(db), "--tickers", "SPY", "BTC-USD"]
    result = runner.invoke(app, [*args, "--start", "2000-01-01", "--end", "2025-01-01"])
    assert result.exit_code == 0, result.output
    assert recorded[0][0] == ["SPY", "BTC-USD"]
    assert recorded[0][1]["start"] == "2000-01-01" and recorded[0][1]["end"] == "2025-01-01"
    assert sorted(read_table(db, "series")["symbol"].unique()) == ["BTC-USD", "SPY"]
    assert str(db) in result.output

    wrong = runner.invoke(
        app, ["data", "bootstrap", "--tickers", "SPY", "QQQ", str(tmp_path / "x.db")]
    )
    assert wrong.exit_code == 2 and "put the database first" in wrong.output


def _online() -> bool:
    try:
        socket.create_connection(("query1.finance.yahoo.com", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.network
def test_live_download(tmp_path):
    if not _online():
        pytest.skip("Yahoo Finance is not reachable")
    result = bootstrap(tmp_path / "live.db", ["SPY"], "2024-01-02", "2024-01-06")
    got = read_table(tmp_path / "live.db", "series")
    assert result.rows == len(got) == 4  # 2024-01-02 .. 2024-01-05 sessions
    assert (got["high"] >= got["low"]).all()
