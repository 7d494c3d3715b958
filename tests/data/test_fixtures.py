"""The synthetic fixture: determinism, calendars, stylised facts, planted signal, CLI."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import fixture_metadata, generate_fixture, write_fixture
from market_nn_plus_ultra.data.store import (
    StoreError,
    connect,
    list_tables,
    read_metadata,
    read_table,
)

SYMBOLS = ["SPY", "QQQ", "IWM", "BTC-USD", "ETH-USD"]
EQUITIES, CRYPTO = ["IWM", "QQQ", "SPY"], ["BTC-USD", "ETH-USD"]
NY = "America/New_York"


@pytest.fixture(scope="module")
def planted() -> dict[str, pd.DataFrame]:
    """The full-size command's tables (5 × 32768 bars at 15min) with IC 0.1 planted."""
    return generate_fixture(SYMBOLS, 32768, "15min", 4, 7, planted_signal=0.1)


@pytest.fixture(scope="module")
def unplanted() -> dict[str, pd.DataFrame]:
    return generate_fixture(SYMBOLS, 32768, "15min", 4, 11)


def _wide(tables: dict[str, pd.DataFrame], column: str = "close") -> pd.DataFrame:
    return tables["series"].pivot(index="timestamp", columns="symbol", values=column)


def _by_symbol(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    series = tables["series"].sort_values(["symbol", "timestamp"])
    return {s: g.reset_index(drop=True) for s, g in series.groupby("symbol")}


def _next_return(frame: pd.DataFrame) -> np.ndarray:
    """Simple close-to-close return from bar t to t+1 (NaN on the last bar)."""
    close = frame["close"].to_numpy()
    return np.append(close[1:] / close[:-1] - 1.0, np.nan)


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_another_seed_differs() -> None:
    args = (["SPY", "BTC-USD"], 700, "15min", 5, 3)
    first = generate_fixture(*args, planted_signal=0.2)
    second = generate_fixture(*args, planted_signal=0.2)
    assert list(first) == list(second)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)
    other = generate_fixture(["SPY", "BTC-USD"], 700, "15min", 5, 4, planted_signal=0.2)
    assert not np.allclose(first["series"]["close"], other["series"]["close"])
    assert not np.allclose(
        first["alt_sentiment"]["sentiment_score"], other["alt_sentiment"]["sentiment_score"]
    )


def test_a_symbols_path_does_not_depend_on_the_other_symbols() -> None:
    alone = generate_fixture(["SPY", "QQQ"], 300, "1h", 0, 5)["series"]
    more = generate_fixture(["SPY", "QQQ", "BTC-USD", "IWM"], 300, "1h", 0, 5)["series"]
    spy = more[more["symbol"] == "SPY"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone[alone["symbol"] == "SPY"].reset_index(drop=True), spy)


# --------------------------------------------------------------------------------------
# Bars and calendars
# --------------------------------------------------------------------------------------


def test_bars_are_consistent_ohlc_with_positive_prices(planted: dict[str, pd.DataFrame]) -> None:
    s = planted["series"]
    assert s[["open", "high", "low", "close", "volume"]].notna().all().all()
    assert (s["low"] > 0).all()
    assert (s["low"] <= np.minimum(s["open"], s["close"])).all()
    assert (np.maximum(s["open"], s["close"]) <= s["high"]).all()
    assert (s["volume"] >= 0).all()
    assert s.groupby("symbol").size().to_dict() == dict.fromkeys(SYMBOLS, 32768)
    assert not s.duplicated(["symbol", "timestamp"]).any()


def test_equities_trade_the_new_york_session_and_crypto_trades_every_day(
    planted: dict[str, pd.DataFrame],
) -> None:
    bars = _by_symbol(planted)
    spy = pd.DatetimeIndex(bars["SPY"]["timestamp"]).tz_convert(NY)
    minutes = spy.hour * 60 + spy.minute
    assert (spy.weekday < 5).all()
    assert minutes.min() == 9 * 60 + 30 and minutes.max() == 15 * 60 + 45
    days = pd.Series(spy.date)
    assert days.value_counts().iloc[1:-1].eq(26).all()  # full sessions of 15-minute bars
    for holiday in ("2019-07-04", "2019-12-25", "2020-04-10", "2022-06-20", "2023-11-23"):
        assert pd.Timestamp(holiday).date() not in set(days)
    utc = pd.DatetimeIndex(bars["SPY"]["timestamp"])
    # 09:30 New York is 14:30 UTC in winter and 13:30 UTC in summer.
    assert utc[0] == pd.Timestamp("2019-01-02 14:30", tz="UTC")
    assert pd.Timestamp("2019-07-01 13:30", tz="UTC") in utc
    btc = pd.DatetimeIndex(bars["BTC-USD"]["timestamp"])
    assert (btc.weekday >= 5).any()
    assert (np.diff(btc.asi8) == pd.Timedelta("15min").value).all()
    assert btc[0] == pd.Timestamp("2019-01-01", tz="UTC")


