"""Annotations: targets resolved from the prediction log or trades, validation, old tables."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from market_nn_plus_ultra.data.annotations import (
    ANNOTATION_COLUMNS,
    AnnotationError,
    add_annotation,
    read_annotations,
)
from market_nn_plus_ultra.data.prediction_log import find_predictions, read_predictions
from market_nn_plus_ultra.data.store import update_database, write_database
from market_nn_plus_ultra.data.validation import (
    DataValidationError,
    validate_database,
    validate_tables,
)
from market_nn_plus_ultra.service.log import PredictionLog

BAR = "2024-01-02T00:00:00+00:00"  # how the service logs a bar


def _log(path, rows):
    """A service database holding ``rows`` (request, model, bar, symbol, position, action)."""
    log = PredictionLog(path)
    log.append(
        [
            (rid, mv, ts, sym, ts, pos, pos, 0.01, "{}", action, "[]", ts)
            for rid, mv, ts, sym, pos, action in rows
        ]
    )
    log.flush()
    log.close()
    return path


@pytest.fixture
def service_db(tmp_path):
    return _log(
        tmp_path / "service.db",
        [
            ("r1", "1-aaa", BAR, "AAA", 0.5, "none"),
            ("r1", "1-aaa", BAR, "BBB", -0.25, "none"),
            ("r2", "2-bbb", "2024-01-03T00:00:00+00:00", "AAA", 1.0, "cap"),
        ],
    )


def test_a_veto_by_request_takes_bar_symbol_and_model_from_the_log(service_db):
    saved = add_annotation(
        service_db, kind="veto", rationale="earnings tonight", request_id="r1", symbol="BBB",
        author="ana",
    )  # fmt: skip
    assert (saved.timestamp, saved.symbol, saved.model_version) == (
        "2024-01-02T00:00:00Z", "BBB", "1-aaa",
    )  # fmt: skip
    assert saved.text == "earnings tonight" and saved.rationale == "earnings tonight"
    assert pd.Timestamp(saved.created).tzinfo is not None
    stored = read_annotations(service_db)
    assert list(stored.columns) == list(ANNOTATION_COLUMNS)
    assert stored.iloc[0].to_dict() == {**saved.as_dict(), "trade_id": None}


def test_a_bar_annotation_finds_the_served_prediction_and_normalises_time(service_db):
    saved = add_annotation(
        service_db, kind="anomaly", text="stale quote", timestamp="2024-01-03T01:00:00+01:00",
        symbol="AAA",
    )  # fmt: skip
    assert saved.timestamp == "2024-01-03T00:00:00Z"  # +01:00 converted to UTC
    assert (saved.request_id, saved.model_version) == ("r2", "2-bbb")
    note = add_annotation(service_db, kind="note", text="quiet day", timestamp="2024-02-01",
                          symbol="AAA")  # fmt: skip
    assert note.request_id is None and note.timestamp == "2024-02-01T00:00:00Z"  # just a bar


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "veto", "request_id": "r1", "symbol": "AAA"}, "--rationale"),
        ({"kind": "veto", "request_id": "r1", "rationale": "x"}, "served AAA, BBB — pass --symbol"),
        ({"kind": "veto", "request_id": "nope", "rationale": "x"}, "is not in the prediction log"),
        ({"kind": "veto", "timestamp": "2024-05-01", "symbol": "AAA", "rationale": "x"},
         "a veto rejects a served action"),
        ({"kind": "note", "text": "x"}, "must be attached to something"),
        ({"kind": "note", "timestamp": "yesterday", "symbol": "AAA", "text": "x"},
         "--timestamp='yesterday' is not an ISO-8601 time"),
        ({"kind": "note", "request_id": "r1", "symbol": "AAA"}, "needs its text"),
        ({"kind": "veto", "request_id": "r2", "model_version": "1-aaa", "rationale": "x"},
         "was served by model 2-bbb"),
    ],
)  # fmt: skip
def test_bad_annotations_are_refused_with_the_fix(service_db, kwargs, message):
    with pytest.raises(AnnotationError, match=None) as err:
        add_annotation(service_db, **kwargs)
    assert message in str(err.value)
    assert read_annotations(service_db).empty  # nothing written


def test_an_unknown_kind_fails_the_data_layer_validation(service_db):
    with pytest.raises(DataValidationError) as err:
        add_annotation(service_db, kind="vetoo", text="x", request_id="r2")
    assert "annotations.kind" in str(err.value) and "'vetoo'" in str(err.value)


def test_validation_checks_kind_rationale_and_times():
    frame = pd.DataFrame(
        {
            "annotation_id": [1, 2, 3, 4],
            "timestamp": ["2024-01-02T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03", "x"],
            "symbol": ["A", "B", "C", "D"],
            "kind": ["note", "veto", "flag", None],
            "text": ["a", "b", "c", "d"],
            "rationale": [None, " ", None, None],
            "created": ["2024-01-02T00:00:00Z", "soon", None, None],
        }
    )
    found = {(f.column, f.check): f.n_rows for f in validate_tables({"annotations": frame}).errors}
    assert found == {
        ("kind", "annotation_kind"): 1,  # NULL reads as a note
        ("rationale", "veto_rationale"): 1,  # blank text is no rationale
        ("created", "timestamp_format"): 1,
        ("timestamp", "timestamp_format"): 1,
        ("timestamp", "mixed_timezones"): 1,  # a naive time among UTC ones
    }


def test_an_older_annotations_table_is_extended_in_place(tmp_path):
    db = tmp_path / "market.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE annotations (annotation_id INTEGER NOT NULL, timestamp TEXT NOT NULL, "
        "symbol TEXT, author TEXT, kind TEXT, text TEXT NOT NULL, PRIMARY KEY (annotation_id))"
    )
    con.execute(
        "INSERT INTO annotations VALUES (1, '2023-01-02T00:00:00Z', 'AAA', 'bo', NULL, 'old')"
    )
    con.commit()
    con.close()
    assert read_annotations(db, request_id="r1").empty  # no such column yet: nothing matches
    add_annotation(db, kind="note", text="new", timestamp="2024-01-02", symbol="AAA")
    stored = read_annotations(db).set_index("annotation_id")
    assert stored.loc[1, "kind"] == "note" and stored.loc[1, "text"] == "old"
    assert stored.loc[2, "text"] == "new" and stored.loc[2, "created"] is not None
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(annotations)")]
    con.close()
    assert columns == list(ANNOTATION_COLUMNS)
    assert read_annotations(db, kinds=["note"])["annotation_id"].tolist() == [2, 1]


def test_writes_to_a_database_with_an_older_annotations_table_extend_it(tmp_path):
    """``update_database`` (``data build``, ``import --append``) on a database written before
    the annotations table grew its columns: the columns are added before the indexes that
    name them, and the old rows stay."""
    db = tmp_path / "market.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE annotations (annotation_id INTEGER NOT NULL, timestamp TEXT NOT NULL, "
        "symbol TEXT, author TEXT, kind TEXT, text TEXT NOT NULL, PRIMARY KEY (annotation_id))"
    )
    con.execute(
        "INSERT INTO annotations VALUES (1, '2023-01-02T00:00:00Z', 'AAA', 'bo', NULL, 'x')"
    )
    con.commit()
    con.close()
    update_database(db, {"metadata": pd.DataFrame({"key": ["k"], "value": ["v"]})})
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(annotations)")]
    rows = con.execute("SELECT annotation_id, text, request_id FROM annotations").fetchall()
    con.close()
    assert columns == list(ANNOTATION_COLUMNS)
    assert rows == [(1, "x", None)]


def test_a_trade_annotation_and_a_valid_market_database(tmp_path):
    db = write_database(
        tmp_path / "market.db",
        {
            "assets": pd.DataFrame({"asset_id": [1], "symbol": ["AAA"]}),
            "series": pd.DataFrame(
                {"timestamp": ["2024-01-02T00:00:00Z"], "symbol": ["AAA"], "open": [1.0],
                 "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]}
            ),
            "trades": pd.DataFrame(
                {"trade_id": [7], "timestamp": ["2024-01-02T15:30:00Z"], "symbol": ["AAA"],
                 "side": ["buy"], "quantity": [10.0], "price": [1.0]}
            ),
        },
    )  # fmt: skip
    saved = add_annotation(db, kind="veto", rationale="fat finger", trade_id=7)
    assert (saved.timestamp, saved.symbol, saved.trade_id) == ("2024-01-02T15:30:00Z", "AAA", 7)
    with pytest.raises(AnnotationError, match="has no trade 8"):
        add_annotation(db, kind="note", text="x", trade_id=8)
    report = validate_database(db)
    assert [f for f in report.failures if f.table == "annotations"] == []


def test_readers_filter_and_join_outcomes(service_db):
    con = sqlite3.connect(service_db)
    con.execute("INSERT INTO outcomes VALUES ('r1', 'AAA', ?, '1-aaa', 0.02, ?)", (BAR, BAR))
    con.commit()
    con.close()
    frame = read_predictions(service_db)
    assert frame["request_id"].tolist() == ["r2", "r1", "r1"]  # newest first
    realised = frame.set_index(["request_id", "symbol"])["realised_return"]
    assert realised[("r1", "AAA")] == 0.02 and realised.isna().sum() == 2
    assert len(read_predictions(service_db, since="2024-01-03", symbols=["AAA"])) == 1
    assert len(read_predictions(service_db, model_version="1-aaa", limit=1)) == 1
    found = find_predictions(service_db, timestamp="2024-01-02T00:00:00Z", symbol="BBB")
    assert found["position"].tolist() == [-0.25] and json.loads(found["breaches"][0]) == []
    add_annotation(service_db, kind="note", text="a", request_id="r2")
    add_annotation(service_db, kind="veto", rationale="b", request_id="r1", symbol="AAA")
    assert read_annotations(service_db, kinds=["veto"])["request_id"].tolist() == ["r1"]
    assert read_annotations(service_db, since="2024-01-03")["request_id"].tolist() == ["r2"]
    assert read_annotations(service_db, model_version="1-aaa", symbols=["AAA"]).shape[0] == 1
    with pytest.raises(AnnotationError, match="--kind 'bad'"):
        read_annotations(service_db, kinds=["bad"])
