"""``run_walkforward``: the one call behind ``plus-ultra walkforward`` (file mode here)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.evaluation.baselines import momentum
from market_nn_plus_ultra.orchestration import (
    WalkForwardOutputs,
    check_walkforward_mode,
    run_walkforward,
)


def _predictions(path):
    rng = np.random.default_rng(1)
    stamps = pd.date_range("2022-01-03", periods=150, freq="D", tz="UTC")
    frames = [
        pd.DataFrame(
            {
                "timestamp": stamps,
                "symbol": s,
                "close": 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 150))),
            }
        )
        for s in ("X", "Y")
    ]
    panel = pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()
    momentum(panel, lookback=5).to_parquet(path)
    return path


def test_file_mode_scores_writes_and_returns_typed_results(tmp_path):
    preds = _predictions(tmp_path / "p.parquet")
    cfg = load_config(
        None,
        [
            "evaluation.train_window=40",
            "evaluation.test_window=30",
            "evaluation.cost_bps=2",
            "evaluation.baselines=[buy_and_hold,momentum,ridge]",
            "evaluation.bootstrap_reps=30",
        ],
    )
    steps = []
    outputs = WalkForwardOutputs(tmp_path / "per_split.parquet", tmp_path / "summary.json")
    run = run_walkforward(
        cfg, predictions=preds, outputs=outputs, read_bars=False, on_step=steps.append
    )
    summary = run.result.summary
    assert summary.n_splits == 3 and summary.settings.cost_bps == 2.0
    assert list(summary.strategies) == ["model", "buy_and_hold", "momentum"]
    assert set(summary.skipped_baselines) == {"ridge"}  # no bars were read: ML baseline off
    assert run.paths == {"per-fold metrics": outputs.metrics, "summary": outputs.summary}
    written = json.loads(outputs.summary.read_text())
    assert written["strategies"]["model"]["stitched"]["n_periods"] == summary.n_bars == 90
    assert steps[-1] == "writing outputs" and "bootstrap" in steps


def test_option_mixes_are_refused_with_the_option_to_change(tmp_path):
    with pytest.raises(ValueError, match="--predictions is not used with --retrain"):
        check_walkforward_mode(True, tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="missing --predictions"):
        run_walkforward(load_config(None, []))
