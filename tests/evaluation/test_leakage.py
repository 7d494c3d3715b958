"""Leakage audit: clean on causal data, names the column when something looks ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.audit import audit
from market_nn_plus_ultra.config import DataConfig, FeaturesConfig, RegimeConfig
from market_nn_plus_ultra.data import alternative
from market_nn_plus_ultra.data.alternative import AlternativeDataConnector
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.data.store import write_database
from market_nn_plus_ultra.evaluation import leakage
from market_nn_plus_ultra.evaluation.leakage import audit_leakage, audit_panel, check_targets
from market_nn_plus_ultra.evaluation.leakage_report import AuditPower, choose_cuts, cuts_for_power
from market_nn_plus_ultra.features import REGISTRY
from market_nn_plus_ultra.features.pipeline import FeaturePipeline
from market_nn_plus_ultra.windows import MarketTensors
from tests.data.asof_reference import merge_asof_join

SECTORS = {"SPY": "index", "XLK": "tech", "BTC-USD": "crypto"}


def _market_db(path, n_days: int = 300, seed: int = 0):
    """Equities on weekdays, crypto every day, sentiment per bar, macro per business day."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2022-01-03 21:00", periods=n_days, freq="D", tz="UTC")
    series, sentiment = [], []
    for symbol in SECTORS:
        stamps = days if symbol == "BTC-USD" else days[days.day_of_week < 5]
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(stamps))))
        spread = close * rng.uniform(0.001, 0.01, len(stamps))
        series.append(
            pd.DataFrame(
                {
                    "timestamp": stamps,
                    "symbol": symbol,
                    "open": close,
                    "high": close + spread,
                    "low": close - spread,
                    "close": close,
                    "volume": rng.uniform(1e5, 2e5, len(stamps)),
                }
            )
        )
        sentiment.append(
            pd.DataFrame(
                {
                    "timestamp": stamps,
                    "symbol": symbol,
                    "sentiment_score": rng.normal(size=len(stamps)),
                    "news_volume": rng.poisson(5, len(stamps)).astype(float),
                }
            )
        )
    business = days[days.day_of_week < 5] - pd.Timedelta(hours=8)
    macro = pd.DataFrame(
        {
            "timestamp": business,
            "rate_10y": 3 + rng.normal(0, 0.01, len(business)).cumsum(),
            "cpi_surprise": 0.0,
            "event_flag": 0.0,
        }
    )
    assets = pd.DataFrame(
        {"asset_id": [1, 2, 3], "symbol": list(SECTORS), "sector": list(SECTORS.values())}
    )
    tables = {
        "series": pd.concat(series),
        "assets": assets,
        "alt_sentiment": pd.concat(sentiment),
        "alt_macro": macro,
    }
    return write_database(path, tables)


def _centred_mean_5(close: np.ndarray) -> np.ndarray:
    """Looks two bars ahead: a centred rolling mean."""
    return pd.Series(close).rolling(5, center=True).mean().to_numpy()


def _full_sample_z(close: np.ndarray) -> np.ndarray:
    """Looks at the whole history: a full-sample z-score."""
    return (close - close.mean()) / close.std()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return _market_db(tmp_path_factory.mktemp("audit") / "market.db")


def _data(db, **extra) -> DataConfig:
    regimes = RegimeConfig(min_history=40, vol_window=10, liquidity_window=10, sector_window=5)
    return DataConfig(sqlite_path=db, cache=False, regimes=regimes, **extra)


def test_clean_database_passes(db):
    cfg = _data(db, cross_asset={"columns": ["SPY:close"], "min_overlap": 0.5})
    features = FeaturesConfig(names=["rsi_14", "log_return_1", "alt_sentiment_score"])
    report = audit_leakage(cfg, features, window=16, horizon=3, cuts=3, seed=1)
    assert report.ok, report.leaks
    assert len(report.cuts) == 3
    assert set(report.checked["feature"]) == {"rsi_14", "log_return_1", "alt_sentiment_score"}
    assert set(report.checked["regime"]) == {"volatility", "liquidity", "sector_rotation"}
    assert report.checked["cross_asset"] == ["spy_close"]
    assert {"sentiment_score", "macro_rate_10y"} <= set(report.checked["alternative"])
    assert "no look-ahead" in report.summary()


