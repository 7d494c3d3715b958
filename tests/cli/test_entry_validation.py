"""Validation where data enters, through the real entry point.

A database with text in a price column, inverted bars or negative volumes gets the
validation message (table.column [check], count, first keys, fix) from every command
that reads it — never Arrow's parse error — and config mistakes fail before any read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.training import train
from tests.training._train_cases import TINY, fixture_db, tiny_config

_PARSER_TEXT = "Failed to parse string"


def _flat(output: str) -> str:
    """``output`` without line breaks or runs of spaces (rich wraps long lines)."""
    return " ".join(output.split())


def _has(output: str, text: str) -> bool:
    return "".join(text.split()) in "".join(output.split())


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _update(db: Path, sql: str) -> Path:
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute(sql)
    return db


def _bars(db: Path, symbol: str, offset: int, n: int) -> str:
    """SQL selecting ``n`` timestamps of ``symbol`` from the ``offset``-th bar on."""
    return (
        f"symbol = '{symbol}' AND timestamp IN (SELECT timestamp FROM series WHERE "
        f"symbol = '{symbol}' ORDER BY timestamp LIMIT {n} OFFSET {offset})"
    )


@pytest.fixture(scope="module")
def good_db(tmp_path_factory) -> Path:
    return fixture_db(tmp_path_factory.mktemp("good"), rows=300)


@pytest.fixture
def na_db(good_db, tmp_path) -> Path:
    """Three closes of AAA stored as the text 'n/a' (REAL affinity keeps text as text)."""
    db = tmp_path / "na.db"
    db.write_bytes(good_db.read_bytes())
    return _update(db, f"UPDATE series SET close = 'n/a' WHERE {_bars(db, 'AAA', 100, 3)}")


@pytest.fixture
def bad_bars_db(good_db, tmp_path) -> Path:
    """Four AAA bars with low above high, two BBB bars with volume -5."""
    db = tmp_path / "bars.db"
    db.write_bytes(good_db.read_bytes())
    _update(db, f"UPDATE series SET low = high * 1.1 WHERE {_bars(db, 'AAA', 50, 4)}")
    return _update(db, f"UPDATE series SET volume = -5 WHERE {_bars(db, 'BBB', 70, 2)}")


def _stored(db: Path, where: str) -> list[str]:
    """Timestamps of the rows matching ``where``, in key order (the reference)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute(f"SELECT timestamp FROM series WHERE {where} ORDER BY symbol, timestamp")
        return [r[0] for r in rows]


def _assert_names_na(result, db: Path) -> None:
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert _PARSER_TEXT not in text and "internal error" not in text
    assert "series.close [numeric] 3 rows: 3 values are not numbers (e.g. 'n/a') for AAA (3)" in (
        text
    )
    first = "; ".join(f"AAA {t}" for t in _stored(db, "typeof(close) = 'text'"))
    assert f"first keys: {first}" in text
    assert "plus-ultra data validate" in text


def test_features_compute_names_text_in_a_price_column(na_db, tmp_path):
    out = tmp_path / "f.parquet"
    args = ["features", "compute", str(na_db), "-o", str(out), *_sets("data.cache=false")]
    result = CliRunner().invoke(app, args)
    _assert_names_na(result, na_db)
    assert not out.exists()


def test_train_names_text_in_a_price_column(na_db, tmp_path):
    sets = _sets(
        f"data.sqlite_path={na_db}",
        "data.cache=false",
        f"training.checkpoint_dir={tmp_path}",
        *TINY,
    )
    _assert_names_na(CliRunner().invoke(app, ["train", "--accelerator", "cpu", *sets]), na_db)


def test_predict_names_text_in_a_price_column(good_db, na_db, tmp_path):
    run = train(tiny_config(good_db, tmp_path / "run"))
    args = ["predict", "--checkpoint", str(run.checkpoint_dir), "--db", str(na_db)]
    args += ["--device", "cpu", "-o", str(tmp_path / "p.parquet")]
    _assert_names_na(CliRunner().invoke(app, args), na_db)


def test_features_compute_warns_and_drops_bad_bars(good_db, bad_bars_db, tmp_path):
    out = tmp_path / "f.parquet"
    args = ["features", "compute", str(bad_bars_db), "-o", str(out), "--features", "rsi_14"]
    result = CliRunner().invoke(app, [*args, *_sets("data.cache=false")])
    assert result.exit_code == 0, result.output
    assert _has(result.output, "series.low: 4 bars have low above open, close or high for AAA (4)")
    assert _has(result.output, "series.volume: 2 negative values (e.g. -5.0) for BBB (2)")
    assert _has(result.output, "dropped 6 series rows")
    frame = pd.read_parquet(out)
    with contextlib.closing(sqlite3.connect(good_db)) as con:
        stored = con.execute("SELECT count(*) FROM series").fetchone()[0]
    assert len(frame) == stored - 6 == 594
    assert (frame["volume"] >= 0).all() and (frame["low"] <= frame["high"]).all()


def test_strict_validation_halts_on_bad_bars(bad_bars_db, tmp_path):
    out = tmp_path / "f.parquet"
    sets = _sets("data.cache=false", "data.strict_validation=true")
    result = CliRunner().invoke(
        app, ["features", "compute", str(bad_bars_db), "-o", str(out), *sets]
    )
    text = _flat(result.output)
    assert result.exit_code == 2, result.output
    assert "series.low [ohlc_low] 4 rows" in text and "series.volume [non_negative] 2 rows" in text
    first = "; ".join(f"BBB {t}" for t in _stored(bad_bars_db, "volume < 0"))
    assert f"first keys: {first}" in text
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        (
            "train",
            "model.architecture=hybrid_transfomer",
            "`model.architecture`: unknown name 'hybrid_transfomer' — did you mean "
            "`model.architecture=hybrid_transformer`?",
        ),
        ("train", "model.head=quantil", "did you mean `model.head=quantile`?"),
        (
            "train",
            "model.horizon=3",
            "model.horizon=3 exceeds windows.horizon=1: the windows hold fewer target steps",
        ),
        ("pretrain", "model.architecture=state_spce", "`model.architecture=state_space`?"),
    ],
)
def test_config_errors_come_before_the_database_is_read(tmp_path, command, override, message):
    missing = tmp_path / "no_such.db"  # reading it would fail with "does not exist"
    sets = _sets(f"data.sqlite_path={missing}", f"training.checkpoint_dir={tmp_path}", *TINY)
    sets += _sets(f"pretraining.checkpoint_dir={tmp_path}", override)
    result = CliRunner().invoke(app, [command, *sets])
    assert result.exit_code == 2, result.output
    assert _has(result.output, message)
    assert "does not exist" not in _flat(result.output)
