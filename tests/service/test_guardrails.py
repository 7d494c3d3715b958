"""Guardrails in the service: cap / flatten / reject, the live book, breach logs and metrics."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.config import GuardrailsConfig
from market_nn_plus_ultra.evaluation.guardrails import apply_guardrails
from market_nn_plus_ultra.service.guard import Guardrails, LiveBook
from tests.service._service_cases import KEY, metric, ready_app, service_config


def _frame(stamp: str, positions: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp(stamp, tz="UTC"),
            "symbol": list(positions),
            "position": list(positions.values()),
        }
    )


@pytest.mark.parametrize(
    "cfg",
    [
        GuardrailsConfig(max_position=0.3),  # the numpy fast path
        GuardrailsConfig(max_position=0.3, max_gross=0.2, max_net=0.1),  # the full rules
    ],
)
def test_served_positions_equal_apply_guardrails(cfg):
    frame = _frame("2021-01-04", {"A": 0.9, "B": -0.1, "C": -0.5})
    result = Guardrails(cfg, LiveBook(10)).apply(frame)
    expected, breaches = apply_guardrails(frame.assign(realised_return=np.nan), cfg)
    np.testing.assert_allclose(result.positions, expected["position"], atol=1e-12)
    assert result.breaches[["symbol", "rule"]].values.tolist() == (
        breaches[["symbol", "rule"]].values.tolist()
    )
    assert list(result.breaches["detail"]) == list(breaches["detail"])
    assert result.action == "cap"


def test_turnover_is_capped_against_the_positions_served_before():
    guard = Guardrails(GuardrailsConfig(max_turnover=0.2), LiveBook(10))
    first = _frame("2021-01-04", {"A": 0.1, "B": -0.1})  # turnover 0.1 from flat: within
    result = guard.apply(first)
    assert result.action == "none"
    guard.record(first, result.positions)
    second = _frame("2021-01-05", {"A": 0.7, "B": -0.1})  # turnover (0.6 + 0) / 2 = 0.3
    result = guard.apply(second)
    # every symbol moves 0.2 / 0.3 of the way: A 0.1 + 0.6·2/3 = 0.5
    np.testing.assert_allclose(result.positions, [0.5, -0.1])
    assert list(result.breaches["rule"]) == ["max_turnover"]
    assert result.breaches["detail"].iloc[0] == "turnover 0.3 > 0.2: trades scaled"


def test_a_live_drawdown_flattens_the_book():
    book = LiveBook(10)
    cfg = GuardrailsConfig(drawdown_stop=0.1)
    guard = Guardrails(cfg, book)
    for day, ret in (("2021-01-04", 0.02), ("2021-01-05", -0.15)):
        frame = _frame(day, {"A": 1.0})
        guard.record(frame, np.array([1.0]))
        book.record_return(pd.Timestamp(day, tz="UTC").value, "A", ret)
    # wealth 1.02 → 0.867: a 15% drawdown from the peak, beyond the 10% stop
    result = guard.apply(_frame("2021-01-06", {"A": 0.8}))
    assert result.positions.tolist() == [0.0]
    assert list(result.breaches["rule"]) == ["drawdown_stop"]


@pytest.fixture(scope="module")
def apps(market_db, run_dir, tmp_path_factory):
    """One app per de-risking action, with a cap every model position breaches."""
    clients = {}
    for action in ("cap", "flatten", "reject"):
        tmp = tmp_path_factory.mktemp(action)
        cfg = service_config(
            market_db, tmp, "guardrails.max_position=0.01", f"guardrails.on_breach={action}"
        )
        clients[action] = TestClient(ready_app(cfg, run_dir))
    yield clients
    for c in clients.values():
        c.close()


def test_cap_serves_the_limited_positions(apps, caplog):
    c = apps["cap"]
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.service"):
        body = c.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
    for p in body["predictions"]:
        assert p["position"] == pytest.approx(np.clip(p["model_position"], -0.01, 0.01))
        assert abs(p["model_position"]) > 0.01
    report = body["guardrails"]
    assert report["action"] == "cap" and {b["rule"] for b in report["breaches"]} == {"max_position"}
    assert report["positions"] == {p["symbol"]: p["position"] for p in body["predictions"]}
    logged = [
        r.fields
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "guardrail_breach"
    ]
    assert {f["symbol"] for f in logged} == {"AAA", "BBB"}
    assert all(
        f["request_id"] == body["request_id"] and f["rule"] == "max_position" for f in logged
    )
    assert metric(c, 'plus_ultra_guardrail_breaches_total{rule="max_position"}') == 2
    assert metric(c, 'plus_ultra_derisk_actions_total{action="cap"}') == 1


def test_flatten_serves_zero_for_breached_symbols(apps):
    body = apps["flatten"].post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
    assert [p["position"] for p in body["predictions"]] == [0.0, 0.0]
    assert body["guardrails"]["action"] == "flatten"


def test_reject_refuses_with_the_breaches(apps):
    c = apps["reject"]
    response = c.post("/predict", json={"symbols": ["AAA"]})
    assert response.status_code == 409
    body = response.json()
    assert "guardrails.on_breach=reject" in body["detail"]
    assert [b["rule"] for b in body["breaches"]] == ["max_position"]
    assert metric(c, 'plus_ultra_derisk_actions_total{action="reject"}') == 1
    # nothing was served: an outcome for it is refused
    outcome = {"request_id": body["request_id"], "realised_return": 0.01}
    answer = c.post("/outcomes", json={"outcomes": [outcome]}, headers={"X-API-Key": KEY})
    assert answer.json()["unmatched"][0]["reason"].endswith("nothing was served")