def test_daily_frequency_uses_business_days_for_equities_and_every_day_for_crypto() -> None:
    tables = generate_fixture(["AAPL", "BTC-USD"], 300, "1D", 0, 1, start="2021-01-01")
    bars = _by_symbol(tables)
    aapl = pd.DatetimeIndex(bars["AAPL"]["timestamp"])
    btc = pd.DatetimeIndex(bars["BTC-USD"]["timestamp"])
    assert aapl[0] == pd.Timestamp("2021-01-04", tz="UTC")  # Jan 1 is a holiday, then a weekend
    assert (aapl.weekday < 5).all() and (aapl == aapl.normalize()).all()
    assert pd.Timestamp("2021-01-18", tz="UTC") not in aapl  # Martin Luther King Jr. Day
    assert (np.diff(btc) == pd.Timedelta("1D")).all()


def test_intraday_equity_volume_is_u_shaped(planted: dict[str, pd.DataFrame]) -> None:
    spy = _by_symbol(planted)["SPY"]
    local = pd.DatetimeIndex(spy["timestamp"]).tz_convert(NY)
    by_slot = spy["volume"].groupby(local.hour * 60 + local.minute).median()
    midday = by_slot.loc[11 * 60 : 14 * 60].median()
    assert by_slot.iloc[0] > 2.0 * midday
    assert by_slot.iloc[-1] > 1.5 * midday


# --------------------------------------------------------------------------------------
# Stylised facts
# --------------------------------------------------------------------------------------


