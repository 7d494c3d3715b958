"""Stored-data leakage check: planted leaks in a fixture database are named; clean data passes."""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from market_nn_plus_ultra.data import alternative
from market_nn_plus_ultra.data.alternative import AlternativeDataConnector
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.evaluation.leakage_stats import copy_count, pooled_ic, rank_anova
from market_nn_plus_ultra.evaluation.leakage_stored import (
    StoredThresholds,
    _findings,
    audit_stored,
)
from tests.data.asof_reference import merge_asof_join

SYMBOLS = ["SPY", "QQQ", "BTC-USD"]
PLANTED_IC = 0.3  # the strongest planted signal the docs use; a causal signal, not a leak


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("stored") / "clean.db"
    return write_fixture(
        path, SYMBOLS, rows=400, freq="1D", alt_features=3, seed=11, planted_signal=PLANTED_IC
    )


@pytest.fixture
def db(clean_db, tmp_path):
    """A fresh copy of the clean database for one test to edit."""
    path = tmp_path / "edited.db"
    with contextlib.closing(sqlite3.connect(clean_db)) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    return path


def _bars(db) -> pd.DataFrame:
    """series rows with the next simple return (t→t+1) and the bar's own return."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        bars = pd.read_sql("SELECT timestamp, symbol, close FROM series", con)
    bars = bars.sort_values(["symbol", "timestamp"], ignore_index=True)
    by = bars.groupby("symbol")["close"]
    return bars.assign(ahead=by.shift(-1) / bars["close"] - 1, now=bars["close"] / by.shift(1) - 1)


def _leaky_rows(bars: pd.DataFrame, share: float = 0.3, seed: int = 0) -> np.ndarray:
    """A seeded 30% of the bars that have a next return."""
    return (np.random.default_rng(seed).random(len(bars)) < share) & bars["ahead"].notna()


def _insert_indicator(db, name: str, frame: pd.DataFrame) -> None:
    rows = [
        (t, s, name, float(v))
        for t, s, v in frame[["timestamp", "symbol", "v"]].itertuples(index=False)
    ]
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.executemany("INSERT INTO indicators VALUES (?, ?, ?, ?)", rows)


def _audit(db, **limits):
    panel = read_panel(db, cache=False)
    connector = AlternativeDataConnector()
    return audit_stored(db, panel, (connector, connector.load(db)), StoredThresholds(**limits))


def _finding(report, table: str, column: str) -> pd.Series:
    found = report.findings.set_index(["table", "column"])
    assert (table, column) in found.index, report.findings
    return found.loc[(table, column)]


# --------------------------------------------------------------------------------------
# The statistics against independent references
# --------------------------------------------------------------------------------------


def test_pooled_ic_is_the_size_weighted_mean_of_per_symbol_spearman():
    rng = np.random.default_rng(1)
    codes = np.repeat([0, 1], [300, 100])
    y = rng.normal(size=400)
    x = 0.5 * y + rng.normal(size=400)
    x[5] = np.nan  # left out
    got = pooled_ic(x, y, codes)
    a = stats.spearmanr(x[:300], y[:300], nan_policy="omit").statistic
    b = stats.spearmanr(x[300:], y[300:]).statistic
    assert got.n == 399
    assert got.ic == pytest.approx((299 * a + 100 * b) / 399, abs=1e-12)
    assert got.z == pytest.approx(got.ic * np.sqrt(399))


def test_rank_anova_matches_kruskal_wallis():
    rng = np.random.default_rng(2)
    labels = rng.choice(np.array(["low", "mid", "high"], dtype=object), 200)
    y = rng.normal(size=200) + (labels == "high")
    got = rank_anova(labels, y, np.zeros(200, dtype=int))
    ref = stats.kruskal(*(y[labels == k] for k in ("low", "mid", "high")))
    h = got.ic**2 * 199  # effect size sqrt(H / (n - 1))
    assert h == pytest.approx(ref.statistic, rel=1e-9)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-6)


def test_copy_count_finds_the_scale_and_the_copied_rows():
    rng = np.random.default_rng(3)
    ahead, behind = rng.normal(0, 0.01, 1000), rng.normal(0, 0.01, 1000)
    x = rng.normal(50, 10, 1000)
    x[:120] = 100 * ahead[:120]  # a return in percent on 120 rows
    got = copy_count(x, ahead, behind)
    assert (got.copies, got.placebo, got.n) == (120, 0, 1000)
    assert got.scale == pytest.approx(100, rel=1e-5)
    assert got.p_value == pytest.approx(0.5**120)
    clean = copy_count(rng.normal(size=1000), ahead, behind)
    assert clean.copies < 5


# --------------------------------------------------------------------------------------
# The database check
# --------------------------------------------------------------------------------------


def test_clean_fixture_with_planted_causal_signal_passes(clean_db):
    report = _audit(clean_db)
    assert report.findings.empty, report.findings
    assert set(report.checked["alternative"]) >= {"sentiment_score", "macro_rate_10y"}
    planted = report.stats.set_index("column").loc["sentiment_score"]
    # The planted signal is found at its true size, and under the 0.5 ceiling of a signal.
    assert planted["ic_next"] == pytest.approx(PLANTED_IC, abs=0.06)
    assert abs(planted["ic_lagged"]) < 0.1


def test_indicator_equal_to_next_return_is_named(db):
    bars = _bars(db).dropna(subset=["ahead"])
    _insert_indicator(db, "next_return", bars.assign(v=bars["ahead"]))
    report = _audit(db)
    found = _finding(report, "indicators", "next_return")
    assert found["check"] == "copy"
    assert found["statistic"] == len(bars)  # every row is a copy
    assert f"{len(bars):,} of {len(bars):,} rows (100%)" in found["evidence"]
    assert "DELETE FROM indicators WHERE name = 'next_return'" in found["fix"]
    ic = report.stats.set_index("column").loc["next_return"]
    assert ic["ic_next"] == pytest.approx(1.0)  # a monotone copy: rank IC exactly 1
    assert len(report.findings) == 1


def test_next_log_return_on_30_percent_of_rows_is_named(db):
    bars = _bars(db)
    leak = _leaky_rows(bars)
    values = np.where(leak, np.log1p(bars["ahead"]), np.log1p(bars["now"]))
    _insert_indicator(db, "log_return_stored", bars.assign(v=values).dropna(subset=["v"]))
    report = _audit(db)
    found = _finding(report, "indicators", "log_return_stored")
    assert found["check"] == "copy"
    assert found["statistic"] == leak.sum()
    assert "the next log return" in found["evidence"]
    # The rest of the column is a causal log return: its IC alone is no proof.
    assert report.stats.set_index("column").loc["log_return_stored", "ic_next"] < 0.5


def test_alt_column_replaced_by_next_return_on_30_percent_of_rows_is_named(db):
    bars = _bars(db)
    leak = bars[_leaky_rows(bars, seed=1)]
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.executemany(
            "UPDATE alt_sentiment SET news_volume = ? WHERE timestamp = ? AND symbol = ?",
            list(leak[["ahead", "timestamp", "symbol"]].itertuples(index=False, name=None)),
        )
    report = _audit(db)
    found = _finding(report, "alt_sentiment", "sentiment_news_volume")
    assert (found["check"], found["statistic"]) == ("copy", len(leak))
    assert "data.alternative_data" in found["fix"]
    assert report.findings["column"].tolist() == ["sentiment_news_volume"]


def test_noisy_function_of_the_next_return_is_caught_by_the_ic(db):
    bars = _bars(db).dropna(subset=["ahead"])
    noise = np.random.default_rng(4).normal(0, bars["ahead"].std() * 0.5, len(bars))
    _insert_indicator(db, "noisy_future", bars.assign(v=bars["ahead"] + noise))
    report = _audit(db)
    found = _finding(report, "indicators", "noisy_future")
    assert found["check"] == "ic"
    assert found["statistic"] > 0.6  # fat-tailed returns: below the Pearson 1/sqrt(1.25)
    assert "collapses" in found["evidence"]


def test_a_strong_persistent_signal_does_not_collapse():
    # |IC| 0.6 at lag 0 and 0.55 at lag 1: a (hypothetical) slow signal, not a leak.
    row = dict(table="indicators", column="slow", n=5000, ic_next=0.6, z_next=42.0)
    row.update(ic_lagged=0.55, ic_now=0.0, ic_change=0.0, z_change=0.0, ic_change_lagged=0.0)
    row.update(copies=0, copy_p=1.0)
    assert _findings(pd.DataFrame([row]), StoredThresholds()) == []
    row["ic_lagged"] = 0.05
    assert [f["check"] for f in _findings(pd.DataFrame([row]), StoredThresholds())] == ["ic"]


def test_regime_label_of_the_next_move_is_named(db):
    bars = _bars(db).dropna(subset=["ahead"])
    labels = np.where(bars["ahead"] > 0, "bull", "bear")
    causal = np.where(bars["now"].fillna(0) > 0, "bull", "bear")  # today's move: no leak
    rows = [
        (t, s, "next_move", v) for t, s, v in zip(bars.timestamp, bars.symbol, labels, strict=True)
    ]
    rows += [
        (t, s, "today", v) for t, s, v in zip(bars.timestamp, bars.symbol, causal, strict=True)
    ]
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.executemany("INSERT INTO regimes VALUES (?, ?, ?, ?)", rows)
    report = _audit(db)
    found = _finding(report, "regimes", "next_move")
    assert found["check"] == "ic" and found["statistic"] > 0.8
    assert "--regime-labels" in found["fix"]
    assert report.checked["regimes"] == ["next_move", "today"]
    assert list(report.findings["column"]) == ["next_move"]


def test_cross_asset_view_holding_the_next_return_is_named(db):
    bars = _bars(db).dropna(subset=["ahead"])
    rows = [
        ("context", t, s, "ret_next", v)
        for t, s, v in zip(bars.timestamp, bars.symbol, bars.ahead, strict=True)
    ]
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.executemany("INSERT INTO cross_asset_views VALUES (?, ?, ?, ?, ?)", rows)
    report = _audit(db)
    assert _finding(report, "cross_asset_views", "context.ret_next")["check"] == "copy"


def test_alt_rows_known_after_the_bar_they_join_are_named(db):
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("ALTER TABLE alt_sentiment ADD COLUMN known_at TEXT")
        con.execute("UPDATE alt_sentiment SET known_at = timestamp")
        # Ten SPY rows were published a day after the stamp they carry.
        con.execute(
            "UPDATE alt_sentiment SET known_at = strftime('%Y-%m-%dT%H:%M:%SZ', timestamp, "
            "'+1 day') WHERE symbol = 'SPY' AND timestamp IN (SELECT timestamp FROM "
            "alt_sentiment WHERE symbol = 'SPY' ORDER BY timestamp LIMIT 10 OFFSET 100)"
        )
    report = _audit(db)
    found = _finding(report, "alt_sentiment", "known_at")
    assert (found["check"], found["n"]) == ("known_at", 10)
    assert "known (known_at) after the bar" in found["evidence"]


def test_forward_join_is_caught_by_the_stamp_check(db, monkeypatch):
    def forward(keys, side, columns):
        return merge_asof_join(keys, side, columns, direction="forward")

    monkeypatch.setattr(alternative, "_asof", forward)
    report = _audit(db)
    stamps = report.findings[report.findings["check"] == "timestamp"]
    # Macro rows are stamped at 08:30 New York, between daily bars: a forward join reads
    # the next one. Sentiment is stamped at each bar, where both directions agree.
    assert stamps["table"].tolist() == ["alt_macro"]
    assert stamps["n"].iloc[0] > 100
