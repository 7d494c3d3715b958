"""Operational routes: health, readiness, config (redacted), curriculum, metrics, factory."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.config import save_config
from market_nn_plus_ultra.service import create_app
from market_nn_plus_ultra.service.metrics import LATENCY_BUCKETS
from market_nn_plus_ultra.service.routes import redact
from tests.service._service_cases import KEY, metric, ready_app, service_config

AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(
        market_db,
        tmp_path_factory.mktemp("routes"),
        "tracking.mlflow_tracking_uri=https://ana:hunter2@mlflow.example.com/x",
    )
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


def test_health_and_ready_while_loading_and_after(market_db, run_dir, tmp_path):
    app = create_app(service_config(market_db, tmp_path), run_dir)
    with TestClient(app) as c:  # the lifespan loads the model in the background
        first = c.get("/ready")
        assert c.get("/health").status_code == 200
        assert app.state.service.holder.wait(60)
        ready = c.get("/ready").json()
        health = c.get("/health").json()
    if first.status_code == 503:
        assert first.json()["ready"] is False and first.json()["model_version"] is None
    assert ready["ready"] is True and ready["min_bars"] == 72
    assert health["model_version"] == ready["model_version"] and health["uptime_s"] > 0


def test_ready_is_503_with_the_reason_when_the_model_cannot_load(market_db, tmp_path):
    broken = tmp_path / "run"
    broken.mkdir()
    app = create_app(service_config(market_db, tmp_path), broken)
    with TestClient(app) as c:
        assert not app.state.service.holder.wait(60)
        response = c.get("/ready")
        predict = c.post("/predict", json={"symbols": ["AAA"]})
    detail = response.json()["detail"]
    assert (
        response.status_code == 503 and "cannot be served" in detail and "present: none" in detail
    )
    assert predict.status_code == 503 and "poll GET /ready" in predict.json()["detail"]


def test_config_is_resolved_and_redacted(client, run_dir):
    body = client.get("/config").json()
    uri = body["config"]["tracking"]["mlflow_tracking_uri"]
    assert uri == "https://ana:***@mlflow.example.com/x"
    assert body["config"]["service"]["api_key_env"] == "PLUS_ULTRA_TEST_API_KEY"
    assert body["run_config"]["windows"]["window"] == 8
    assert redact({"wandb_api_key": "abc", "token": None, "tokens_env": "X"}) == {
        "wandb_api_key": "***",
        "token": None,
        "tokens_env": "X",
    }


def test_curriculum_get_and_put(client):
    body = client.get("/curriculum").json()
    assert body["profile"] is None and body["stage"] is None
    names = sorted(body["profiles"])
    chosen = client.put("/curriculum", json={"profile": names[0]}, headers=AUTH).json()
    first_stage = body["profiles"][names[0]]["stages"][0]
    assert chosen["profile"] == names[0] and chosen["stage"] == first_stage
    assert chosen["stage_index"] == 0
    assert (
        client.get("/config").json()["config"]["reinforcement"]["curriculum"]["profile"] == names[0]
    )
    wrong = client.put("/curriculum", json={"profile": "easy_to_reel"}, headers=AUTH)
    assert wrong.status_code == 422 and "is not a profile" in wrong.json()["detail"]
    bad_stage = {"profile": "p", "profiles": {"p": {"stages": [{"name": "s", "window": 0}]}}}
    wrong = client.put("/curriculum", json=bad_stage, headers=AUTH)
    assert wrong.status_code == 422
    assert "reinforcement.curriculum.profiles.p.stages.0.window" in wrong.json()["detail"]
    custom = {"profile": "p", "profiles": {"p": {"stages": [{"name": "only", "updates": None}]}}}
    assert client.put("/curriculum", json=custom, headers=AUTH).json()["stage"]["name"] == "only"
    assert client.get("/curriculum").json()["profile"] == "p"


def test_metrics_export_requests_latency_model_and_inference(client):
    client.post("/predict", json={"symbols": ["AAA"]})
    client.get("/nowhere")
    text = client.get("/metrics").text
    assert (
        metric(client, 'plus_ultra_requests_total{method="POST",route="/predict",status="200"}')
        >= 1
    )
    assert (
        metric(client, 'plus_ultra_requests_total{method="GET",route="unmatched",status="404"}')
        == 1
    )
    buckets = [f'le="{b}"' for b in ("0.00025", "1.0", "+Inf")]
    latency = [
        r for r in text.splitlines() if r.startswith("plus_ultra_request_duration_seconds_bucket")
    ]
    assert all(any(b in r for r in latency) for b in buckets) and len(LATENCY_BUCKETS) == 12
    assert 'plus_ultra_inference_duration_seconds_count{mode="database",stage="model"}' in text
    version = client.get("/health").json()["model_version"]
    info = [r for r in text.splitlines() if r.startswith("plus_ultra_model_info{")]
    assert (
        len(info) == 1
        and f'version="{version}"' in info[0]
        and 'architecture="hybrid_transformer"' in info[0]
    )
    loaded = metric(client, "plus_ultra_model_loaded_timestamp_seconds")
    assert time.time() - 3600 < loaded <= time.time()


def test_each_app_has_its_own_registry(market_db, run_dir, tmp_path):
    a = create_app(service_config(market_db, tmp_path / "a"), run_dir)
    b = create_app(service_config(market_db, tmp_path / "b"), run_dir)
    TestClient(a).get("/health")
    assert (
        metric(
            TestClient(b), 'plus_ultra_requests_total{method="GET",route="/health",status="200"}'
        )
        is None
    )
    for app in (a, b):
        app.state.service.log.close()


def test_the_factory_reads_the_config_from_the_environment(
    market_db, run_dir, tmp_path, monkeypatch
):
    path = save_config(
        service_config(market_db, tmp_path, f"service.checkpoint={run_dir}"), tmp_path / "c.yaml"
    )
    monkeypatch.setenv("PLUS_ULTRA_CONFIG", str(path))
    app = create_app()  # what `uvicorn --factory market_nn_plus_ultra.service:create_app` calls
    assert app.state.service.checkpoint == run_dir
    assert {"/predict", "/outcomes", "/reload", "/metrics"} <= set(app.openapi()["paths"])
    app.state.service.log.close()
