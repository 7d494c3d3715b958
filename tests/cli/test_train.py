"""`plus-ultra train` through the real entry point on a tiny database."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from tests.training._train_cases import TINY, fixture_db


def test_train_command_writes_a_run(tmp_path):
    db = fixture_db(tmp_path, rows=300)
    run = tmp_path / "run"
    sets = [f"data.sqlite_path={db}", "data.cache=false", f"training.checkpoint_dir={run}", *TINY]
    args = ["train", "--max-epochs", "1", "--model-dim", "16", "--accelerator", "cpu"]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (run / "best.ckpt").exists() and (run / "last.ckpt").exists()
    assert "test_ic" in json.loads((run / "metrics.json").read_text())["metrics"]
    assert str(run) in result.output


def test_train_command_reports_a_missing_checkpoint(tmp_path):
    db = fixture_db(tmp_path, rows=300)
    args = ["train", "--resume", str(tmp_path / "gone.ckpt")]
    for item in [f"data.sqlite_path={db}", "data.cache=false", *TINY]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "no such checkpoint" in " ".join(result.output.split())
