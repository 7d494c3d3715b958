"""`plus-ultra retrain` through the real entry point: a run, resume, rollback, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.orchestration.promotion import read_champion

from ..orchestration.test_pipeline import TINY

# every candidate passes: the tests are about the command, not the rules
ALWAYS = (
    *TINY,
    "orchestration.promotion.first_baseline=none",
    "orchestration.promotion.min_sharpe_diff_low=-100",
    "orchestration.promotion.max_drawdown_tolerance=null",
    "orchestration.promotion.max_turnover_ratio=null",
)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("retrain_cli")
    db = root / "market.db"
    write_fixture(db, symbols=["AAA", "BBB"], rows=400, freq="1D", alt_features=0)
    config = root / "tiny.yaml"
    config.write_text("seed: 7\n")
    sets = [arg for item in ALWAYS for arg in ("--set", item)]
    common = ["--dataset", str(db), "--train-config", str(config), "--skip-pretraining", *sets]
    return root, db, common


def test_help_explains_every_option_and_the_rollback_subcommand():
    result = invoke("retrain", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for flag in (
        "--dataset",
        "--train-config",
        "--pretrain-config",
        "--run-reinforcement",
        "--warm-start",
        "--regenerate-regimes",
        "--skip-pretraining",
        "--skip-training",
        "--output-dir",
        "--resume",
        "--from-stage",
        "--push",
        "--watch",
        "rollback",
    ):
        assert flag in text
    assert "Example: plus-ultra retrain --dataset" in text
    assert invoke("retrain", "rollback", "--help").exit_code == 0


def test_a_run_then_resume_then_rollback(setup):
    root, _, common = setup
    out = root / "runs"
    first = invoke("retrain", *common, "--output-dir", str(out))
    assert first.exit_code == 0, first.output
    assert "manifest:" in first.output and "report:" in first.output
    assert "promoted: this run is the champion" in first.output
    run_dir = read_champion(out).run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"][0] == {**manifest["stages"][0], "name": "validate", "status": "done"}

    again = invoke("retrain", "--resume", str(run_dir), "--from-stage", "report")
    assert again.exit_code == 0, again.output
    assert "push" in again.output  # the stage table lists every stage

    refused = invoke("retrain", "rollback", "--output-dir", str(out))
    assert refused.exit_code == 2 and "no previous champion" in refused.output

    pushed = root / "pushed"
    second = invoke("retrain", *common, "--output-dir", str(out), "--push", str(pushed))
    assert second.exit_code == 0, second.output
    newer = read_champion(out).run_dir
    assert newer != run_dir
    assert (pushed / newer.name / "manifest.json").is_file()
    back = invoke("retrain", "rollback", "--output-dir", str(out))
    assert back.exit_code == 0, back.output
    assert read_champion(out).run_dir == run_dir
    assert str(run_dir) in " ".join(back.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "missing --dataset and --train-config"),
        (("--from-stage", "train"), "needs --resume"),
        (("--resume", "nowhere"), "no manifest.json"),
        (("--warm-start", "champion"), "--warm-start 'champion'"),
        (("--watch", "somewhere", "--regenerate-regimes"), "--regenerate-regimes"),
    ],
)
def test_bad_options_are_one_message_and_exit_2(setup, args, message):
    _, db, _ = setup
    extra = ("--dataset", str(db), "--train-config", str(db)) if "--warm-start" in args else ()
    result = invoke("retrain", *extra, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
