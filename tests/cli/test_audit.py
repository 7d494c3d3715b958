"""``plus-ultra audit`` through the real entry point, on a synthetic fixture database."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli import _plugins
from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data import regimes as regimes_module
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.features import REGISTRY

SYMBOLS = ["SPY", "QQQ", "BTC-USD"]
# Small windows keep the run fast; the views and labels are those `data build` writes.
SETTINGS = [
    "data.cache=false",
    "windows.window=16",
    "windows.horizon=3",
    "features.names=[rsi_14,macd,realised_vol_20,log_return_1,alt_sentiment_score]",
    "data.regimes.min_history=40",
    "data.cross_asset.columns=[SPY:close]",
]

LEAKY_PLUGIN = '''
import numpy as np
import pandas as pd

from market_nn_plus_ultra.features import register


@register(inputs=("close",), warmup=4, tags=("custom",), default=False)
def centred_mean_5(close):
    """Centred rolling mean: reads the next two bars."""
    return pd.Series(close).rolling(5, center=True).mean().to_numpy()


@register(inputs=("close",), warmup=0, tags=("custom",), default=False)
def full_sample_z(close):
    """Z-score with the mean and deviation of the whole sample."""
    return (close - close.mean()) / close.std()
'''


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "market.db"
    return write_fixture(path, SYMBOLS, rows=500, freq="1D", alt_features=3, seed=11)


def _invoke(db, *extra: str):
    args = ["audit", str(db), "--cuts", "3", "--seed", "2"]
    for setting in SETTINGS:
        args += ["--set", setting]
    result = CliRunner().invoke(app, [*args, *extra])
    result.text = " ".join(result.output.split())  # rich wraps lines at the terminal width
    return result


@pytest.fixture
def leaky_plugin(tmp_path):
    path = tmp_path / "leaky_features.py"
    path.write_text(LEAKY_PLUGIN)
    yield path
    for name in ("centred_mean_5", "full_sample_z"):
        if name in REGISTRY:
            REGISTRY.remove(name)
    _plugins._LOADED.pop(str(path), None)


def test_fixture_database_is_clean(db):
    result = _invoke(db)
    assert result.exit_code == 0, result.output
    assert result.text.endswith("no look-ahead found")
    # 7 feature columns (macd has three), 3 regime labels, 1 cross-asset column and the
    # 6 joined columns of the 3 side tables the fixture wrote (macro, funding, sentiment).
    assert "Checked: 6 alternative, 7 feature, 3 regime, 1 cross_asset" in result.text
    assert "Stored inputs tested against the next return: 6 alternative" in result.text
    assert "caught with probability 1 - (1 - 0.3)^3 = 65.7% (3 tested bars" in result.text


def test_leaky_plugin_features_are_named(db, leaky_plugin):
    result = _invoke(db, "--plugin", str(leaky_plugin))
    assert result.exit_code == 1, result.output
    assert "plugin features: centred_mean_5, full_sample_z" in result.text
    assert "Look-ahead leaks" in result.text
    # Only the two leaky features are named; the clean selection beside them passes.
    assert result.text.endswith("LEAKS in centred_mean_5, full_sample_z")


def test_full_sample_regime_quantiles_are_caught(db, monkeypatch):
    def full_sample(measure, bands, labels, *, window=None, min_history=60):
        """Bands from each symbol's WHOLE history: the future moves today's label."""
        thresholds = measure.groupby(level="symbol").transform(lambda s: s.quantile(bands[0]))
        band = (measure > thresholds).astype(int).to_numpy()
        text = np.asarray(labels, dtype=object)[band]
        return pd.Series(np.where(measure.notna(), text, None), index=measure.index)

    monkeypatch.setattr(regimes_module, "label_by_quantiles", full_sample)
    result = _invoke(db, "--set", "data.regimes.bands=[0.5]")
    assert result.exit_code == 1, result.output
    assert result.text.endswith("LEAKS in liquidity, sector_rotation, volatility")


def test_unknown_plugin_is_a_clean_error(db, tmp_path):
    missing = _invoke(db, "--plugin", "no_such_plugin_module")
    assert missing.exit_code == 2
    assert "no module named 'no_such_plugin_module'" in missing.text
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad plugin')\n")
    failed = _invoke(db, "--plugin", str(broken))
    assert failed.exit_code == 2
    assert "failed to import: RuntimeError: bad plugin" in failed.text


# --------------------------------------------------------------------------------------
# Stored data: three planted leaks, each named with its evidence and fix
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory):
    """A fixture with a planted, causal signal (IC 0.3 in alt_sentiment.sentiment_score)."""
    path = tmp_path_factory.mktemp("audit_stored") / "planted.db"
    return write_fixture(
        path, SYMBOLS, rows=300, freq="1D", alt_features=3, seed=5, planted_signal=0.3
    )


def _plant_leaks(db) -> dict[str, int]:
    """(a) an indicator equal to the next return, (b) the next log return on 30% of an
    indicator's rows (the bar's own log return elsewhere), (c) alt_sentiment.news_volume
    replaced by the next return on 30% of rows. Returns the planted row counts."""
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        bars = pd.read_sql("SELECT timestamp, symbol, close FROM series", con)
        bars = bars.sort_values(["symbol", "timestamp"], ignore_index=True)
        by = bars.groupby("symbol")["close"]
        ahead, now = by.shift(-1) / bars["close"] - 1, bars["close"] / by.shift(1) - 1
        rng = np.random.default_rng(0)
        keys = list(zip(bars["timestamp"], bars["symbol"], strict=True))
        has = ahead.notna().to_numpy()
        rows = [
            (t, s, "next_return", a) for (t, s), a, ok in zip(keys, ahead, has, strict=True) if ok
        ]
        b = (rng.random(len(bars)) < 0.3) & has
        value = np.where(b, np.log1p(ahead), np.log1p(now))
        rows += [
            (t, s, "log_ret", v) for (t, s), v in zip(keys, value, strict=True) if np.isfinite(v)
        ]
        con.executemany("INSERT INTO indicators VALUES (?, ?, ?, ?)", rows)
        c = (rng.random(len(bars)) < 0.3) & has
        con.executemany(
            "UPDATE alt_sentiment SET news_volume = ? WHERE timestamp = ? AND symbol = ?",
            [(a, t, s) for (t, s), a, hit in zip(keys, ahead, c, strict=True) if hit],
        )
    return {"next_return": int(has.sum()), "log_ret": int(b.sum()), "news_volume": int(c.sum())}


def test_planted_causal_signal_passes(planted_db):
    result = _invoke(planted_db, "--cuts", "1", "--set", "features.names=[rsi_14]")
    assert result.exit_code == 0, result.output
    assert "Stored inputs tested against the next return: 6 alternative" in result.text
    assert result.text.endswith("6 stored columns tested: no look-ahead found")


def test_stored_leaks_are_named_with_evidence_and_fix(planted_db, tmp_path):
    db = tmp_path / "leaky.db"
    shutil.copy(planted_db, db)
    planted = _plant_leaks(db)
    result = _invoke(db, "--cuts", "1", "--set", "features.names=[rsi_14]")
    assert result.exit_code == 1, result.output
    assert (
        "Stored inputs tested against the next return: 2 indicators, 6 alternative" in result.text
    )
    n, b, c = planted["next_return"], planted["log_ret"], planted["news_volume"]
    assert (
        f"indicators.next_return (copy) evidence: {n:,} of {n:,} rows (100%) equal 1 × the next simple return"
        in result.text
    )
    assert f"indicators.log_ret (copy) evidence: {b:,} of" in result.text
    assert "equal 1 × the next log return" in result.text
    assert f"alt_sentiment.sentiment_news_volume (copy) evidence: {c:,} of" in result.text
    assert "fix: recompute `next_return` from bars up to t only" in result.text
    assert result.text.endswith(
        "LEAKS in indicators.log_ret, indicators.next_return, alt_sentiment.sentiment_news_volume"
    )
