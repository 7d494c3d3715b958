"""`plus-ultra rl-finetune` through the real entry point, then predict, backtest, walkforward
and report on its run folder; the refusals and --resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.evaluation.backtest import backtest
from tests.rl._finetune_cases import supervised_run


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    torch.set_num_threads(1)
    return supervised_run(tmp_path_factory.mktemp("rl_cli"))


def _has(output: str, text: str) -> bool:
    """``text`` appears in ``output`` however rich wrapped the lines."""
    return "".join(text.split()) in "".join(output.split())


def _finetune(supervised, folder, *extra: str):
    result, _ = supervised
    args = ["rl-finetune", "--checkpoint", str(result.checkpoint_dir), "--device", "cpu"]
    args += ["--num-envs", "4", "--steps-per-rollout", "12", "--output-dir", str(folder)]
    args += [
        "--set",
        "reinforcement.env.episode_length=16",
        "--set",
        "reinforcement.ppo.minibatches=2",
    ]
    return CliRunner().invoke(app, [*args, *extra], env={"COLUMNS": "120"})


def test_finetune_then_predict_backtest_walkforward_report(supervised, tmp_path):
    _, db = supervised
    folder = tmp_path / "rl"
    invoked = _finetune(supervised, folder, "--updates", "2")
    assert invoked.exit_code == 0, invoked.output
    for header in ("update", "reward", "pi_loss", "v_loss", "entropy", "kl", "clip", "ev"):
        assert header in invoked.output
    assert _has(invoked.output, "steps/s") and _has(invoked.output, "2 updates in")
    rollouts = pd.read_parquet(folder / "rollouts.parquet")
    assert rollouts["update"].tolist() == [1, 2]
    for line in (f"policy: {folder / 'policy.pt'}", f"run folder: {folder}"):
        assert _has(invoked.output, line)

    predictions = tmp_path / "predictions.parquet"
    args = ["predict", "--checkpoint", str(folder), "--device", "cpu", "-o", str(predictions)]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exit_code == 0, invoked.output
    frame = pd.read_parquet(predictions)
    assert {"position", "forecast", "value", "realised_return", "sample"} <= set(frame.columns)
    assert frame["position"].between(-1, 1).all() and _has(invoked.output, "out of sample")

    metrics = tmp_path / "metrics.json"
    args = ["backtest", "--predictions", str(predictions), "--cost-bps", "5"]
    invoked = CliRunner().invoke(app, [*args, "--output", str(metrics)])
    assert invoked.exit_code == 0, invoked.output
    expected = backtest(frame[frame["sample"] == "test"], cost_bps=5.0).metrics
    assert json.loads(metrics.read_text())["sharpe"] == pytest.approx(expected["sharpe"])

    per_split, summary = tmp_path / "per_split.parquet", tmp_path / "summary.json"
    args = ["walkforward", "--predictions", str(predictions), "--db", str(db)]
    args += ["--train-window", "20", "--test-window", "10", "--metrics-output", str(per_split)]
    invoked = CliRunner().invoke(app, [*args, "--summary-output", str(summary)])
    assert invoked.exit_code == 0, invoked.output
    report = tmp_path / "report" / "report.html"
    args = ["report", "--predictions", str(predictions), "--walkforward", str(per_split)]
    invoked = CliRunner().invoke(app, [*args, "--summary", str(summary), "--output", str(report)])
    assert invoked.exit_code == 0, invoked.output
    assert report.is_file() and report.with_suffix(".md").is_file()


def test_refusals_and_resume(supervised, tmp_path):
    folder = tmp_path / "rl"
    assert _finetune(supervised, folder, "--updates", "1").exit_code == 0
    again = _finetune(supervised, folder, "--updates", "1")
    assert again.exit_code == 2 and _has(again.output, "already holds a run")
    assert _has(again.output, "pass --resume") and "Traceback" not in again.output
    resumed = _finetune(supervised, folder, "--updates", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert _has(resumed.output, "1 updates in") and _has(resumed.output, "resumed after update 1")
    assert pd.read_parquet(folder / "rollouts.parquet")["update"].tolist() == [1, 2]
    nothing = _finetune(supervised, tmp_path / "none", "--resume")
    assert nothing.exit_code == 2 and _has(nothing.output, "holds no state.pt")
    args = ["rl-finetune", "--checkpoint", str(tmp_path / "missing"), "--device", "cpu"]
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and _has(missing.output, "does not exist")
