"""The service tests' trained run, and the metric names a running service exports."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.training.drift_reference import (
    DRIFT_REFERENCE_FILE,
    load_drift_reference,
)
from tests.deploy._promql import registry_names
from tests.service._service_cases import KEY, bars_from_db, ready_app, service_config
from tests.service.conftest import api_key, market_db, run_dir  # noqa: F401 (fixtures)


@pytest.fixture(scope="session")
def exported_metrics(market_db, run_dir, tmp_path_factory) -> set[str]:  # noqa: F811
    """Sample names of a service's registry after predictions in both modes, guardrail
    breaches, outcomes, a refused reload, an unknown route and a drift window."""
    cfg = service_config(
        market_db,
        tmp_path_factory.mktemp("exported"),
        "guardrails.max_position=0.01",
        "service.drift_window=10",
        "service.drift_min_rows=2",
    )
    app = ready_app(cfg, run_dir)
    state = app.state.service
    with TestClient(app) as c:
        body = c.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
        bars = bars_from_db(state.holder.current.agent, market_db, tail=80)
        c.post("/predict", json={"bars": bars})
        outcome = {"request_id": body["request_id"], "symbol": "AAA", "realised_return": 0.01}
        c.post("/outcomes", json={"outcomes": [outcome]}, headers={"X-API-Key": KEY})
        c.post("/reload", json={"checkpoint": "/nonexistent"}, headers={"X-API-Key": KEY})
        c.get("/nowhere")
        if not len(state.drift.rows()):  # a predictor that gives no input rows
            reference = load_drift_reference(run_dir / DRIFT_REFERENCE_FILE)
            state.drift.observe(reference.quantiles.T[:5])  # (5, F) training-like rows
        c.get("/metrics")
        names = registry_names(state.metrics.registry)
    state.log.close()
    return names
