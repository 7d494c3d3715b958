"""deploy/prometheus/alerts.yml: valid rules (promtool), passing rule unit tests, metrics
the service exports, and a runbook in docs/operations.md for every alert."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from market_nn_plus_ultra.service.metrics import LATENCY_BUCKETS
from tests.deploy._promql import promql_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
#: Series Prometheus itself writes for every scrape target.
SCRAPE_SERIES = {"up"}


def _promtool() -> str | None:
    """promtool on PATH, else the one `make test` unpacks into the virtualenv."""
    found = shutil.which("promtool")
    local = Path(sys.prefix) / "bin" / "promtool"
    return found or (str(local) if local.is_file() else None)


needs_promtool = pytest.mark.skipif(
    _promtool() is None,
    reason="promtool not found: `make test` unpacks it from Debian's prometheus package "
    "(apt-get) into .venv/bin; install that package to run these checks",
)


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [r for r in _rules() if "alert" in r]


def test_the_expected_alerts_exist():
    names = {r["alert"] for r in _alerts()}
    assert names == {
        "PlusUltraErrorBudgetFastBurn",
        "PlusUltraErrorBudgetSlowBurn",
        "PlusUltraLatencyBudgetFastBurn",
        "PlusUltraLatencyBudgetSlowBurn",
        "PlusUltraDown",
        "PlusUltraNoModel",
        "PlusUltraReloadRefused",
        "PlusUltraDataStale",
        "PlusUltraModelStale",
        "PlusUltraFeatureDrift",
        "PlusUltraRegimeShift",
        "PlusUltraGuardrailBreachRate",
        "PlusUltraDrawdownStop",
        "PlusUltraROIDrift",
        "PlusUltraCalibrationDrift",
    }


def test_every_alert_has_a_severity_and_a_runbook():
    headings = {
        m.group(1).strip()
        for m in re.finditer(r"^#{2,4} (.+)$", OPERATIONS.read_text(), re.MULTILINE)
    }
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no runbook heading for {name}"


def test_burn_rate_windows_follow_the_sre_workbook():
    """Page at 14.4x over 1h and 5m, ticket at 6x over 6h and 30m, for both SLOs."""
    by_name = {r["alert"]: r for r in _alerts()}
    for slo, metric, budget in (
        ("Error", "plus_ultra:request_errors", "0.001"),
        ("Latency", "plus_ultra:predict_slow", "0.01"),
    ):
        fast = by_name[f"PlusUltra{slo}BudgetFastBurn"]["expr"]
        slow = by_name[f"PlusUltra{slo}BudgetSlowBurn"]["expr"]
        for window in ("1h", "5m"):
            assert f"{metric}:ratio_rate{window} > (14.4 * {budget})" in fast
        for window in ("6h", "30m"):
            assert f"{metric}:ratio_rate{window} > (6 * {budget})" in slow


def test_rules_read_only_metrics_the_service_exports(exported_metrics):
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        unknown = promql_metrics(rule["expr"]) - exported_metrics - recorded - SCRAPE_SERIES
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads {unknown}"
    # the latency SLI reads the 100 ms bucket: it must be one of the histogram's bounds
    buckets = set(re.findall(r'\ble="([^"]+)"', RULES.read_text()))
    assert buckets and all(float(b) in LATENCY_BUCKETS for b in buckets)


@needs_promtool
def test_promtool_checks_the_rules():
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    done = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
