"""``plus-ultra demo``: real data in, validated databases, a trained model and a report out."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.store import read_metadata, summarise_series
from market_nn_plus_ultra.data.validation import validate_database
from market_nn_plus_ultra.orchestration.demo import build_demo_databases


def test_demo_databases_are_real_and_validated(tmp_path) -> None:
    result = build_demo_databases(tmp_path)
    assert result.ok
    market, fixture = tmp_path / "market.db", tmp_path / "fixture.db"
    for db in (market, fixture):
        assert validate_database(db).passed(strict=True)
    real = summarise_series(market)
    assert real["symbol"].tolist() == ["^GSPC", "^IXIC"]
    assert (real["rows"] > 5000).all()
    assert real["start"].min().year == 1999 and real["end"].max().year == 2018
    assert "planted_signal" in read_metadata(fixture)


def test_demo_runs_end_to_end(tmp_path) -> None:
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path), "--max-epochs", "1"])
    assert result.exit_code == 0, result.output
    flat = result.output.replace("\n", "")
    for name in ("market.db", "fixture.db", "predictions.parquet", "report.html", "report.md"):
        assert (tmp_path / name).exists() and str(tmp_path / name) in flat
    assert (tmp_path / "pretrain" / "backbone.pt").exists()
    assert (tmp_path / "train" / "best.ckpt").exists()

    # Predictions are out of sample: they start after the run's held-out split begins.
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    held_out = pd.read_parquet(tmp_path / "train" / "test_predictions.parquet")
    assert predictions["timestamp"].min() >= held_out["timestamp"].min()

    summary = json.loads((tmp_path / "walkforward" / "summary.json").read_text())
    baselines = {"buy_and_hold", "momentum", "mean_reversion", "ridge", "lightgbm"}
    assert baselines <= set(summary["strategies"])
    assert set(summary["bootstrap"]["prob_model_sharpe_exceeds"]) == baselines

    markdown = (tmp_path / "report.md").read_text()
    for name in baselines:
        assert f"| {name} |" in markdown
    assert "stationary-bootstrap" in markdown
