"""deploy/grafana/dashboard.json: it parses, lays out, covers what an operator watches,
and every query names only metrics the service exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy._promql import promql_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboard.json"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, variable query and annotation."""
    out = [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"${var['name']}", var["query"]["query"]))
    out += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    return out


def test_the_metric_name_reader():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{le="0.1",x=~"$i"}'
        "[$__rate_interval]))) / on (job) group_left b_total offset 5m and time() - c > 1e3"
    )
    assert promql_metrics(expr) == {"a_bucket", "b_total", "c"}
    assert promql_metrics("label_values(plus_ultra_requests_total, instance)") == {
        "plus_ultra_requests_total"
    }


def test_the_dashboard_parses_and_lays_out(dashboard):
    panels = _panels(dashboard)
    assert dashboard["uid"] == "plus-ultra-service" and len(panels) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_the_dashboard_covers_what_operators_watch(dashboard):
    text = " ".join(q for _, q in _queries(dashboard))
    for needle in (
        "plus_ultra_request_duration_seconds_bucket",  # latency
        "rate(plus_ultra_requests_total",  # throughput
        'status=~"5.."',  # errors
        "plus_ultra_roi_drift",
        "plus_ultra_calibration_drift",
        "plus_ultra_feature_drift_psi",
        "plus_ultra_regime_shift",
        "plus_ultra_guardrail_breaches_total",
        "plus_ultra_derisk_actions_total",
        "plus_ultra_position_bucket",
    ):
        assert needle in text, needle


def test_every_query_names_only_exported_metrics(dashboard, exported_metrics):
    assert {"plus_ultra_position_bucket", "plus_ultra_feature_drift_psi"} <= exported_metrics
    for where, expr in _queries(dashboard):
        unknown = promql_metrics(expr) - exported_metrics
        assert not unknown, f"{where}: {expr} reads {unknown}, which the service does not export"
