"""Monitoring: positions, freshness and model-age metrics, the drift of served rows,
live calibration against the training diagnostics, and JSON breach logs."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from market_nn_plus_ultra.cli._common import _JsonFormatter
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.service.drift import (
    DriftReport,
    FeatureDrift,
    population_stability_index,
)
from market_nn_plus_ultra.service.metrics import POSITION_BUCKETS, ServiceMetrics
from market_nn_plus_ultra.service.outcomes import Expectation, LiveTracker
from market_nn_plus_ultra.service.predictor import ModelOutputs
from market_nn_plus_ultra.training.drift_reference import (
    DRIFT_REFERENCE_FILE,
    bin_index,
    load_drift_reference,
)
from tests.service._service_cases import KEY, bars_from_db, metric, ready_app, service_config

AUTH = {"X-API-Key": KEY}
GIVES_FEATURES = "features" in {f.name for f in dataclasses.fields(ModelOutputs)}


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(
        market_db,
        tmp_path_factory.mktemp("monitoring"),
        "service.drift_window=10",
        "service.drift_min_rows=3",
    )
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


def test_drift_reads_unavailable_until_enough_rows(market_db, run_dir, tmp_path):
    app = ready_app(service_config(market_db, tmp_path), run_dir)
    with TestClient(app) as c:
        body = c.get("/drift").json()
        assert body["available"] is False and body["source"] == "checkpoint"
        assert body["reason"] == "0 served rows so far; drift is measured from 100"
        assert metric(c, "plus_ultra_drift_available") == 0
        assert "plus_ultra_feature_drift_psi{" not in c.get("/metrics").text
        # no prediction yet: freshness is unknown (NaN), not 1970
        assert np.isnan(metric(c, "plus_ultra_input_bar_timestamp_seconds"))
    app.state.service.log.close()


def test_positions_freshness_and_model_age(client, market_db, run_dir):
    first = client.post("/predict", json={"symbols": ["AAA", "BBB"], "as_of": "2020-02-03"}).json()
    agent = client.app.state.service.holder.current.agent
    bars = bars_from_db(agent, market_db, tail=80)
    bars = [b for b in bars if b["symbol"] == "AAA"]
    second = client.post("/predict", json={"bars": bars}).json()
    served = [p["position"] for p in first["predictions"] + second["predictions"]]
    assert metric(client, "plus_ultra_position_count") == len(served) == 3
    assert metric(client, "plus_ultra_position_sum") is None  # no _sum with negative buckets
    for le in POSITION_BUCKETS:
        count = metric(client, f'plus_ultra_position_bucket{{le="{le}"}}')
        assert count == sum(p <= le for p in served), le
    last = [p["position"] for p in second["predictions"]]
    assert metric(client, "plus_ultra_gross_exposure") == pytest.approx(np.mean(np.abs(last)))
    assert metric(client, "plus_ultra_net_exposure") == pytest.approx(np.mean(last))
    newest = pd.Timestamp(bars[-1]["timestamp"]).timestamp()
    assert metric(client, "plus_ultra_input_bar_timestamp_seconds") == newest
    # an older as_of afterwards does not rewind the freshness
    client.post("/predict", json={"symbols": ["AAA"], "as_of": "2020-01-06"})
    assert metric(client, "plus_ultra_input_bar_timestamp_seconds") == newest
    info = json.loads((run_dir / "model_info.json").read_text())
    data_end = pd.Timestamp(info["data_end"]).timestamp()
    assert metric(client, "plus_ultra_model_data_end_timestamp_seconds") == data_end


def test_live_outcomes_and_roi_z_are_exported(client):
    body = client.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()
    outcomes = [
        {"request_id": body["request_id"], "symbol": s, "realised_return": r}
        for s, r in (("AAA", 0.01), ("BBB", -0.02))
    ]
    live = client.post("/outcomes", json={"outcomes": outcomes}, headers=AUTH).json()["live"]
    assert metric(client, "plus_ultra_live_outcomes") == live["n"] >= 2
    assert metric(client, "plus_ultra_roi_drift_z") == pytest.approx(live["roi_drift_z"])
    assert metric(client, "plus_ultra_roi_drift") == pytest.approx(live["roi_drift"])


@pytest.mark.skipif(
    not GIVES_FEATURES,
    reason="service.predictor.ModelOutputs has no `features` (the model's input rows at the "
    "predicted bars) yet: the drift window has nothing to observe",
)
def test_the_drift_window_holds_the_served_input_rows(client, market_db, run_dir):
    state = client.app.state.service
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    tensors = agent.tensors(market_db)
    days = ("2020-02-10", "2020-02-11", "2020-02-12", "2020-02-13", "2020-02-14", "2020-02-18")
    expected = []
    for day in days:
        body = client.post("/predict", json={"symbols": ["AAA", "BBB"], "as_of": day}).json()
        for p in body["predictions"]:
            t = tensors.timestamps.get_loc(pd.Timestamp(p["timestamp"]))
            expected.append(tensors.inputs[t, tensors.symbols.index(p["symbol"])])
    np.testing.assert_allclose(state.drift.rows(), np.array(expected)[-10:], rtol=1e-5, atol=1e-6)
    body = client.get("/drift").json()
    assert body["available"] and body["rows"] == 10
    ref = load_drift_reference(run_dir / DRIFT_REFERENCE_FILE)
    window = np.array(expected)[-10:]
    f = ref.features.index("rsi_14")
    shares = np.bincount(bin_index(window[:, f], ref.edges[f]), minlength=len(ref.edges[f]) + 1)
    psi = population_stability_index(shares / 10, ref.expected[f])
    got = {d["feature"]: d for d in body["features"]}
    assert got["rsi_14"]["psi"] == pytest.approx(psi, rel=1e-5)
    assert [d["psi"] for d in body["features"]] == sorted(
        (d["psi"] for d in body["features"]), reverse=True
    )
    assert metric(client, 'plus_ultra_feature_drift_psi{feature="rsi_14"}') == pytest.approx(
        got["rsi_14"]["psi"]
    )
    assert metric(client, "plus_ultra_drift_window_rows") == 10
    assert metric(client, "plus_ultra_regime_shift") == int(body["regime_shift"])


def test_breaches_are_json_log_lines_with_the_request_id(market_db, run_dir, tmp_path, caplog):
    cfg = service_config(market_db, tmp_path, "guardrails.max_position=0.01")
    app = ready_app(cfg, run_dir)
    with TestClient(app) as c, caplog.at_level(logging.WARNING, "market_nn_plus_ultra.service"):
        body = c.post(
            "/predict", json={"symbols": ["AAA"]}, headers={"X-Request-ID": "desk-42"}
        ).json()
    lines = [
        json.loads(_JsonFormatter().format(r))
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "guardrail_breach"
    ]
    assert len(lines) == 1 and body["request_id"] == "desk-42"
    line = lines[0]
    assert line["request_id"] == "desk-42" and line["rule"] == "max_position"
    assert line["model_version"] == body["model_version"] and line["action"] == "cap"
    assert line["level"] == "warning" and line["symbol"] == "AAA"
    assert line["before"] == pytest.approx(body["predictions"][0]["model_position"])
    app.state.service.log.close()


# --------------------------------------------------------------------------------------
# Live calibration (the training diagnostics' estimators)
# --------------------------------------------------------------------------------------

#: (prob_down, prob_flat, prob_up), realised return; flat_band 0, 10 bins.
_PROBS = [
    ((0.1, 0.2, 0.7), 0.01),  # up, predicted up: hit at confidence 0.7
    ((0.6, 0.3, 0.1), 0.02),  # up, predicted down: miss at 0.6
    ((0.2, 0.2, 0.6), -0.01),  # down, predicted up: miss at 0.6
    ((0.05, 0.15, 0.8), 0.03),  # up, predicted up: hit at 0.8
]


def _outputs(probs=None, quantiles=None) -> str:
    out = {}
    if probs is not None:
        out.update(zip(("prob_down", "prob_flat", "prob_up"), probs, strict=True))
    if quantiles is not None:
        out.update(zip(("q05", "q50", "q95"), quantiles, strict=True))
    return json.dumps(out)


def test_live_ece_and_quantile_coverage_by_hand():
    tracker = LiveTracker(calibration_window=100)
    tracker.set_expectation("v1", Expectation(ece=0.1, quantile_coverage_error=0.05))
    for probs, realised in _PROBS:
        tracker.add("v1", 1.0, 0.0, _outputs(probs=probs), realised)
    stats = tracker.stats("v1")
    # bins: 0.6 and 0.6 (no hits): |0 - 1.2|; 0.7 and 0.8 (hits): |2 - 1.5| → 1.7 / 4
    assert stats.ece == pytest.approx(0.425) and stats.expected_ece == 0.1
    assert stats.ece_drift == pytest.approx(0.325) and stats.calibration_n == 4
    assert stats.quantile_coverage_error is None

    bands = LiveTracker(calibration_window=100)
    bands.set_expectation("v1", Expectation(quantile_coverage_error=0.05))
    for realised in (0.01, 0.03, -0.01, 0.005):
        bands.add("v1", 1.0, 0.0, _outputs(quantiles=(-0.02, 0.0, 0.02)), realised)
    stats = bands.stats("v1")
    # at or below q05: 0/4 (|0 - .05|), q50: 1/4 (|.25 - .5|), q95: 3/4 (|.75 - .95|)
    assert stats.quantile_coverage_error == pytest.approx((0.05 + 0.25 + 0.2) / 3)
    assert stats.quantile_coverage_error_drift == pytest.approx(0.5 / 3 - 0.05)


def test_calibration_uses_the_newest_outcomes_and_the_flat_band():
    tracker = LiveTracker(calibration_window=2)
    # a flat band of 0.015 makes the 0.01 return "flat": the first outcome would miss
    tracker.set_expectation("v1", Expectation(flat_band=0.015))
    for probs, realised in _PROBS:
        tracker.add("v1", 1.0, 0.0, _outputs(probs=probs), realised)
    stats = tracker.stats("v1")
    # the newest two: (0.6 miss, 0.8 hit) → (|0 - .6| + |1 - .8|) / 2 in bins 5 and 7
    assert stats.calibration_n == 2 and stats.ece == pytest.approx(0.4)
    assert stats.n == 4  # the ROI sums keep every outcome
    flat = LiveTracker(calibration_window=10)
    flat.set_expectation("v1", Expectation(flat_band=0.015))
    flat.add("v1", 1.0, 0.0, _outputs(probs=(0.1, 0.2, 0.7)), 0.01)
    assert flat.stats("v1").ece == pytest.approx(0.7)  # labelled flat: a miss at 0.7


def test_calibration_gauges_follow_the_live_statistics():
    tracker = LiveTracker()
    tracker.set_expectation("v1", Expectation(ece=0.1))
    for probs, realised in _PROBS:
        tracker.add("v1", 1.0, 0.0, _outputs(probs=probs), realised)
    metrics = ServiceMetrics()
    metrics.publish_live(tracker.stats("v1"))
    text = generate_latest(metrics.registry).decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("plus_ultra_calibration")
    }
    assert samples == {
        'plus_ultra_calibration_error{statistic="ece"}': pytest.approx(0.425),
        'plus_ultra_calibration_drift{statistic="ece"}': pytest.approx(0.325),
    }  # quantile coverage is unknown: no series, not a zero


def test_the_expectation_reads_the_last_validation_calibration(tmp_path):
    frame = pd.DataFrame(
        {
            "kind": ["step", "validation", "step", "validation"],
            "ece": [np.nan, 0.2, np.nan, 0.12],
            "quantile_coverage_error": [np.nan, 0.03, np.nan, np.nan],
        }
    )
    frame.to_parquet(tmp_path / "diagnostics.parquet")
    e = Expectation.from_run(tmp_path)
    assert e.ece == 0.12 and e.quantile_coverage_error == 0.03 and e.mean_return is None


def test_drift_gauges_follow_the_report():
    metrics = ServiceMetrics()
    base = {"source": "checkpoint", "rows": 5, "window": 10, "min_rows": 2, "psi_threshold": 0.25}
    both = [FeatureDrift("a", 0.3, 0.2), FeatureDrift("b", 0.05, 0.1)]
    metrics.publish_drift(DriftReport(True, None, features=both, drifted=["a"], **base))
    text = generate_latest(metrics.registry).decode()
    assert 'plus_ultra_feature_drift_psi{feature="a"} 0.3' in text
    assert 'plus_ultra_feature_drift_ks{feature="b"} 0.1' in text
    assert "plus_ultra_drifted_features 1.0" in text and "plus_ultra_regime_shift 0.0" in text
    metrics.publish_drift(DriftReport(False, "no reference", **base))
    text = generate_latest(metrics.registry).decode()
    assert 'feature="a"' not in text and 'feature="b"' not in text
    assert "plus_ultra_drift_available 0.0" in text and "plus_ultra_regime_shift NaN" in text
