"""`plus-ultra predict` through the real entry point on a tiny trained run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.training import train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    db = fixture_db(tmp, rows=300)
    return train(tiny_config(db, tmp / "run")), db


def _has(output: str, text: str) -> bool:
    """``text`` appears in ``output`` however rich wrapped the lines."""
    return "".join(text.split()) in "".join(output.split())


def test_predict_writes_predictions_and_metrics(run, tmp_path):
    result, _ = run
    output, metrics = tmp_path / "out" / "predictions.parquet", tmp_path / "metrics.json"
    args = ["predict", "--checkpoint", str(result.checkpoint_dir), "--device", "cpu"]
    args += ["-o", str(output), "--metrics-output", str(metrics), "--cost-bps", "10"]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exit_code == 0, invoked.output
    frame = pd.read_parquet(output)
    assert {"timestamp", "symbol", "position", "forecast", "realised_return"} <= set(frame.columns)
    assert str(frame["timestamp"].dt.tz) == "UTC" and frame["benchmark_return"].notna().any()
    tested = pd.read_parquet(result.test_predictions)
    merged = tested.merge(frame, on=["timestamp", "symbol"], suffixes=("_run", ""))
    assert len(merged) == len(tested)
    np.testing.assert_allclose(merged["position"], merged["position_run"], atol=1e-6)
    written = json.loads(metrics.read_text())
    # only the bars the run never trained or validated on are scored, and it says so
    assert set(frame["sample"]) == {"train", "val", "test"}
    held_out = frame[frame["sample"] == "test"]
    assert held_out["timestamp"].min() > frame.loc[frame["sample"] == "val", "timestamp"].max()
    expected = backtest(held_out, cost_bps=10.0).metrics
    assert written["n_periods"] == expected["n_periods"] > 20
    assert written["sample"].startswith("out of sample")
    assert _has(invoked.output, f"{held_out['timestamp'].min():%Y-%m-%d}")
    assert written["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-9)
    assert written["total_return"] == pytest.approx(expected["total_return"], rel=1e-9)
    assert _has(invoked.output, "sharpe") and _has(invoked.output, str(output))
    assert _has(invoked.output, str(metrics))
    assert not list(output.parent.glob(".*.tmp"))  # the atomic write left no temp file


def test_predict_csv_markdown_range_and_no_eval(run, tmp_path):
    result, db = run
    ckpt = str(result.best_checkpoint)
    output, table = tmp_path / "p.csv", tmp_path / "m.md"
    args = ["predict", "--checkpoint", ckpt, "--db", str(db), "--symbols", "AAA"]
    args += ["--start", "2019-06-01", "--end", "2019-06-30", "--device", "cpu"]
    invoked = CliRunner().invoke(app, [*args, "-o", str(output), "--metrics-output", str(table)])
    assert invoked.exit_code == 0, invoked.output
    frame = pd.read_csv(output, parse_dates=["timestamp"])
    if not frame["sample"].isin(["test", "unseen"]).any():  # a month of training bars
        assert _has(invoked.output, "trained or validated on") and not table.exists()
        flag = ["--include-in-sample", "-o", str(output), "--metrics-output", str(table)]
        invoked = CliRunner().invoke(app, [*args, *flag])
        assert invoked.exit_code == 0 and _has(invoked.output, "includes in-sample bars")
    assert set(frame["symbol"]) == {"AAA"}
    assert frame["timestamp"].min() >= pd.Timestamp("2019-06-01", tz="UTC")
    assert frame["timestamp"].max() <= pd.Timestamp("2019-06-30", tz="UTC")
    lines = table.read_text().splitlines()
    assert lines[0] == "| metric | value |" and any(line.startswith("| sharpe |") for line in lines)
    quiet = tmp_path / "q.parquet"
    invoked = CliRunner().invoke(app, [*args, "-o", str(quiet), "--no-eval"])
    assert invoked.exit_code == 0 and quiet.exists()
    assert "sharpe" not in invoked.output


def test_predict_metrics_csv(run, tmp_path):
    result, _ = run
    metrics = tmp_path / "m.csv"
    args = ["predict", "--checkpoint", str(result.checkpoint_dir), "--device", "cpu"]
    args += ["-o", str(tmp_path / "p.parquet"), "--metrics-output", str(metrics)]
    args += ["--set", "evaluation.cost_bps=0"]
    assert CliRunner().invoke(app, args).exit_code == 0
    table = pd.read_csv(metrics).set_index("metric")["value"]
    assert float(table["cost_bps"]) == 0.0 and float(table["n_periods"]) > 20
    assert table["sample"].startswith("out of sample")


def test_predict_clean_errors(run, tmp_path):
    result, _ = run
    base = ["predict", "--device", "cpu"]
    missing = CliRunner().invoke(app, [*base, "--checkpoint", str(tmp_path / "gone")])
    assert missing.exit_code == 2 and _has(missing.output, "does not exist")
    suffix = ["--checkpoint", str(result.checkpoint_dir), "-o", str(tmp_path / "p.txt")]
    bad = CliRunner().invoke(app, [*base, *suffix])
    assert bad.exit_code == 2 and _has(bad.output, "unsupported extension")
    bench = ["--checkpoint", str(result.checkpoint_dir), "--benchmark", "equal_weigth"]
    typo = CliRunner().invoke(app, [*base, *bench, "-o", str(tmp_path / "p.parquet")])
    assert typo.exit_code == 2 and _has(typo.output, "Did you mean 'equal_weight'")
    assert "Traceback" not in typo.output
