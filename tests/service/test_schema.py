"""Property-based: inputs generated from the app's own OpenAPI schema, valid and invalid,
never cause a 5xx, and every response matches the schema (schemathesis, in process)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402  (comes with schemathesis)
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from tests.service._service_cases import KEY, ready_app, service_config  # noqa: E402

OPERATIONS = [
    ("/predict", "POST"),
    ("/outcomes", "POST"),
    ("/reload", "POST"),
    ("/curriculum", "PUT"),
    ("/curriculum", "GET"),
    ("/config", "GET"),
    ("/health", "GET"),
    ("/ready", "GET"),
    ("/metrics", "GET"),
]


@pytest.fixture(scope="module")
def api_schema(market_db, run_dir, tmp_path_factory):
    app = ready_app(service_config(market_db, tmp_path_factory.mktemp("schema")), run_dir)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.service.log.close()


def test_every_route_is_in_the_schema(api_schema):
    listed = {(path, method.upper()) for path, methods in api_schema.items() for method in methods}
    assert set(OPERATIONS) <= listed


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_generated_input_is_a_server_error(api_schema, path, method):
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    def check(case):
        # with the key, so the mutating endpoints validate their bodies too
        case.call_and_validate(
            headers={"X-API-Key": KEY}, checks=[not_a_server_error, response_schema_conformance]
        )

    check()


@pytest.fixture(scope="module")
def deep(api_schema, market_db, run_dir):
    """A client and a valid bars request to perturb: the generated requests above rarely
    carry enough bars to reach the features and the model."""
    from fastapi.testclient import TestClient

    from market_nn_plus_ultra.inference import Agent
    from tests.service._service_cases import bars_from_db

    bars = bars_from_db(Agent.from_checkpoint(run_dir, device="cpu"), market_db, tail=72)
    return TestClient(api_schema.app), [b for b in bars if b["symbol"] == "AAA"]


_NUMBER = st.one_of(
    st.floats(min_value=1e-300, max_value=1e300),
    st.sampled_from([0.0, 1e-12, 1e12, 1e300]),
)


@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_perturbed_bars_are_served_or_refused_never_a_server_error(deep, data):
    client, bars = deep
    bars = [dict(b) for b in bars]
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(bars) - 1))
        field = data.draw(st.sampled_from(sorted(set(bars[0]) - {"timestamp", "symbol"})))
        bars[i][field] = data.draw(_NUMBER)
    if data.draw(st.booleans()):
        step = data.draw(st.sampled_from(["1min", "1h", "7D"]))
        stamps = pd.date_range("2000-01-01", periods=len(bars), freq=step, tz="UTC")
        for bar, stamp in zip(bars, stamps, strict=True):
            bar["timestamp"] = stamp.isoformat()
    response = client.post("/predict", json={"bars": bars})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        [row] = response.json()["predictions"]
        assert -1 <= row["position"] <= 1 and math.isfinite(row["forecast"])
