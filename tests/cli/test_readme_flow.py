"""The README's evaluation flow, run as written on a random walk: no edge is reported.

train → predict (every bar, each labelled with its sample) → walkforward → report. Only
the bars after the run's validation split are scored, the outputs name their dates, and
on returns with no signal the model's Sharpe interval covers zero (or lies below it).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from tests.training._train_cases import TINY


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    result.text = " ".join(result.output.split())
    return result


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    db = write_fixture(
        root / "walk.db", symbols=("AAA", "BBB", "CCC"), rows=1500, freq="1D", alt_features=0
    )
    run = root / "run"
    sets = [f"data.sqlite_path={db}", "data.cache=false", f"training.checkpoint_dir={run}"]
    sets += [*TINY, "training.max_epochs=2"]
    _run("train", *[arg for s in sets for arg in ("--set", s)])
    preds = root / "predictions.parquet"
    predicted = _run("predict", "--checkpoint", str(run), "--db", str(db), "-o", str(preds))
    walk = _run(
        "walkforward", "--predictions", str(preds), "--db", str(db),
        "--train-window", "252", "--test-window", "63",
        "--metrics-output", str(root / "per_split.parquet"),
        "--summary-output", str(root / "summary.json"),
    )  # fmt: skip
    _run(
        "report", "--predictions", str(preds), "--walkforward", str(root / "per_split.parquet"),
        "--summary", str(root / "summary.json"), "--output", str(root / "report.html"),
        "--set", f"data.sqlite_path={db}",
    )  # fmt: skip
    info = json.loads((run / "model_info.json").read_text())
    return root, pd.read_parquet(preds), predicted, walk, info


def test_predictions_carry_their_sample(flow):
    _, frame, predicted, _, info = flow
    test_start = pd.Timestamp(info["splits"]["test"]["start"])
    assert set(frame["sample"]) == {"train", "val", "test"}
    assert (frame.loc[frame["sample"] == "test", "timestamp"] >= test_start).all()
    assert (frame.loc[frame["sample"] != "test", "timestamp"] < test_start).all()
    assert frame.attrs["market_nn_plus_ultra.sample"]["splits"]["test"]["start"] == str(
        info["splits"]["test"]["start"]
    )
    assert f"out of sample {test_start:%Y-%m-%d}" in predicted.text


def test_walkforward_scores_only_out_of_sample_bars_and_finds_no_edge(flow):
    root, _, _, walk, info = flow
    summary = json.loads((root / "summary.json").read_text())
    test_start = pd.Timestamp(info["splits"]["test"]["start"])
    sample = summary["sample"]
    assert sample["scored"] == "out_of_sample"
    assert pd.Timestamp(summary["oos_start"]) == test_start  # the first fold starts there
    assert sample["n_left_out"] > 0 and sample["n_bars"] == 189  # three 63-bar folds
    per_split = pd.read_parquet(root / "per_split.parquet")
    assert (per_split["test_start"] >= test_start).all()
    assert f"out of sample {test_start:%Y-%m-%d}" in walk.text
    sharpe = summary["bootstrap"]["model"]["sharpe"]
    assert sharpe["low"] <= 0.0, sharpe  # no edge on a random walk


def test_paired_differences_against_every_baseline(flow):
    root, _, _, walk, _ = flow
    summary = json.loads((root / "summary.json").read_text())
    diffs = summary["bootstrap"]["sharpe_difference"]
    assert set(diffs) == set(summary["strategies"]) - {"model"} and len(diffs) >= 3
    for name, d in diffs.items():
        stitched = summary["strategies"]
        gap = stitched["model"]["stitched"]["sharpe"] - stitched[name]["stitched"]["sharpe"]
        assert d["estimate"] == pytest.approx(gap, abs=1e-9)  # the same bars
        assert d["low"] <= d["estimate"] <= d["high"] and d["p_adjusted"] >= d["p_value"]
    assert "Model − baseline Sharpe" in walk.text and "(Holm)" in walk.text


def test_report_headline_is_the_walkforward_sample(flow):
    root, _, _, _, _ = flow
    summary = json.loads((root / "summary.json").read_text())
    html = (root / "report.html").read_text()
    markdown = (root / "report.md").read_text()
    description = summary["sample"]["description"]
    assert description.startswith("out of sample")
    sharpe = summary["bootstrap"]["model"]["sharpe"]
    for text in (html, markdown):
        assert f"{sharpe['estimate']:.2f}" in text and f"{sharpe['low']:.2f}" in text
        for name in summary["strategies"]:
            assert name in text
    assert summary["sample"]["start"][:10] in markdown