def test_leaky_custom_features_are_named(db):
    registry = REGISTRY.copy()
    registry.register("centred_mean_5", inputs=("close",), warmup=0, tags=("custom",))(
        _centred_mean_5
    )
    registry.register("full_sample_z", inputs=("close",), warmup=0, tags=("custom",))(
        _full_sample_z
    )
    features = FeaturesConfig(names=["rsi_14", "centred_mean_5", "full_sample_z"])
    report = audit_leakage(
        _data(db, alternative_data=[]), features, registry=registry, window=8, horizon=1, cuts=2
    )
    assert not report.ok
    assert set(report.leaking_columns) == {"centred_mean_5", "full_sample_z"}
    leaks = report.leaks.set_index(["column", "symbol"])
    stamps = read_panel(db, cache=False).xs("SPY", level="symbol").index
    assert set(report.leaks["cut"]) <= set(report.cuts)  # each leak's earliest exposing cut
    # The centred mean first changes two SPY bars before the cut that exposed it.
    row = leaks.loc[("centred_mean_5", "SPY")]
    cut_pos = stamps.searchsorted(row["cut"], side="right") - 1
    assert row["first_timestamp"] == stamps[cut_pos - 1]
    assert row["n_changed"] == 2
    # The full-sample z-score changes from the very first bar.
    assert leaks.loc[("full_sample_z", "SPY"), "first_timestamp"] == stamps[0]


def test_alternative_join_leak_is_caught(db, monkeypatch):
    # A forward as-of join (the next observation) is exactly the bug the audit must see.
    def forward(keys, side, columns):
        return merge_asof_join(keys, side, columns, direction="forward")

    panel = read_panel(db, cache=False)
    connector = AlternativeDataConnector()
    frames = connector.load(db)
    monkeypatch.setattr(alternative, "_asof", forward)
    report = audit_panel(panel, alternative=(connector, frames), window=4, horizon=1, cuts=2)
    # Macro rows are stamped between bars, so a forward join reads the next release;
    # sentiment is stamped exactly at each bar, where both directions agree.
    assert set(report.leaking_columns) == {
        "macro_rate_10y",
        "macro_cpi_surprise",
        "macro_event_flag",
    }
    assert set(report.leaks["kind"]) == {"alternative"}


def test_targets_checked_against_forward_returns(db, monkeypatch):
    panel = read_panel(db, cache=False)
    assert check_targets(panel, window=10, horizon=4).empty
    # Equities skip weekends that crypto trades: "own" windows read each symbol's bars.
    assert check_targets(panel, window=10, horizon=4, target="log_return", calendar="own").empty

    build = MarketTensors.from_panel

    def backward(*args, **kwargs):
        tensors = build(*args, **kwargs)
        tensors.targets[:] = np.roll(tensors.targets, 1, axis=0)  # yesterday's return as target
        return tensors

    monkeypatch.setattr(leakage.MarketTensors, "from_panel", backward)
    leaks = check_targets(panel, window=10, horizon=2)
    assert {"target_h1", "target_h2"} <= set(leaks["column"])
    assert (leaks["kind"] == "target").all()


@pytest.mark.parametrize("calendar", ["union", "own"])
def test_windows_reading_the_next_bar_are_caught(db, monkeypatch, calendar):
    panel = read_panel(db, cache=False)
    reads = leakage.SlidingWindowDataset.input_rows

    def one_ahead(self, t, s):
        return reads(self, np.minimum(t + 1, len(self.tensors.timestamps) - 1), s)

    monkeypatch.setattr(leakage.SlidingWindowDataset, "input_rows", one_ahead)
    leaks = check_targets(panel, window=6, horizon=2, calendar=calendar)
    assert list(leaks["column"]) == ["window_6"]
    assert leaks["n_changed"].iloc[0] > 0


