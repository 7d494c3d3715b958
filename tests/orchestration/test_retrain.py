"""Walk-forward with retraining on a tiny fixture: no fold trains on its future, resumable."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.orchestration.retrain import (
    FOLD_PREDICTIONS,
    retrain_folds,
    walkforward_retrain,
)

from ._tiny import TINY_MODEL

TINY = [
    *TINY_MODEL,
    "evaluation.train_window=100",
    "evaluation.test_window=40",
    "evaluation.embargo=3",
    "evaluation.baselines=[buy_and_hold,momentum,ridge]",
    "evaluation.bootstrap_reps=20",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> Config:
    db = tmp_path_factory.mktemp("retrain") / "market.db"
    write_fixture(db, symbols=["AAA", "BBB"], rows=260, freq="1D", alt_features=0)
    return load_config(None, [f"data.sqlite_path={db}", *TINY])


def test_folds_are_purged_by_window_horizon_and_embargo(cfg):
    stamps = pd.date_range("2020-01-01", periods=260, freq="D", tz="UTC")
    folds = retrain_folds(stamps, cfg)
    # W=8, H=2: first end row 7; gap = H + embargo + W - 1 = 12; test rows 7+100+12 ..
    assert [(f.train_rows, f.read_rows, f.test_rows) for f in folds] == [
        (range(7, 107), range(0, 109), range(119, 159)),
        (range(47, 147), range(40, 149), range(159, 199)),
        (range(87, 187), range(80, 189), range(199, 239)),
    ]
    for f in folds:
        # the last row training reads is a target row; the first test input row comes
        # embargo + 1 rows later
        assert f.test_rows.start - 8 + 1 - (f.read_rows.stop - 1) == 3 + 1
    with pytest.raises(ValueError, match="train_window"):
        retrain_folds(stamps[:100], cfg)


def test_retrain_trains_each_fold_on_its_past_and_resumes(cfg, tmp_path):
    out = tmp_path / "wf"
    messages: list[str] = []
    result = walkforward_retrain(cfg, out, on_fold=lambda d, t, m: messages.append(m))
    folds = result.summary.retrain.folds
    assert len(folds) == 3 and result.summary.n_splits == 3
    assert [f["status"] for f in folds] == ["trained"] * 3
    preds = pd.read_parquet(out / "predictions.parquet")
    for k, fold in enumerate(folds):
        folder = out / f"fold_{k}"
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        info = json.loads((folder / "model_info.json").read_text())
        read_end = pd.Timestamp(fold["read_end"])
        test_start, test_end = pd.Timestamp(fold["test_start"]), pd.Timestamp(fold["test_end"])
        # the fold's model read nothing after its last training row, which precedes the test
        assert pd.Timestamp(saved["data"]["end"]) == read_end < test_start
        assert saved["seed"] == cfg.seed + k and saved["windows"]["test_fraction"] == 0.0
        ends = [pd.Timestamp(s["end"]) for s in info["splits"].values() if s["end"]]
        assert max(ends) < read_end  # window end rows keep H target rows inside the data
        assert pd.Timestamp(info["splits"]["train"]["start"]) >= pd.Timestamp(fold["read_start"])
        # predictions only inside the fold's test bars, every bar and symbol present
        mine = preds[preds["fold"] == f"fold{k}"]
        assert mine["timestamp"].min() == test_start and mine["timestamp"].max() == test_end
        assert len(mine) == 2 * 40 and mine["position"].between(-1, 1).all()
    assert preds["timestamp"].isin(result.returns.index).all()
    # per-split metrics of the model and every baseline on the same three folds
    per = result.per_split
    assert sorted(per["strategy"].unique()) == ["buy_and_hold", "model", "momentum", "ridge"]
    assert (per.groupby("strategy")["split"].nunique() == 3).all()
    assert (per["n_periods"] == 40).all()
    assert per.loc[per["strategy"] == "model", "test_start"].tolist() == [
        pd.Timestamp(f["test_start"]) for f in folds
    ]

    # a re-run reuses finished folds: a deleted fold is the only one retrained
    (out / "fold_1" / FOLD_PREDICTIONS).unlink()
    before = (out / "fold_0" / "last.ckpt").stat().st_mtime_ns
    again = walkforward_retrain(cfg, out, bootstrap=False)
    assert [f["status"] for f in again.summary.retrain.folds] == [
        "reused",
        "trained",
        "reused",
    ]
    assert (out / "fold_0" / "last.ckpt").stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(
        again.per_split[again.per_split["strategy"] != "model"],
        per[per["strategy"] != "model"],
    )


def test_cli_retrain_writes_outputs_and_rejects_option_mixes(cfg, tmp_path):
    from typer.testing import CliRunner

    from market_nn_plus_ultra.cli.main import app

    sets = [a for item in TINY for a in ("--set", item)]
    common = [
        "walkforward",
        "--db",
        str(cfg.data.sqlite_path),
        "--train-window",
        "100",
        "--test-window",
        "60",
        "--metrics-output",
        str(tmp_path / "per_split.parquet"),
        "--summary-output",
        str(tmp_path / "summary.json"),
        *sets,
    ]
    runner = CliRunner()
    guard = ["--guardrails", "--set", "guardrails.max_position=0.001"]
    guard += ["--breaches-output", str(tmp_path / "breaches.parquet")]
    retrain = ["--retrain", "--output-dir", str(tmp_path / "runs")]
    run = runner.invoke(app, [*common, *retrain, *guard])
    assert run.exit_code == 0, run.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_splits"] == 2 and len(summary["retrain"]["folds"]) == 2
    breaches = pd.read_parquet(tmp_path / "breaches.parquet")
    assert summary["guardrail_breaches"] == {"max_position": len(breaches)} and len(breaches)
    assert (breaches["after"].abs() <= 0.001 + 1e-12).all()
    # the stitched predictions file keeps the model's own (unguarded) positions
    stitched = pd.read_parquet(tmp_path / "runs" / "predictions.parquet")
    assert (stitched["position"].abs() > 0.001).any()
    assert summary["settings"]["train_window"] == 100
    per = pd.read_parquet(tmp_path / "per_split.parquet")
    assert set(per["split"]) == {"fold0", "fold1"} and (per["n_periods"] == 60).all()
    assert (tmp_path / "runs" / "fold_1" / FOLD_PREDICTIONS).is_file()
    assert str(tmp_path / "runs") in " ".join(run.output.split())

    for args, message in (
        (["--retrain", "-p", str(tmp_path / "p.parquet")], "--predictions is not used with"),
        ([], "missing --predictions"),
    ):
        bad = runner.invoke(app, [*common, *args])
        assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output
        assert "Traceback" not in bad.output
