"""POST /predict: parity with Agent.predict in both modes, bad input as 4xx, the log."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.service import ServiceError, create_app
from tests.service._service_cases import bars_from_db, last_rows, ready_app, service_config
from tests.training._train_cases import fixture_db


@pytest.fixture(scope="module")
def agent(run_dir):
    return Agent.from_checkpoint(run_dir, device="cpu")


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(market_db, tmp_path_factory.mktemp("predict"))
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def short_db(tmp_path_factory):
    """Another database holding exactly the bars a request needs (72 per symbol)."""
    return fixture_db(tmp_path_factory.mktemp("short"), rows=72, seed=3)


def test_bars_mode_equals_agent_predict_on_the_same_bars(client, agent, short_db):
    bars = bars_from_db(agent, short_db)
    assert len(bars) == 2 * 72  # window 8 + fft warm-up 64, per symbol
    response = client.post("/predict", json={"bars": bars})
    assert response.status_code == 200, response.text
    body = response.json()
    reference = last_rows(agent.predict(short_db))
    served = pd.DataFrame(body["predictions"]).set_index("symbol")
    assert list(served.index) == ["AAA", "BBB"]
    np.testing.assert_allclose(served["model_position"], reference["position"], atol=1e-6)
    np.testing.assert_allclose(served["forecast"], reference["forecast"], atol=1e-6)
    np.testing.assert_allclose(served["position"], reference["position"], atol=1e-6)
    stamps = pd.to_datetime(served["timestamp"], utc=True)
    assert (stamps == reference["timestamp"]).all()
    telemetry = body["telemetry"]
    assert telemetry["mode"] == "bars" and telemetry["window"] == 8
    assert telemetry["min_bars"] == 72 and telemetry["horizon"] == 1
    assert telemetry["feature_columns"] == agent.feature_columns
    assert set(telemetry["latency_ms"]) == {"features", "model", "guardrails", "total"}
    assert body["guardrails"] == {
        "action": "none",
        "positions": dict(served["position"]),
        "breaches": [],
    }


def test_database_mode_equals_agent_predict(client, agent, market_db):
    body = client.post("/predict", json={"symbols": ["BBB", "AAA"]}).json()
    served = pd.DataFrame(body["predictions"]).set_index("symbol")
    full = agent.predict(market_db)
    np.testing.assert_allclose(served["position"], last_rows(full)["position"], atol=1e-6)
    # as_of: the prediction at that bar, from the bars up to it
    as_of = full["timestamp"].sort_values().unique()[-30]
    body = client.post("/predict", json={"symbols": ["AAA"], "as_of": as_of.isoformat()}).json()
    [row] = body["predictions"]
    expected = full[(full["timestamp"] == as_of) & (full["symbol"] == "AAA")]["position"]
    assert pd.Timestamp(row["timestamp"]) == as_of
    assert row["position"] == pytest.approx(float(expected.iloc[0]), abs=1e-6)
    assert body["telemetry"]["mode"] == "database"


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["detail"]


def test_too_few_bars_say_how_many_are_needed(client, agent, short_db):
    bars = bars_from_db(agent, short_db, tail=50)
    detail = _error(client.post("/predict", json={"bars": bars}), 422)
    assert "AAA has 50" in detail and "at least 72 bars per symbol" in detail
    assert "window 8 + feature warm-up 64" in detail


def test_bad_bars_name_the_field_and_the_fix(client, agent, short_db):
    bars = bars_from_db(agent, short_db)
    missing = [{k: v for k, v in b.items() if k != "sentiment_score"} for b in bars]
    detail = _error(client.post("/predict", json={"bars": missing}), 422)
    assert "bars[0].sentiment_score is missing" in detail and "send it with every bar" in detail

    broken = [dict(b) for b in bars]
    broken[5]["low"] = broken[5]["close"] * 2
    detail = _error(client.post("/predict", json={"bars": broken}), 422)
    assert detail.startswith("bars[5].low") and "low must be <= open and close" in detail

    twice = [*bars, dict(bars[3])]
    assert "a second bar for" in _error(client.post("/predict", json={"bars": twice}), 422)

    typed = [dict(b) for b in bars]
    typed[2]["close"] = "n/a"
    response = client.post("/predict", json={"bars": typed})
    assert _error(response, 422).startswith("invalid request — bars[2].close:")
    assert response.json()["errors"][0]["field"] == "bars[2].close"

    negative = [dict(b) for b in bars]
    negative[0]["volume"] = -1
    assert "bars[0].volume" in _error(client.post("/predict", json={"bars": negative}), 422)


def test_request_shape_errors(client):
    both = {"symbols": ["AAA"], "bars": [{"timestamp": "2020-01-01"}]}
    assert "exactly one of them" in _error(client.post("/predict", json={}), 422)
    assert _error(client.post("/predict", json=both), 422)
    detail = _error(client.post("/predict", json={"symbols": ["ZZZ"]}), 422)
    assert "were not in the training run" in detail
    too_old = {"symbols": ["AAA"], "as_of": "1000-01-01T00:00:00Z"}
    assert "outside 1678..2261" in _error(client.post("/predict", json=too_old), 422)
    early = {"symbols": ["AAA"], "as_of": "2019-01-05"}
    assert "holds too few bars" in _error(client.post("/predict", json=early), 422)
    not_json = client.post("/predict", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


def test_limits_on_rows_symbols_and_bytes(market_db, run_dir, agent, short_db, tmp_path):
    cfg = service_config(
        market_db,
        tmp_path,
        "service.max_prediction_rows=100",
        "service.max_symbols=1",
        "service.max_body_bytes=60000",
    )
    bars = bars_from_db(agent, short_db)
    with TestClient(ready_app(cfg, run_dir)) as c:
        detail = _error(c.post("/predict", json={"bars": bars}), 422)
        assert "144 rows exceed service.max_prediction_rows=100" in detail
        detail = _error(c.post("/predict", json={"symbols": ["AAA", "BBB"]}), 422)
        assert "2 symbols exceed service.max_symbols=1" in detail
        big = json.dumps({"bars": bars * 3}).encode()
        response = c.post("/predict", content=big, headers={"content-type": "application/json"})
        assert "exceeds service.max_body_bytes=60,000" in _error(response, 413)
        chunked = c.post(
            "/predict",
            content=iter([big[:40000], big[40000:]]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413


def test_every_prediction_is_logged_in_the_service_database(client):
    response = client.post(
        "/predict", json={"symbols": ["AAA", "BBB"]}, headers={"X-Request-ID": "req-42"}
    )
    body = response.json()
    assert body["request_id"] == "req-42" and response.headers["x-request-id"] == "req-42"
    state = client.app.state.service
    state.log.flush()
    with sqlite3.connect(state.config.service.database) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = con.execute(
            "SELECT symbol, model_version, timestamp, input_last, position, breaches "
            "FROM predictions WHERE request_id = 'req-42' ORDER BY symbol"
        ).fetchall()
    positions = {p["symbol"]: p["position"] for p in body["predictions"]}
    assert [r[0] for r in rows] == ["AAA", "BBB"]
    for symbol, version, stamp, newest, position, breaches in rows:
        assert version == body["model_version"] and json.loads(breaches) == []
        assert position == pytest.approx(positions[symbol])
        assert stamp == newest == "2020-03-11T00:00:00+00:00"


def test_the_market_database_is_never_the_log(market_db, run_dir, tmp_path):
    cfg = service_config(market_db, tmp_path, f"service.database={market_db}")
    with pytest.raises(ServiceError, match="is the market database"):
        create_app(cfg, run_dir)
