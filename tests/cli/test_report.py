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
    sharpe = backtest(frame, cost_bps=7.5, benchmark_column="bench").metrics["sharpe"]
    # A summary without stitched strategies: settings, counts and a bootstrap block.
    summary = {
        "n_splits": 2,
        "settings": {"cost_bps": 7.5, "embargo": 5},
        "bootstrap": {
            "level": 0.95,
            "reps": 100,
            # The estimate on the file's bars, so the interval belongs to the headline.
            "model": {"sharpe": {"estimate": sharpe, "low": -1.0, "high": 1.5}},
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
    assert "| buy_and_hold | " in md and " | 0.61 | 80 |" in md  # P(beat), bars
    assert "every bar of the predictions 2023-01-02 .. 2023-04-21, 80 bars" in md
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


def test_report_from_walkforward_files_shows_its_sample_and_every_baseline(tmp_path):
    """The files `plus-ultra walkforward` writes → a report on exactly its test bars."""
    from market_nn_plus_ultra.config import EvaluationConfig
    from market_nn_plus_ultra.evaluation.walkforward import WalkForwardBacktester
    from market_nn_plus_ultra.evaluation.walkforward_io import write_walkforward

    frame = _predictions(n=200).drop(columns="regime")
    frame.to_parquet(tmp_path / "p.parquet")
    cfg = EvaluationConfig(train_window=50, test_window=40, cost_bps=3.0, bootstrap_reps=50)
    result = WalkForwardBacktester.from_config(cfg).run(frame, config=cfg)
    write_walkforward(result, tmp_path / "per_split.parquet", tmp_path / "summary.json")
    out = tmp_path / "r.html"
    args = ["report", "-p", str(tmp_path / "p.parquet"), "-o", str(out)]
    args += ["--walkforward", str(tmp_path / "per_split.parquet")]
    args += ["--summary", str(tmp_path / "summary.json"), "--benchmark-column", "bench"]
    run = runner.invoke(app, [*args, "--set", "data.sqlite_path=none.db"])
    assert run.exit_code == 0, run.output
    md, html = out.with_suffix(".md").read_text(), out.read_text()
    strategies = result.summary.strategies
    n = strategies["model"].stitched["n_periods"]
    assert n == 120 and f"{n} bars (3 folds)" in " ".join(run.output.split())
    boot = result.summary.bootstrap.model["sharpe"]
    cell = f"{boot.estimate:.2f} [{boot.low:.2f}, {boot.high:.2f}]"
    assert f"| model | {100 * strategies['model'].stitched['total_return']:.2f}%" in md
    assert f" {cell} " in md
    whole = backtest(frame, cost_bps=3.0, benchmark_column="bench").metrics["sharpe"]
    assert f" {whole:.2f} [" not in md
    for name, stats in strategies.items():
        assert f"| {name} | {100 * stats.stitched['total_return']:.2f}%" in md, name
        # One trace per strategy in each of the equity, drawdown and rolling-Sharpe charts.
        assert html.count(f'"name":"{name}"') >= 3, name
    assert "ridge" in result.summary.skipped_baselines and "| ridge |" not in md
    assert "No regime labels: the predictions have no 'regime' column" in md
    assert (
        "has no `regimes` rows" not in md
        and "none.db does not exist to read the `regimes` table" in md
    )
