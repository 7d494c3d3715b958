"""The API key: none configured, none sent, wrong, right (both headers)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.service import create_app
from tests.service._service_cases import KEY, ready_app, service_config

MUTATING = [
    ("post", "/reload", {}),
    ("post", "/outcomes", {"outcomes": [{"request_id": "r", "realised_return": 0.0}]}),
    ("put", "/curriculum", {"profile": None}),
]


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(market_db, tmp_path_factory.mktemp("auth"))
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "body"), MUTATING)
def test_mutating_endpoints_need_the_key(client, method, path, body):
    call = getattr(client, method)
    missing = call(path, json=body)
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = call(path, json=body, headers={"X-API-Key": KEY + "x"})
    assert wrong.status_code == 403 and "wrong API key" in wrong.json()["detail"]
    not_ascii = call(path, json=body, headers={"Authorization": "Bearer clé".encode("latin-1")})
    assert not_ascii.status_code == 403
    assert call(path, json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert call(path, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_reads_need_no_key(client):
    for path in ("/health", "/ready", "/config", "/curriculum", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.post("/predict", json={"symbols": ["AAA"]}).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), MUTATING)
def test_without_a_configured_key_mutating_endpoints_refuse(
    market_db, run_dir, tmp_path, method, path, body
):
    cfg = service_config(market_db, tmp_path, "service.api_key_env=PLUS_ULTRA_UNSET_KEY")
    app = create_app(cfg, run_dir)  # no lifespan, no model: the key is checked first
    response = getattr(TestClient(app), method)(path, json=body, headers={"X-API-Key": KEY})
    app.state.service.log.close()
    assert response.status_code == 403
    assert "no API key is configured" in response.json()["detail"]
    assert "PLUS_ULTRA_UNSET_KEY" in response.json()["detail"]