def test_cli_exit_codes(db):
    app = typer.Typer()
    app.command()(audit)
    runner = CliRunner()
    sets = ["--set", "windows.window=8", "--set", "windows.horizon=2", "--set", "data.cache=false"]
    sets += ["--set", "features.names=[rsi_14]", "--set", "data.regimes.min_history=40"]
    clean = runner.invoke(app, [str(db), "--cuts", "2", *sets])
    assert clean.exit_code == 0, clean.output
    assert "no look-ahead found" in " ".join(clean.output.split())  # rich wraps lines

    REGISTRY.register("centred_mean_5_cli", inputs=("close",), warmup=0, tags=("custom",))(
        _centred_mean_5
    )
    try:
        sets[sets.index("features.names=[rsi_14]")] = "features.names=[centred_mean_5_cli]"
        leaky = runner.invoke(app, [str(db), "--cuts", "2", "--seed", "3", *sets])
    finally:
        REGISTRY.remove("centred_mean_5_cli")
    assert leaky.exit_code == 1, leaky.output
    assert "centred_mean_5_cli" in leaky.output
    assert "LEAKS" in leaky.output


# --------------------------------------------------------------------------------------
# Power of the truncation test
# --------------------------------------------------------------------------------------


def test_default_cuts_give_95_percent_power_against_a_30_percent_peek():
    assert cuts_for_power() == 9  # ceil(log 0.05 / log 0.7) = ceil(8.40)
    assert cuts_for_power(0.99, 0.3) == 13  # ceil(log 0.01 / log 0.7) = ceil(12.91)
    power = AuditPower(cuts=9, tested_bars=9)
    assert power.miss == pytest.approx(0.7**9)  # 0.0404
    assert power.power == pytest.approx(0.9596, abs=1e-4)
    assert "1 - (1 - 0.3)^9 = 96.0%" in power.describe()
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        cuts_for_power(1.0, 0.3)


def test_cuts_test_a_new_bar_of_every_symbol(db):
    # Crypto trades at weekends, equities do not: two weekend cuts would test the same
    # Friday of SPY. Each cut must test a bar not tested before, for every symbol.
    panel = read_panel(db, cache=False)
    for seed in range(5):
        cuts, tested = choose_cuts(panel.index, 9, seed)
        assert len(cuts) == 9 and tested == 9
        for symbol in SECTORS:
            own = panel.xs(symbol, level="symbol").index
            assert len(set(own.searchsorted(pd.DatetimeIndex(cuts), side="right"))) == 9


def _peek_30(seed: int):
    """A feature that reads the next close on a seeded 30% of bars."""

    def peek(close: np.ndarray) -> np.ndarray:
        ahead = pd.Series(close).shift(-1).to_numpy()
        peeks = np.random.default_rng(seed).random(len(close)) < 0.3  # prefix-stable draw
        return np.where(peeks & np.isfinite(ahead), ahead, close)

    return peek


def test_one_bar_peek_on_30_percent_of_bars_is_caught_reliably(db):
    # One symbol, so each cut tests exactly one bar: the audit catches the peek exactly
    # when a tested bar is a peeking one, so P(miss) = 0.7^k (k tested bars).
    panel = read_panel(db, cache=False).xs("SPY", level="symbol", drop_level=False)
    stamps = panel.index.get_level_values("timestamp")
    missed = {5: 0, None: 0}
    for seed in range(40):
        registry = REGISTRY.copy()
        registry.register("peek_30", inputs=("close",), warmup=0, tags=("custom",))(_peek_30(seed))
        pipeline = FeaturePipeline.from_config(FeaturesConfig(names=["peek_30"]), registry)
        peeks = np.random.default_rng(seed).random(len(panel)) < 0.3
        for cuts in missed:
            report = audit_panel(
                panel, pipeline=pipeline, window=4, horizon=1, cuts=cuts, seed=seed
            )
            tested = stamps.searchsorted(pd.DatetimeIndex(report.cuts), side="right") - 1
            assert report.power.tested_bars == len(set(tested)) == (cuts or 9)
            assert report.ok == (not peeks[tested].any())  # caught iff a tested bar peeks
            missed[cuts] += report.ok
    # Over 200 seeds: 36 misses with the old 5 cuts (0.7^5 = 16.8%), 6 with the default 9
    # (0.7^9 = 4.0%). These 40 seeds: 6 and 2; a binomial(40, 0.04) count above 4 has
    # probability 2%, one above 4 of binomial(40, 0.168) has 76%.
    assert missed[None] <= 4 < missed[5]
