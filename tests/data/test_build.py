"""``data build``: validated input, idempotent in-place builds, atomic copies, the CLI."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.config import DataConfig, RegimeConfig
from market_nn_plus_ultra.data.build import build_database
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.data.store import StoreError, format_timestamps, read_table
from market_nn_plus_ultra.data.validation import validate_database, validate_tables
from market_nn_plus_ultra.data.validation_report import DataValidationError

SYMBOLS = ["SPY", "QQQ", "BTC-USD"]
REGIMES = RegimeConfig(labellers=["volatility", "liquidity"], min_history=40)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "market.db"
    return write_fixture(path, SYMBOLS, rows=400, freq="1D", alt_features=2, seed=3)


@pytest.fixture
def db(source, tmp_path):
    """A fresh copy of the fixture per test (builds write into it)."""
    path = tmp_path / "market.db"
    path.write_bytes(source.read_bytes())
    return path


def _cfg(db, **extra) -> DataConfig:
    extra.setdefault("regimes", REGIMES)
    cross = {"columns": ["SPY:close"], "fill_limit": 5}
    return DataConfig(sqlite_path=db, cache=False, cross_asset=cross, **extra)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(path) -> dict[str, pd.DataFrame]:
    return {t: read_table(path, t, parse_time=False) for t in ("regimes", "cross_asset_views")}


def _break_one_bar(path, symbol: str = "QQQ", row: int = 200) -> str:
    """Set high below low on one bar (an OHLC error); returns its timestamp text."""
    with sqlite3.connect(path) as con:
        stamp = con.execute(
            "SELECT timestamp FROM series WHERE symbol = ? ORDER BY timestamp LIMIT 1 OFFSET ?",
            (symbol, row),
        ).fetchone()[0]
        con.execute(
            "UPDATE series SET high = low * 0.5 WHERE symbol = ? AND timestamp = ?",
            (symbol, stamp),
        )
    return stamp


def test_build_in_place_is_idempotent_and_valid(db):
    first = build_database(_cfg(db), regimes=True, cross_asset=True)
    tables = _tables(db)
    second = build_database(_cfg(db), regimes=True, cross_asset=True)
    again = _tables(db)
    for name in tables:
        pd.testing.assert_frame_equal(tables[name], again[name])
    assert first.regime_rows == second.regime_rows == len(tables["regimes"]) > 0
    assert first.view_rows == len(tables["cross_asset_views"]) > 0
    assert set(tables["regimes"]["value"]) == {"low", "mid", "high"}
    assert validate_database(db).passed(strict=True)
    assert "regime labels" in first.summary()


def test_volatility_labels_match_hand_computation(db):
    build_database(_cfg(db), regimes=True)
    regimes = read_table(db, "regimes", parse_time=False)
    spy = regimes[(regimes["symbol"] == "SPY") & (regimes["name"] == "volatility")]
    close = read_panel(db, ["SPY"], cache=False)["close"].to_numpy()
    vol = pd.Series(np.log(close)).diff().rolling(20).std().to_numpy()  # ddof=1, 20 returns
    stamps = format_timestamps(read_panel(db, ["SPY"], cache=False).index.levels[0])
    labels = dict(zip(spy["timestamp"], spy["value"], strict=True))
    known = np.flatnonzero(~np.isnan(vol))
    for i in known[[REGIMES.min_history - 1, 150, -1]]:
        history = vol[known[0] : i + 1]  # every value up to and including t
        low, high = np.quantile(history, [0.33, 0.66])
        expected = "low" if vol[i] <= low else ("mid" if vol[i] <= high else "high")
        assert labels[stamps[i]] == expected
    # One bar before min_history values exist there is no label.
    assert stamps[known[REGIMES.min_history - 2]] not in labels


def test_cross_asset_values_are_the_context_close(db):
    build_database(_cfg(db), cross_asset=True)
    view = read_table(db, "cross_asset_views")
    qqq = view[view["symbol"] == "QQQ"].set_index("timestamp")["value"]
    spy = read_panel(db, ["SPY"], cache=False)["close"].droplevel("symbol")
    np.testing.assert_allclose(qqq.to_numpy(), spy.reindex(qqq.index).to_numpy(), rtol=1e-12)
    assert set(view["name"]) == {"spy_close"} and set(view["view"]) == {"context"}


def test_rebuild_keeps_rows_of_other_labellers(db):
    build_database(_cfg(db, regimes=RegimeConfig(labellers=["volatility"])), regimes=True)
    build_database(_cfg(db, regimes=RegimeConfig(labellers=["liquidity"])), regimes=True)
    assert set(read_table(db, "regimes")["name"]) == {"volatility", "liquidity"}


def test_output_copy_is_atomic_and_leaves_source_untouched(db, tmp_path):
    before = _digest(db)
    target = tmp_path / "out" / "built.db"
    result = build_database(_cfg(db), regimes=True, cross_asset=True, output=target)
    assert result.path == target
    assert _digest(db) == before
    assert len(read_table(target, "regimes")) == result.regime_rows
    assert len(read_table(target, "series")) == len(read_table(db, "series"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["built.db"]  # no temp left
    with pytest.raises(StoreError, match="already exists"):
        build_database(_cfg(db), regimes=True, output=target)
    with pytest.raises(StoreError, match="is the input database"):
        build_database(_cfg(db), regimes=True, output=db, overwrite=True)


def test_strict_validation_halts_before_writing(db):
    _break_one_bar(db)
    before = _digest(db)
    with pytest.raises(DataValidationError, match="series"):
        build_database(_cfg(db, strict_validation=True), regimes=True)
    assert _digest(db) == before


def test_non_strict_build_drops_invalid_rows_with_counts(db):
    stamp = _break_one_bar(db)
    result = build_database(_cfg(db), regimes=True)
    assert result.validation.dropped == {"series": 1}
    assert "dropped invalid rows: 1 series" in result.summary()
    regimes = read_table(db, "regimes", parse_time=False)
    qqq = regimes[regimes["symbol"] == "QQQ"]
    assert stamp not in set(qqq["timestamp"])
    assert stamp in set(regimes.loc[regimes["symbol"] == "SPY", "timestamp"])
    assert validate_tables({"regimes": regimes}).passed(strict=True)


def test_nothing_requested_is_an_error(db):
    with pytest.raises(ValueError, match="--regime-labels"):
        build_database(_cfg(db))


def test_cli_build_to_output(db, tmp_path):
    target = tmp_path / "built.db"
    args = ["data", "build", str(db), "--output", str(target), "--regime-labels"]
    args += ["--regime-bands", "0.5", "--cross-asset-view", "--cross-asset-columns"]
    args += ["SPY:close,QQQ:close", "--cross-asset-fill-limit", "2", "--set", "data.cache=false"]
    args += ["--set", "data.regimes.min_history=40"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(target) in result.output and "Built" in result.output
    assert set(read_table(target, "regimes")["value"]) == {"band_0", "band_1"}
    assert set(read_table(target, "cross_asset_views")["name"]) == {"spy_close", "qqq_close"}
    assert read_table(db, "regimes").empty  # the source is untouched


def test_cli_strict_failure_prints_the_failure_table(db):
    _break_one_bar(db)
    args = ["data", "build", str(db), "--regime-labels", "--strict-validation"]
    result = CliRunner().invoke(app, [*args, "--set", "data.cache=false"])
    assert result.exit_code == 2
    assert "Validation failures" in result.output and "nothing was written" in result.output
    assert read_table(db, "regimes").empty


def test_default_labellers_on_a_database_without_sectors(db, caplog):
    """Index data has no sectors: the default labellers skip sector_rotation with a warning."""
    with sqlite3.connect(db) as con:
        con.execute("UPDATE assets SET sector = NULL")
    cfg = DataConfig(sqlite_path=db, cache=False)  # default labellers include sector_rotation
    assert "sector_rotation" in cfg.regimes.labellers
    result = build_database(cfg, regimes=True)
    names = set(read_table(db, "regimes")["name"])
    assert "sector_rotation" not in names and {"volatility", "liquidity"} <= names
    assert result.regime_rows > 0 and "sector_rotation skipped" in caplog.text
    only = DataConfig(sqlite_path=db, cache=False, regimes={"labellers": ["sector_rotation"]})
    with pytest.raises(ValueError, match=r"assets\.sector is empty"):
        build_database(only, regimes=True)