def _autocorr(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_returns_have_fat_tails_and_volatility_clustering_but_no_autocorrelation(
    planted: dict[str, pd.DataFrame], symbol: str
) -> None:
    close = _by_symbol(planted)[symbol]["close"].to_numpy()
    r = np.diff(np.log(close))
    assert stats.kurtosis(r, fisher=False) > 3.0 + 2.0
    assert _autocorr(np.abs(r)) > 0.03
    assert abs(_autocorr(r)) < 0.02  # 3.6 standard errors at n = 32767


def test_symbols_of_one_class_are_positively_correlated(
    planted: dict[str, pd.DataFrame],
) -> None:
    corr = _wide(planted).pct_change(fill_method=None).corr()
    for group in (EQUITIES, CRYPTO):
        pairs = corr.loc[group, group].to_numpy()[np.triu_indices(len(group), 1)]
        assert (pairs > 0.4).all(), pairs


def test_corporate_actions_split_once_and_pay_quarterly_dividends(
    planted: dict[str, pd.DataFrame],
) -> None:
    actions = planted["corporate_actions"]
    assert set(actions["symbol"]) == set(EQUITIES)
    splits = actions[actions["kind"] == "split"]
    assert splits.groupby("symbol").size().to_dict() == dict.fromkeys(EQUITIES, 1)
    assert set(splits["value"]) <= {2.0, 3.0, 4.0}
    spy = _by_symbol(planted)["SPY"]
    starts = pd.DatetimeIndex(spy["timestamp"]).tz_convert(NY)
    first_bars = set(spy["timestamp"][(starts.hour == 9) & (starts.minute == 30)])
    assert set(actions["timestamp"]) <= first_bars  # ex-dates at a session's open
    divs = actions[(actions["kind"] == "dividend") & (actions["symbol"] == "SPY")]
    session = {t: i for i, t in enumerate(sorted(first_bars))}
    gaps = np.diff([session[t] for t in divs["timestamp"]])
    assert len(divs) == 20 and (gaps == 63).all()  # quarterly over five years
    # Prices are adjusted: no jump on the split bar beyond ordinary moves.
    split_at = spy.index[spy["timestamp"] == splits[splits["symbol"] == "SPY"]["timestamp"].iloc[0]]
    r = np.log(spy["close"]).diff()
    assert abs(r.iloc[split_at[0]]) < 8 * r.std()
    # SPY pays ~1.5 % a year: a quarter's cash over the adjusted close is within (0.1 %, 2 %)
    # (adjusted prices before the split are the raw price divided by the ratio).
    prev = spy["close"].to_numpy()[np.searchsorted(spy["timestamp"], divs["timestamp"]) - 1]
    ratio = np.where(divs["timestamp"] < splits[splits["symbol"] == "SPY"]["timestamp"].iloc[0],
                     splits[splits["symbol"] == "SPY"]["value"].iloc[0], 1.0)  # fmt: skip
    assert ((divs["value"] / (prev * ratio)).between(0.001, 0.02)).all()


def test_equal_weight_benchmark_matches_a_hand_computed_index(
    planted: dict[str, pd.DataFrame],
) -> None:
    bench = planted["benchmarks"]
    crypto = bench[bench["name"] == "equal_weight_crypto"].set_index("timestamp")["value"]
    r = _wide(planted)[CRYPTO].dropna().pct_change().fillna(0.0)
    expected = 100.0 * np.cumprod(1.0 + r.mean(axis=1).to_numpy())
    np.testing.assert_allclose(crypto.to_numpy(), expected, rtol=1e-10)
    overall = bench[bench["name"] == "equal_weight"]
    assert overall["value"].iloc[0] == 100.0
    assert len(overall) == planted["series"]["timestamp"].nunique()


# --------------------------------------------------------------------------------------
# Planted signal and the absence of one
# --------------------------------------------------------------------------------------


def _ic(tables: dict[str, pd.DataFrame], column: str, source: str = "alt_sentiment") -> float:
    """Mean over symbols of the Spearman IC of ``column`` at t with the t → t+1 return."""
    side = tables[source] if source != "series" else tables["series"]
    ics = []
    for symbol, bars in _by_symbol(tables).items():
        rows = side[side["symbol"] == symbol].set_index("timestamp")[column]
        x = rows.reindex(bars["timestamp"]).to_numpy()
        y = _next_return(bars)
        ok = np.isfinite(x) & np.isfinite(y)
        ics.append(stats.spearmanr(x[ok], y[ok])[0])
    return float(np.mean(ics))


def test_planted_signal_is_recovered(planted: dict[str, pd.DataFrame]) -> None:
    assert 0.07 <= _ic(planted, "sentiment_score") <= 0.13
    # Pearson IC, pooled over symbols, of the score with the next return scaled by each
    # symbol's realised volatility.
    pearson = []
    for symbol, bars in _by_symbol(planted).items():
        side = planted["alt_sentiment"]
        score = side[side["symbol"] == symbol]["sentiment_score"].to_numpy()
        y = _next_return(bars)
        pearson.append(np.corrcoef(score[:-1], y[:-1])[0, 1])
    assert 0.07 <= float(np.mean(pearson)) <= 0.13


def test_without_a_planted_signal_nothing_predicts_the_next_return(
    unplanted: dict[str, pd.DataFrame],
) -> None:
    assert "planted_signal" not in fixture_metadata(SYMBOLS, 32768, "15min", 4, 11)
    assert abs(_ic(unplanted, "sentiment_score")) < 0.015
    assert abs(_ic(unplanted, "news_volume")) < 0.015
    for column in ("open", "volume"):
        assert abs(_ic(unplanted, column, source="series")) < 0.015, column
    # The bar's own return is no guide to the next one either.
    series = unplanted["series"].assign(
        own=lambda f: f.groupby("symbol")["close"].pct_change().fillna(0.0)
    )
    assert abs(_ic({**unplanted, "series": series}, "own", source="series")) < 0.015


def test_sentiment_is_stored_at_the_bar_it_is_known() -> None:
    tables = generate_fixture(["SPY", "ETH-USD"], 400, "15min", 1, 2, planted_signal=0.3)
    assert set(tables) >= {"alt_macro", "alt_sentiment"} and "alt_funding" not in tables
    for symbol, bars in _by_symbol(tables).items():
        side = tables["alt_sentiment"]
        stamps = side[side["symbol"] == symbol]["timestamp"].to_numpy()
        np.testing.assert_array_equal(stamps, bars["timestamp"].to_numpy())


# --------------------------------------------------------------------------------------
# Side tables and metadata
# --------------------------------------------------------------------------------------


def test_side_tables_follow_alt_features_and_their_clocks(planted: dict[str, pd.DataFrame]) -> None:
    assert [t for t in planted if t.startswith("alt_")] == [
        "alt_macro",
        "alt_funding",
        "alt_sentiment",
        "alt_implied_vol",
    ]
    funding = planted["alt_funding"]
    assert set(funding["symbol"]) == set(CRYPTO)
    assert set(pd.DatetimeIndex(funding["timestamp"]).hour) == {0, 8, 16}
    macro = pd.DatetimeIndex(planted["alt_macro"]["timestamp"]).tz_convert(NY)
    assert (macro.hour == 8).all() and (macro.minute == 30).all() and (macro.weekday < 5).all()
    iv = planted["alt_implied_vol"]
    spy_iv = pd.DatetimeIndex(iv[iv["symbol"] == "SPY"]["timestamp"]).tz_convert(NY)
    assert (spy_iv.hour[:-1] == 16).all()  # at each session's close
    assert iv.groupby("symbol")["iv_30d"].median()["SPY"] == pytest.approx(0.17 * 1.1, rel=0.3)
    tables = generate_fixture(["AAPL", "MSFT"], 300, "1h", 5, 1)
    assert "alt_onchain" not in tables and "alt_funding" not in tables  # equities only
    crypto = generate_fixture(["BTC-USD"], 300, "1h", 5, 1)
    onchain = pd.DatetimeIndex(crypto["alt_onchain"]["timestamp"])
    assert set(onchain.hour[:-1]) == {0}  # each UTC day's end; the last day is partial


def test_metadata_holds_parameters_regime_spells_and_the_ground_truth() -> None:
    meta = fixture_metadata(["SPY", "BTC-USD"], 500, "15min", 2, 9, planted_signal=-0.25)
    assert json.loads(meta["planted_signal"]) == {
        "source": "alt_sentiment.sentiment_score",
        "target": "next_return",
        "ic": -0.25,
        "horizon": 1,
    }
    params = json.loads(meta["fixture"])
    assert params["symbols"] == ["SPY", "BTC-USD"] and params["rows"] == 500
    assert params["alt_tables"] == ["alt_macro", "alt_funding", "alt_sentiment"]
    spells = json.loads(meta["regime_truth"])
    assert spells["equity"][0] == ["2019-01-02T14:30:00Z", "bull"]
    assert {r for _, r in spells["crypto"]} <= {"bull", "bear", "high_vol"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"freq": "2W"}, "--freq"),
        ({"freq": "fortnight"}, "--freq"),
        ({"symbols": ["SPY", "SPY"]}, "--symbols"),
        ({"symbols": []}, "--symbols"),
        ({"rows": 1}, "--rows"),
        ({"alt_features": 6}, "--alt-features"),
        ({"planted_signal": 1.5}, "--planted-signal"),
        ({"start": "someday"}, "--start"),
    ],
)
def test_bad_parameters_name_the_flag(params: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"symbols": ["SPY"], "rows": 50, **params}
    with pytest.raises(ValueError, match=message):
        generate_fixture(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Writing and the CLI
# --------------------------------------------------------------------------------------


def test_write_fixture_refuses_to_overwrite_and_is_byte_identical(tmp_path) -> None:
    args = {"symbols": ["SPY", "BTC-USD"], "rows": 300, "alt_features": 5, "seed": 3}
    a = write_fixture(tmp_path / "a.db", **args, planted_signal=0.1)
    b = write_fixture(tmp_path / "b.db", **args, planted_signal=0.1)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(StoreError, match="already exists"):
        write_fixture(a, **args)
    write_fixture(a, **args, overwrite=True)
    assert "planted_signal" not in read_metadata(a)


def test_cli_writes_a_database_that_passes_strict_validation(tmp_path) -> None:
    from market_nn_plus_ultra.data.validation import validate_database

    out = tmp_path / "fixture.db"
    command = ["data", "fixture", str(out), "--symbols", "SPY", "QQQ", "IWM", "BTC-USD",
               "ETH-USD", "--rows", "600", "--freq", "15min", "--alt-features", "4",
               "--seed", "7", "--planted-signal", "0.1"]  # fmt: skip
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "fixture database" in result.output
    report = validate_database(out)
    assert report.ok, report.failures
    assert read_table(out, "assets")["symbol"].tolist() == SYMBOLS
    assert json.loads(read_metadata(out)["planted_signal"])["ic"] == 0.1
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 2 and "already exists" in again.output
    comma = ["data", "fixture", str(out), "--symbols", "SPY,BTC-USD", "--rows", "200",
             "--alt-features", "5", "--overwrite"]  # fmt: skip
    assert CliRunner().invoke(app, comma).exit_code == 0
    assert read_table(out, "assets")["symbol"].tolist() == ["SPY", "BTC-USD"]
    with contextlib.closing(connect(out)) as con:
        assert "alt_onchain" in list_tables(con)


def test_cli_reports_bad_options_without_a_traceback(tmp_path) -> None:
    result = CliRunner().invoke(app, ["data", "fixture", str(tmp_path / "x.db"), "--freq", "2W"])
    assert result.exit_code == 2
    assert "--freq" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.db").exists()


@pytest.mark.slow
def test_full_size_command_finishes_within_a_minute(tmp_path) -> None:
    command = ["data", "fixture", str(tmp_path / "full.db"), "--symbols", *SYMBOLS,
               "--rows", "32768", "--freq", "15min", "--alt-features", "4", "--seed", "7",
               "--planted-signal", "0.1"]  # fmt: skip
    began = time.perf_counter()
    result = CliRunner().invoke(app, command)
    elapsed = time.perf_counter() - began
    assert result.exit_code == 0, result.output
    assert elapsed < 60.0, f"{elapsed:.1f}s"
