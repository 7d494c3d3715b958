"""POST /outcomes: matching, live PnL, ROI and calibration drift against the backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.service import create_app
from tests.service._service_cases import KEY, metric, ready_app, service_config

AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(market_db, tmp_path_factory.mktemp("outcomes"))
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


def _post(client, *outcomes):
    response = client.post("/outcomes", json={"outcomes": list(outcomes)}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_outcomes_update_the_live_statistics(client, run_dir):
    first = client.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
    later = client.post("/predict", json={"symbols": ["AAA"], "as_of": "2020-03-02"}).json()
    pos = {p["symbol"]: p for p in first["predictions"]}
    [old] = later["predictions"]
    body = _post(
        client,
        {"request_id": first["request_id"], "symbol": "AAA", "realised_return": 0.02},
        {
            "timestamp": first["predictions"][1]["timestamp"],
            "symbol": "BBB",
            "realised_return": -0.01,
        },
        {"request_id": later["request_id"], "realised_return": 0.005},
    )
    assert body["matched"] == 3 and body["unmatched"] == []
    r = np.array(
        [pos["AAA"]["position"] * 0.02, pos["BBB"]["position"] * -0.01, old["position"] * 0.005]
    )
    f = np.array([pos["AAA"]["forecast"], pos["BBB"]["forecast"], old["forecast"]])
    live = body["live"]
    assert live["n"] == 3 and live["model_version"] == first["model_version"]
    assert live["pnl"] == pytest.approx(r.sum()) and live["mean_return"] == pytest.approx(r.mean())
    # the expectation: the run's own test predictions, position × realised return
    test = pd.read_parquet(run_dir / "test_predictions.parquet").dropna(subset=["realised_return"])
    expected = float((test["position"] * test["realised_return"]).mean())
    assert live["expected_return"] == pytest.approx(expected)
    assert live["roi_drift"] == pytest.approx(r.mean() - expected)
    assert live["roi_drift_z"] == pytest.approx(
        (r.mean() - expected) / (r.std(ddof=1) / np.sqrt(3))
    )
    hits = np.sign(f) * np.sign([0.02, -0.01, 0.005]) > 0
    assert live["hit_rate"] == pytest.approx(hits.mean())
    hit_test = float((np.sign(test["forecast"]) * np.sign(test["realised_return"]) > 0).mean())
    assert live["hit_rate_drift"] == pytest.approx(hits.mean() - hit_test)
    assert live["coverage"] is None  # a regression head has no quantiles
    assert metric(client, "plus_ultra_live_pnl") == pytest.approx(r.sum())
    assert metric(client, "plus_ultra_roi_drift") == pytest.approx(r.mean() - expected)
    assert metric(client, "plus_ultra_outcomes_total") == 3


def test_unmatched_outcomes_say_why(client):
    first = client.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
    rid = first["request_id"]
    body = _post(
        client,
        {"request_id": rid, "realised_return": 0.01},
        {"request_id": "no-such-request", "realised_return": 0.01},
        {"timestamp": "2001-01-01", "symbol": "AAA", "realised_return": 0.01},
        {"request_id": rid, "symbol": "AAA", "realised_return": 0.01},
        {"request_id": rid, "symbol": "AAA", "realised_return": 0.01},
    )
    reasons = {u["index"]: u["reason"] for u in body["unmatched"]}
    assert body["matched"] == 1
    assert "predicted 2 symbols (AAA, BBB): name the symbol" in reasons[0]
    assert "no prediction with request_id 'no-such-request'" in reasons[1]
    assert "no served prediction of AAA at 2001-01-01" in reasons[2]
    assert reasons[4] == "already recorded"


def test_outcome_bodies_are_validated(client):
    bad = client.post(
        "/outcomes", json={"outcomes": [{"symbol": "AAA", "realised_return": 0.1}]}, headers=AUTH
    )
    assert bad.status_code == 422 and "`timestamp` and `symbol`" in bad.json()["detail"]
    ruin = client.post(
        "/outcomes", json={"outcomes": [{"request_id": "x", "realised_return": -1.5}]}, headers=AUTH
    )
    assert ruin.status_code == 422 and "outcomes[0].realised_return" in ruin.json()["detail"]


def test_a_restart_keeps_the_live_statistics_and_the_book(client, run_dir):
    state = client.app.state.service
    version = client.get("/health").json()["model_version"]
    before = state.live.stats(version)
    assert before.n >= 3
    again = create_app(state.config, run_dir)  # the same service database
    after = again.state.service
    assert after.live.stats(version).n == before.n
    assert after.live.stats(version).pnl == pytest.approx(before.pnl)
    stamps = np.array([pd.Timestamp("2020-03-12", tz="UTC").value])
    held = after.guard.book.held(np.array(["AAA"], dtype=object), int(stamps[0]))
    assert held[0] == pytest.approx(
        state.guard.book.held(np.array(["AAA"], dtype=object), int(stamps[0]))[0]
    )
    assert held[0] != 0
    after.log.close()
