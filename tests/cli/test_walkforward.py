"""``plus-ultra walkforward`` through the real entry point, on a synthetic fixture database."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.evaluation.baselines import momentum

FAST = [
    "--set",
    "data.cache=false",
    "--set",
    "evaluation.lightgbm_estimators=20",
    "--set",
    "evaluation.baseline_features=[log_return_1,rsi_14]",
    "--set",
    "evaluation.bootstrap_reps=50",
    "--set",
    "evaluation.bootstrap_block=2",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("walkforward")
    db = write_fixture(root / "m.db", ["SPY", "QQQ"], rows=260, freq="1D", alt_features=0)
    panel = read_panel(db, cache=False)
    preds = momentum(panel, lookback=10)
    day = pd.DatetimeIndex(preds["timestamp"]).day_of_year.to_numpy()
    preds["regime"] = np.where(day % 2 == 0, "even", "odd")
    path = root / "predictions.parquet"
    preds.to_parquet(path)
    return root, db, path


def test_walkforward_with_database(files):
    root, db, preds = files
    per_split, summary = root / "out" / "per_split.parquet", root / "out" / "summary.json"
    result = CliRunner().invoke(
        app,
        [
            "walkforward",
            "--predictions",
            str(preds),
            "--db",
            str(db),
            "--train-window",
            "100",
            "--test-window",
            "40",
            "--cost-bps",
            "5",
            "--metrics-output",
            str(per_split),
            "--summary-output",
            str(summary),
            "--regimes-output",
            str(root / "out" / "regimes.parquet"),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("model", "buy_and_hold", "momentum", "mean_reversion", "ridge", "lightgbm"):
        assert name in result.output
    assert "summary: " in result.output and str(summary.name) in result.output
    loaded = json.loads(summary.read_text())
    assert set(loaded["strategies"]) == {
        "model",
        "buy_and_hold",
        "momentum",
        "mean_reversion",
        "ridge",
        "lightgbm",
    }
    assert loaded["settings"]["cost_bps"] == 5.0 and loaded["n_splits"] == 3
    frame = pd.read_parquet(per_split)
    assert len(frame) == 6 * 3 and (frame["n_periods"] == 40).all()
    regimes = pd.read_parquet(root / "out" / "regimes.parquet")
    assert set(regimes["regime"]) == {"even", "odd"}


def test_walkforward_without_database_skips_ml_baselines(files):
    root, _, preds = files
    result = CliRunner().invoke(
        app,
        [
            "walkforward",
            "-p",
            str(preds),
            "--train-window",
            "100",
            "--test-window",
            "40",
            "--baselines",
            "buy_and_hold,ridge",
            "--no-bootstrap",
            "--metrics-output",
            str(root / "b" / "ps.parquet"),
            "--summary-output",
            str(root / "b" / "s.json"),
            "--guardrails",
            "--set",
            "guardrails.max_gross=0.5",
            "--breaches-output",
            str(root / "b" / "breaches.parquet"),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    loaded = json.loads((root / "b" / "s.json").read_text())
    assert set(loaded["strategies"]) == {"model", "buy_and_hold"}
    assert "ridge" in loaded["skipped_baselines"] and "bootstrap" not in loaded
    # momentum positions are ±1 on both symbols: gross 1 is halved on every bar
    breaches = pd.read_parquet(root / "b" / "breaches.parquet")
    assert set(breaches["rule"]) == {"max_gross"} and (breaches["after"].abs() == 0.5).all()
    assert loaded["guardrail_breaches"]["max_gross"] == len(breaches)
    assert loaded["strategies"]["model"]["stitched"]["turnover"] <= 0.5


def test_walkforward_errors_are_one_clean_line(files, tmp_path):
    _, _, preds = files
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(preds).drop(columns="position").to_parquet(bad)
    runner = CliRunner()
    for args, message in (
        (["-p", str(bad)], "no column 'position'"),
        (["-p", str(tmp_path / "none.parquet")], "does not exist"),
        (["-p", str(preds), "--baselines", "momentun"], "Input should be 'buy_and_hold'"),
        (["-p", str(preds), "--train-window", "1000"], "too few"),
    ):
        result = runner.invoke(
            app, ["walkforward", *args, "--summary-output", str(tmp_path / "s.json")]
        )
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())  # rich wraps long lines
        assert message in text and "Traceback" not in text
    assert not (tmp_path / "s.json").exists()
