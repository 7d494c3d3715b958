"""``plus-ultra report`` through the real entry point."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.evaluation.backtest import backtest

runner = CliRunner()


def _predictions(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    ts = pd.date_range("2023-01-02", periods=n, freq="B", tz="UTC")
    frame = pd.MultiIndex.from_product([ts, ["AAA", "BBB"]], names=["timestamp", "symbol"])
    frame = frame.to_frame(index=False)
    frame["realised_return"] = rng.normal(0, 0.01, len(frame))
    frame["position"] = np.clip(rng.normal(0, 0.7, len(frame)), -1, 1)
    frame["bench"] = rng.normal(0, 0.01, n).repeat(2)
    frame["regime"] = np.where(np.arange(len(frame)) < n, "low_vol", "high_vol")
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_report")
    frame = _predictions()
    frame.to_parquet(folder / "predictions.parquet")
    frame.to_csv(folder / "predictions.csv", index=False)
    pd.DataFrame({"split": [0, 1], "sharpe": [0.4, 0.6]}).to_parquet(folder / "per_split.parquet")
    # The walk-forward writer's summary: settings, counts and a bootstrap block.
    summary = {
        "n_splits": 2,
        "settings": {"cost_bps": 7.5, "embargo": 5},
        "bootstrap": {
            "level": 0.95,
            "reps": 100,
            "model": {"sharpe": {"estimate": 0.2, "low": -1.0, "high": 1.5}},
            "prob_model_sharpe_exceeds": {"buy_and_hold": 0.61},
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder, frame


def test_report_writes_html_markdown_and_charts(files):
    folder, frame = files
    out = folder / "reports" / "latest.html"
    result = runner.invoke(
        app,
        [
            "report",
            "--predictions",
            str(folder / "predictions.parquet"),
            "--walkforward",
            str(folder / "per_split.parquet"),
            "--summary",
            str(folder / "summary.json"),
            "--benchmark-column",
            "bench",
            "--regime-column",
            "regime",
            "--cost-bps",
            "7.5",
            "--set",
            "seed=11",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".md").exists()
    assert sorted(p.name for p in (folder / "reports" / "latest_files").iterdir()) == [
        "distribution.png",
        "drawdown.png",
        "equity.png",
        "monthly.png",
        "rolling_sharpe.png",
    ]
    assert str(out) in result.stdout.replace("\n", "")
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    sharpe = backtest(frame, cost_bps=7.5, benchmark_column="bench").metrics["sharpe"]
    assert "| model | " in md and f" {sharpe:.2f} [" in md
    assert "net of 7.5 bps" in md and "Small sample (80 periods" in md
    assert "seed: 11" in md and "low_vol" in md and "settings.embargo**: 5" in md
    assert "P(model Sharpe > buy_and_hold Sharpe) = 0.61" in md
    assert "Intervals are 95% stationary-bootstrap intervals" in md
    assert "| benchmark |" in md


def test_report_reads_csv_predictions(files):
    folder, _ = files
    out = folder / "csv" / "r.html"
    result = runner.invoke(
        app, ["report", "-p", str(folder / "predictions.csv"), "-o", str(out), "--cost-bps", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (folder / "csv" / "r.md").exists() and (
        folder / "csv" / "r_files" / "equity.png"
    ).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark-column", "benchmark"], "Did you mean 'bench'?"),
        (["--regime-column", "regim"], "Did you mean 'regime'?"),
        (["--summary", "nope.json"], "summary file nope.json does not exist"),
        (["--output", "report.pdf"], "expected a .html path"),
    ],
)
def test_report_errors_are_clear(files, args, message):
    folder, _ = files
    base = ["report", "-p", str(folder / "predictions.parquet"), "-o", str(folder / "e.html")]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_report_missing_predictions_file(tmp_path):
    result = runner.invoke(app, ["report", "-p", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2
    assert "none.parquet does not exist" in " ".join(result.output.split())
