"""Validation: every kind of malformed database is named precisely, never a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.store import StoreError
from market_nn_plus_ultra.data.validation import (
    DataValidationError,
    drop_invalid_rows,
    validate_database,
    validate_tables,
)
from tests.data.malformed import BAD_FILES, KINDS, Kind, clean_tables, write_raw

runner = CliRunner()


def test_corpus_is_large_enough() -> None:
    assert len(KINDS) >= 15
    assert len({k.check for k in KINDS}) >= 15


def test_clean_database_passes_strictly(tmp_path) -> None:
    path = write_raw(tmp_path / "clean.db", clean_tables())
    report = validate_database(path)
    assert report.ok and report.passed(strict=True), report.summary()
    result = runner.invoke(app, ["data", "validate", str(path), "--strict"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_malformed_kind_is_reported(kind: Kind, tmp_path) -> None:
    path = kind.build(tmp_path)
    report = validate_database(path)
    found = {(f.table, f.column, f.check) for f in report.errors}
    assert (kind.table, kind.column, kind.check) in found, report.summary()
    failure = next(
        f
        for f in report.errors
        if (f.table, f.column, f.check) == (kind.table, kind.column, kind.check)
    )
    assert failure.fix, "every failure suggests a fix"
    if kind.column != "*" and kind.check != "missing_column":
        assert failure.n_rows >= 1 and failure.first_keys

    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert kind.table in result.output and kind.column.split(",")[0] in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_first_offending_keys_point_at_the_row(tmp_path) -> None:
    kind = next(k for k in KINDS if k.name == "zero_price")
    report = validate_database(kind.build(tmp_path))
    failure = next(f for f in report.errors if f.check == "positive")
    tables = clean_tables()
    row = tables["series"].iloc[11]
    assert failure.n_rows == 1
    assert any(row["symbol"] in key and row["timestamp"] in key for key in failure.first_keys)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unopenable_files_fail_cleanly(name: str, tmp_path) -> None:
    path = BAD_FILES[name](tmp_path)
    with pytest.raises(StoreError):
        validate_database(path)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path.name) in result.output and "Traceback" not in result.output


def test_gaps_are_warnings_unless_strict(tmp_path) -> None:
    tables = clean_tables()
    series = tables["series"]
    # Remove 12 consecutive hourly bars of AAA: a gap 13x the usual spacing.
    tables["series"] = series.drop(index=range(20, 32)).reset_index(drop=True)
    path = write_raw(tmp_path / "gappy.db", tables)
    report = validate_database(path, gap_tolerance=5.0)
    assert report.ok and not report.passed(strict=True)
    assert [(w.table, w.column, w.check) for w in report.warnings] == [
        ("series", "timestamp", "gap")
    ]
    assert runner.invoke(app, ["data", "validate", str(path)]).exit_code == 0
    strict = runner.invoke(app, ["data", "validate", str(path), "--strict"])
    assert strict.exit_code == 1 and "gap" in strict.output
    # A looser tolerance accepts the same gap.
    assert validate_database(path, gap_tolerance=20.0).passed(strict=True)


def test_validate_tables_checks_frames_before_writing() -> None:
    tables = clean_tables()
    tables["series"].loc[3, "low"] = float(tables["series"].loc[3, "high"]) * 1.1
    report = validate_tables({"series": tables["series"], "assets": tables["assets"]})
    assert ("series", "low") in {(f.table, f.column) for f in report.errors}
    with pytest.raises(DataValidationError, match="series"):
        report.raise_if_failed()


def test_drop_invalid_rows_counts_and_keeps_the_rest() -> None:
    series = clean_tables()["series"].copy()
    for c in ("open", "high", "low", "close", "volume"):
        series[c] = series[c].astype(float)
    series.loc[[4, 9], "volume"] = -1.0
    series.loc[15, "close"] = np.nan
    kept, report = drop_invalid_rows("series", series)
    assert len(kept) == len(series) - 3
    assert report.dropped == {"series": 3}
    assert not kept.index.isin([4, 9, 15]).any()
    with pytest.raises(DataValidationError):
        drop_invalid_rows("series", series, strict=True)


def test_drop_invalid_rows_resorts_instead_of_dropping() -> None:
    series = clean_tables()["series"]
    shuffled = series.iloc[np.r_[1, 0, 2 : len(series)]].reset_index(drop=True)
    kept, report = drop_invalid_rows("series", shuffled)
    assert len(kept) == len(series) and not report.dropped
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), series)
