"""``plus-ultra backtest`` through the real entry point, on predictions written in the test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.metrics import METRIC_KEYS


@pytest.fixture(scope="module")
def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    ts = pd.date_range("2024-01-02", periods=90, freq="B", tz="UTC")
    n = len(ts) * 2
    frame = pd.DataFrame(
        {
            "timestamp": np.repeat(ts, 2),
            "symbol": np.tile(["AAA", "BBB"], len(ts)),
            "position": rng.uniform(-1, 1, n),
            "forecast": rng.normal(0, 0.01, n),
            "realised_return": rng.normal(0.0005, 0.01, n),
            "dollar_volume": 5e6,
        }
    )
    frame.loc[frame.timestamp == ts[-1], "realised_return"] = np.nan
    return frame


def _invoke(*args: str):
    result = CliRunner().invoke(app, ["backtest", *args])
    result.text = " ".join(result.output.split())  # rich wraps lines at the terminal width
    return result


def test_convention_metrics_json(tmp_path, predictions):
    path = tmp_path / "p.parquet"
    predictions.to_parquet(path)
    out = tmp_path / "out" / "metrics.json"
    result = _invoke("-p", str(path), "--cost-bps", "8", "-o", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    expected = backtest(predictions, cost_bps=8).metrics
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-12), key
    assert metrics["simulator"] is False and "scenarios" not in metrics
    assert "sharpe" in result.text and str(out) in result.text


def test_simulator_with_scenarios_from_csv(tmp_path, predictions):
    path = tmp_path / "p.csv"
    predictions.to_csv(path, index=False)
    out = tmp_path / "m.json"
    result = _invoke(
        "-p",
        str(path),
        "--simulator",
        "--scenarios",
        "40",
        "--seed",
        "4",
        "--set",
        "simulation.impact_coef=0.5",
        "--set",
        "simulation.scenario_crash=-0.1",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["simulator"] is True and metrics["cost_impact"] > 0
    plain = backtest(predictions, cost_bps=5.0).metrics  # simulation.cost_bps default
    assert metrics["total_return"] < plain["total_return"]
    scen = metrics["scenarios"]
    assert scen["n"] == 40 and scen["crash"] == -0.1
    assert set(scen["percentiles"]) == {
        "total_return",
        "cagr",
        "volatility",
        "sharpe",
        "max_drawdown",
    }
    tr = scen["percentiles"]["total_return"]
    assert tr["p5"] <= tr["p50"] <= tr["p95"]
    assert "Stress scenarios" in result.text


def test_convention_scenarios_match_plain_history(tmp_path, predictions):
    path = tmp_path / "p.parquet"
    predictions.to_parquet(path)
    out = tmp_path / "m.json"
    result = _invoke(
        "-p",
        str(path),
        "--scenarios",
        "3",
        "--set",
        "simulation.scenario_resample=false",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    p50 = metrics["scenarios"]["percentiles"]["total_return"]["p50"]
    assert p50 == pytest.approx(metrics["total_return"], rel=1e-5)


def test_clear_errors(tmp_path, predictions):
    path = tmp_path / "p.parquet"
    predictions.rename(columns={"realised_return": "realized_return"}).to_parquet(path)
    result = _invoke("-p", str(path), "-o", str(tmp_path / "m.json"))
    assert result.exit_code == 2
    assert "no column 'realised_return'" in result.text and "realized_return" in result.text
    assert "Traceback" not in result.output
    missing = _invoke("-p", str(tmp_path / "nope.parquet"))
    assert missing.exit_code == 2 and "does not exist" in missing.text
    bad = tmp_path / "p.txt"
    bad.write_text("x")
    assert "unsupported extension" in _invoke("-p", str(bad)).text
    garbage = tmp_path / "g.parquet"
    garbage.write_text("not parquet")
    assert "could not be read" in _invoke("-p", str(garbage)).text
    cap_out = tmp_path / "cap.json"
    cap = _invoke(
        "-p",
        str(path),
        "--simulator",
        "--return-column",
        "realized_return",
        "--set",
        "simulation.participation_cap=0.1",
        "-o",
        str(cap_out),
    )
    assert cap.exit_code == 0, cap.output  # dollar_volume is in the file
    assert json.loads(cap_out.read_text())["n_periods"] == 89


def test_only_out_of_sample_bars_are_scored_by_default(tmp_path, predictions):
    labelled = predictions.assign(sample="train")
    held_out = labelled["timestamp"] >= labelled["timestamp"].unique()[60]
    labelled.loc[held_out, "sample"] = "test"
    path = tmp_path / "labelled.parquet"
    labelled.to_parquet(path)
    out = tmp_path / "m.json"
    result = _invoke("-p", str(path), "-o", str(out), "--cost-bps", "5")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    expected = backtest(labelled[held_out], cost_bps=5).metrics
    assert metrics["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-12)
    assert metrics["n_periods"] == expected["n_periods"] == 29
    assert metrics["sample"]["scored"] == "out_of_sample" and metrics["sample"]["n_left_out"] == 60
    assert "out of sample 2024-03-26 .. 2024-05-06, 30 bars; 60 in-sample bars left out" in (
        result.text
    )
    everything = _invoke("-p", str(path), "-o", str(out), "--include-in-sample")
    assert everything.exit_code == 0 and "includes in-sample bars" in everything.text
    assert json.loads(out.read_text())["n_periods"] == 89
    # a user's own file without the column is scored as given, with a notice
    predictions.to_parquet(tmp_path / "own.parquet")
    plain = _invoke("-p", str(tmp_path / "own.parquet"), "-o", str(out))
    assert plain.exit_code == 0 and "scored as given" in plain.text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(position=f["position"].where(f.index != 5, 3.0)), "outside [-1, 1]"),
        (lambda f: f.assign(position=f["position"].where(f.index != 5, -7.5)), "(-7.5)"),
        (lambda f: f.assign(position=f["position"].where(f.index != 5, np.inf)), "infinite"),
        (lambda f: pd.concat([f, f.iloc[[5]]]).sort_values(["timestamp"]), "duplicated"),
        (lambda f: f.iloc[::-1], "not sorted"),
    ],
)
def test_contract_breaches_are_refused(tmp_path, predictions, edit, message):
    path = tmp_path / "bad.parquet"
    edit(predictions).to_parquet(path)
    result = _invoke("-p", str(path), "-o", str(tmp_path / "m.json"))
    assert result.exit_code == 2 and message in result.text and "Traceback" not in result.text
    assert not (tmp_path / "m.json").exists()


def test_clip_positions_on_request(tmp_path, predictions):
    path = tmp_path / "big.parquet"
    predictions.assign(position=predictions["position"] * 3).to_parquet(path)
    out = tmp_path / "m.json"
    result = _invoke("-p", str(path), "-o", str(out), "--clip-positions", "--cost-bps", "0")
    assert result.exit_code == 0, result.output
    clipped = predictions.assign(position=(predictions["position"] * 3).clip(-1, 1))
    assert json.loads(out.read_text())["sharpe"] == pytest.approx(
        backtest(clipped).metrics["sharpe"]
    )
