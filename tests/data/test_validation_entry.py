"""The read path's validation: fast checks on the rows read, strict = `data validate --strict`."""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import DataConfig
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.validation import drop_invalid_rows
from market_nn_plus_ultra.data.validation_entry import (
    EntryValidationError,
    check_panel,
    read_checked_panel,
    unreadable_values,
)
from tests.data.malformed import KINDS, N_BARS, SYMBOLS, clean_tables

#: Kinds the typed reader cannot parse: they halt in both modes.
UNREADABLE = {"text_in_real", "unparseable_time", "indicator_text", "missing_column"}
#: Kinds whose broken row is in the rows read and is dropped when not strict.
DROPPED = {
    "null_volume": ("volume", {"not_null"}),
    "nan_text": ("open", {"not_null"}),
    "infinite_high": ("high", {"finite"}),
    "duplicate_key": ("symbol,timestamp", {"duplicate_key"}),
    "low_above_open": ("low", {"ohlc_low"}),
    "high_below_close": ("high", {"ohlc_high"}),
    "zero_price": ("close", {"positive"}),
    "negative_price": ("open", {"positive"}),
    "negative_volume": ("volume", {"non_negative"}),
}


def _data(db, **kwargs) -> DataConfig:
    return DataConfig(sqlite_path=db, cache=False, alternative_data=[], **kwargs)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_strict_halts_on_every_kind_of_the_corpus(kind, tmp_path):
    db = kind.build(tmp_path)
    with pytest.raises(EntryValidationError) as caught:
        read_checked_panel(_data(db, strict_validation=True))
    found = {(f.table, f.column, f.check) for f in caught.value.report.failures}
    assert (kind.table, kind.column, kind.check) in found
    assert f"{kind.table}.{kind.column} [{kind.check}]" in str(caught.value)


@pytest.mark.parametrize("kind", [k for k in KINDS if k.name in UNREADABLE], ids=lambda k: k.name)
def test_unreadable_values_halt_without_strict(kind, tmp_path):
    db = kind.build(tmp_path)
    with pytest.raises(EntryValidationError) as caught:
        read_checked_panel(_data(db))
    (failure,) = caught.value.report.failures
    assert (failure.table, failure.column, failure.check) == (kind.table, kind.column, kind.check)
    assert "Failed to parse" not in str(caught.value)


@pytest.mark.parametrize("kind", [k for k in KINDS if k.name in DROPPED], ids=lambda k: k.name)
def test_non_strict_drops_the_broken_row_and_logs_it(kind, tmp_path, caplog):
    db = kind.build(tmp_path)
    column, checks = DROPPED[kind.name]
    with caplog.at_level(logging.WARNING, "market_nn_plus_ultra.data.validation_entry"):
        panel = read_checked_panel(_data(db))
    # every corpus kind breaks exactly one row of the 2 × 48 clean bars (one extra when it
    # duplicates a row)
    stored = len(SYMBOLS) * N_BARS + (kind.name == "duplicate_key")
    assert len(panel) == stored - 1
    assert panel.index.is_unique
    logged = " ".join(caplog.messages)
    assert f"series.{column}: 1 " in logged and any(f"[{c}]" in logged for c in checks)
    assert "dropped 1 series rows" in logged


def _clean_panel() -> pd.DataFrame:
    series = clean_tables()["series"]
    series["timestamp"] = pd.to_datetime(series["timestamp"], utc=True)
    numbers = series.astype({c: "float64" for c in ("open", "high", "low", "close", "volume")})
    return numbers.set_index(["timestamp", "symbol"]).sort_index()


def _broken(name: str) -> pd.DataFrame:
    panel = _clean_panel()
    row = panel.index[7]
    if name == "duplicate":
        return pd.concat([panel, panel.iloc[[7]]]).sort_index()
    if name == "unsorted":
        return panel.iloc[np.r_[2, 1, 0, 3 : len(panel)]]  # AAA: t1 before t0
    column, value = {
        "nan": ("close", np.nan),
        "inf": ("high", np.inf),
        "zero": ("open", 0.0),
        "negative_volume": ("volume", -1.0),
        "low_above_high": ("low", 1e6),
        "high_below_close": ("high", 1e-3),
    }[name]
    panel.loc[row, column] = value
    return panel


def test_a_clean_panel_passes_untouched():
    panel = _clean_panel()
    kept, report = check_panel(panel, source="mem.db", strict=True)
    assert kept is panel and not report.failures and report.rows == {"series": 96}
    assert not drop_invalid_rows("series", panel)[1].failures  # the full checks agree


@pytest.mark.parametrize(
    "name",
    ["nan", "inf", "zero", "negative_volume", "low_above_high", "high_below_close", "duplicate"],
)
def test_the_fast_gate_misses_nothing_the_full_checks_find(name):
    panel = _broken(name)
    kept, report = check_panel(panel, source="mem.db")
    assert report.errors and len(kept) == len(panel) - 1
    with pytest.raises(EntryValidationError, match=r"mem\.db: the bars read fail validation"):
        check_panel(panel, source="mem.db", strict=True)


def test_rows_out_of_time_order_are_reported_and_resorted():
    panel = _broken("unsorted")
    kept, report = check_panel(panel, source="mem.db")
    assert [f.check for f in report.failures] == ["timestamp_order"]
    assert len(kept) == len(panel) and kept.index.is_monotonic_increasing


def test_unreadable_values_count_only_the_rows_read(tmp_path):
    db = write_fixture(tmp_path / "na.db", symbols=("AAA", "BBB"), rows=300, freq="1D")
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        times = [r[0] for r in con.execute("SELECT timestamp FROM series WHERE symbol = 'AAA'")]
        for t in (times[100], times[250]):
            con.execute(
                "UPDATE series SET close = 'n/a' WHERE symbol = 'AAA' AND timestamp = ?", [t]
            )
    whole = unreadable_values(db, ["AAA", "BBB"])
    assert [(f.column, f.check, f.n_rows) for f in whole.failures] == [("close", "numeric", 2)]
    assert whole.failures[0].first_keys == (("AAA", times[100]), ("AAA", times[250]))
    assert not unreadable_values(db, ["BBB"]).failures
    # a read up to bar 150 fails on bar 100 only, and says so
    with pytest.raises(EntryValidationError) as caught:
        read_checked_panel(_data(db, symbols=["AAA"], end=times[150]))
    (failure,) = caught.value.report.failures
    assert failure.n_rows == 1 and failure.first_keys == (("AAA", times[100]),)
    # a read of bars the text does not touch works
    panel = read_checked_panel(_data(db, start=times[120], end=times[200]))
    assert len(panel) == 2 * 81 and panel["close"].notna().all()
