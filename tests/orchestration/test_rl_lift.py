"""``bench rl-lift``: per-fold fine-tunes on each fold's past, scored beside the supervised
policy and buy-and-hold on the same test bars."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.metrics import infer_periods_per_year, sharpe_ratio
from market_nn_plus_ultra.orchestration.catalogue import read_catalogue
from market_nn_plus_ultra.orchestration.rl_lift import LIFT_COLUMNS, run_rl_lift
from tests.rl._finetune_cases import rl_config, supervised_run

FOLDS = [
    "evaluation.train_window=120",
    "evaluation.test_window=35",
    "evaluation.step=64",
    "evaluation.bootstrap_reps=100",
    "reinforcement.updates=1",
]


@pytest.fixture(scope="module")
def lift(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl_lift")
    run, db = supervised_run(tmp)
    cfg = rl_config(db, tmp, *FOLDS)
    catalogue = tmp / "catalogue.parquet"
    result = run_rl_lift(cfg, run.checkpoint_dir, tmp / "lift", seeds=2, catalogue=catalogue)
    return cfg, run, result, catalogue


def test_each_fold_trains_on_its_past_and_scores_its_test_bars(lift):
    _, run, result, _ = lift
    assert [fold["supervised"] for fold in result.folds] == ["retrained", "retrained", "checkpoint"]
    splits = json.loads((run.checkpoint_dir / "model_info.json").read_text())["splits"]
    test_split = pd.Timestamp(splits["test"]["start"])
    for fold in result.folds:
        test_start = pd.Timestamp(fold["test_start"])
        # the given run only where it never saw the fold's test bars; else a fresh fold model
        assert fold["supervised"] == ("checkpoint" if test_split <= test_start else "retrained")
        folder = result.output / f"fold_{fold['fold'].removeprefix('fold')}"
        for seed in (0, 1):
            saved = json.loads((folder / f"seed_{seed}" / "model_info.json").read_text())
            ft_cfg = (folder / f"seed_{seed}" / "config.yaml").read_text()
            assert f"end: '{fold['read_end']}'" in ft_cfg or fold["read_end"] in ft_cfg
            assert saved["kind"] == "rl_policy"
            frame = pd.read_parquet(folder / f"seed_{seed}" / "predictions.parquet")
            stamps = pd.to_datetime(frame["timestamp"], utc=True)
            assert stamps.min() >= test_start
            assert stamps.max() <= pd.Timestamp(fold["test_end"])
            assert pd.Timestamp(fold["read_end"]) < test_start


def test_the_table_holds_every_seed_and_the_pooled_mean(lift):
    cfg, _, result, _ = lift
    table = result.table
    assert list(table.columns) == list(LIFT_COLUMNS)
    assert list(table["seed"]) == ["0", "1", "pooled"]
    seeds = table.iloc[:2]
    assert result.pooled["delta_sharpe"] == pytest.approx(seeds["delta_sharpe"].mean())
    for row in table.to_dict(orient="records"):
        assert row["delta_low"] <= row["delta_sharpe"] <= row["delta_high"]
    # the supervised Sharpe is the backtest of its stitched fold predictions at the same cost
    parts = [pd.read_parquet(p) for p in sorted(result.output.glob("fold_*/supervised_*"))]
    frame = pd.concat(parts, ignore_index=True)
    returns = backtest(frame, cost_bps=cfg.evaluation.cost_bps).returns.dropna()
    expected = sharpe_ratio(returns.to_numpy(), infer_periods_per_year(returns.index))
    assert np.isfinite(expected)
    assert table["supervised_sharpe"].to_numpy() == pytest.approx([expected] * 3)
    assert (table["n_bars"] == len(returns)).all()


def test_rows_land_in_the_catalogue(lift):
    _, _, result, catalogue = lift
    rows = read_catalogue(catalogue)
    assert sorted(rows["kind"]) == ["rl_lift", "rl_lift", "rl_lift_pooled"]
    assert set(rows["comparison"]) == {result.lift_id}
    pooled = rows[rows["kind"] == "rl_lift_pooled"].iloc[0]
    assert pooled["delta_sharpe"] == pytest.approx(result.pooled["delta_sharpe"])
    assert pooled["baseline_sharpe"] == pytest.approx(result.pooled["supervised_sharpe"])


@pytest.mark.slow
def test_cli_runs_through_the_real_entry_point(tmp_path):
    run, db = supervised_run(tmp_path)
    cfg = rl_config(db, tmp_path, *FOLDS)
    path = tmp_path / "config.yaml"
    from market_nn_plus_ultra.config import save_config

    save_config(cfg, path)
    done = subprocess.run(
        [sys.executable, "-m", "market_nn_plus_ultra", "bench", "rl-lift", "--config", str(path),
         "--checkpoint", str(run.checkpoint_dir), "--seeds", "1",
         "--output", str(tmp_path / "lift"), "--catalogue", str(tmp_path / "cat.parquet")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pooled Sharpe difference" in done.stdout
    assert (tmp_path / "cat.parquet").is_file()
