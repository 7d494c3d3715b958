"""The retrain pipeline on a tiny fixture: manifest, skipping, resume, champion, regimes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.regimes import read_regimes
from market_nn_plus_ultra.data.validation_report import DataValidationError
from market_nn_plus_ultra.orchestration.pipeline import (
    STAGES,
    RetrainOptions,
    run_pipeline,
)
from market_nn_plus_ultra.orchestration.pipeline.evaluate import common_rows
from market_nn_plus_ultra.orchestration.promotion import read_champion

from ._tiny import TINY_MODEL

# A model of a few hundred parameters, one short epoch, folds of 20 bars: the whole
# pipeline runs in about two seconds.
TINY = (
    *TINY_MODEL,
    "windows.test_fraction=0.3",
    "pretraining.max_epochs=1",
    "pretraining.limit_train_batches=2",
    "pretraining.batch_size=32",
    "pretraining.accelerator=cpu",
    "evaluation.train_window=60",
    "evaluation.test_window=20",
    "evaluation.embargo=2",
    "evaluation.baselines=[buy_and_hold,momentum]",
    "evaluation.bootstrap_reps=50",
    "orchestration.promotion.bootstrap_samples=100",
    "orchestration.promotion.min_periods=10",
)
#: the first run is promoted whatever it scores, so the next one has a champion
FIRST = (*TINY, "orchestration.promotion.first_baseline=none")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_db(path: Path, **kwargs) -> Path:
    write_fixture(path, symbols=["AAA", "BBB"], rows=400, freq="1D", alt_features=0, **kwargs)
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tiny_db(tmp_path_factory.mktemp("pipeline") / "market.db", autocorr=0.2)


def options(db: Path, out: Path, **changes) -> RetrainOptions:
    values = {"dataset": db, "train_config": None, "overrides": TINY, "output_dir": out}
    values["skip_pretraining"] = True
    return RetrainOptions(**{**values, **changes})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(run_dir: Path, stages: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    files = [o for s in manifest["stages"] if s["name"] in stages for o in s["outputs"]]
    assert files
    return {f: (os.stat(run_dir / f).st_mtime_ns, (run_dir / f).read_bytes()) for f in files}


@pytest.fixture(scope="module")
def first(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_pipeline(options(db, out, skip_pretraining=False, overrides=FIRST)), out


def test_a_run_records_every_stage_and_promotes_a_first_champion(first, db):
    result, out = first
    manifest = json.loads(result.manifest.read_text())
    status = {s["name"]: s["status"] for s in manifest["stages"]}
    assert [s["name"] for s in manifest["stages"]] == list(STAGES)
    assert status == {
        "validate": "done",
        "regimes": "skipped",
        "pretrain": "done",
        "train": "done",
        "rl_finetune": "skipped",
        "evaluate": "done",
        "report": "done",
        "promote": "done",
        "push": "skipped",
    }
    stages = {s["name"]: s for s in manifest["stages"]}
    # the database's content hash is an input of every stage that reads it
    assert stages["validate"]["inputs"][str(db.resolve())] == sha(db)
    assert {"configs/train.yaml#model", "configs/train.yaml#training"} <= set(
        stages["train"]["inputs"]
    )
    assert "configs/train.yaml#orchestration" not in stages["train"]["inputs"]
    for stage in stages.values():
        assert all((result.run_dir / o).is_file() for o in stage["outputs"])
        if stage["status"] == "done":
            assert stage["seconds"] >= 0 and stage["started"] <= stage["finished"]
    assert "--run-reinforcement" in stages["rl_finetune"]["reason"]
    assert "--regenerate-regimes" in stages["regimes"]["reason"]
    assert {"package", "python", "torch", "numpy", "pandas"} <= set(manifest["versions"])
    # the first champion: with no champion yet, first_baseline=none promotes it
    decision = json.loads((result.run_dir / "evaluate" / "decision.json").read_text())
    assert decision["metrics"]["compared_with"] == "none" and decision["promote"]
    assert result.promoted and result.why_not is None
    champion = read_champion(out)
    assert champion.run_dir == result.run_dir.resolve()
    assert champion.checkpoint == (result.run_dir / "train").resolve()
    assert result.champion_json == out / "champion.json"
    assert result.report == result.run_dir / "report" / "report.html"
    assert "Promotion decision" in (result.run_dir / "report" / "decision.md").read_text()
    assert "promotion decision" in (result.run_dir / "report" / "report.md").read_text()


def test_the_scored_rows_are_out_of_sample_and_the_walkforward_scores_them(first):
    result, _ = first
    folder = result.run_dir / "evaluate"
    everything = pd.read_parquet(folder / "candidate_predictions.parquet")
    scored = pd.read_parquet(folder / "predictions.parquet")
    metrics = json.loads((folder / "metrics.json").read_text())
    oos = everything["sample"].isin(["test", "unseen"])
    assert (
        metrics["rows"]["scored"]
        == int(oos.sum())
        == int(scored["sample"].isin(["test", "unseen"]).sum())
    )
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["oos_start"] >= everything.loc[oos, "timestamp"].min().isoformat()
    assert metrics["candidate"]["metrics"] == summary["strategies"]["model"]["stitched"]
    assert set(metrics["baselines"]) == {"buy_and_hold", "momentum"}


def test_resume_leaves_finished_stages_untouched_and_from_stage_reruns_the_tail(first):
    result, _ = first
    before = snapshot(result.run_dir, ("validate", "pretrain", "train", "evaluate", "report"))
    again = run_pipeline(resume=result.run_dir)
    assert (
        snapshot(result.run_dir, ("validate", "pretrain", "train", "evaluate", "report")) == before
    )
    assert [s.status for s in again.stages] == [s.status for s in result.stages]
    tail = run_pipeline(resume=result.run_dir, from_stage="report")
    after = snapshot(result.run_dir, ("validate", "pretrain", "train", "evaluate"))
    assert after == {k: v for k, v in before.items() if not k.startswith("report/")}
    html = "report/report.html"
    assert os.stat(result.run_dir / html).st_mtime_ns != before[html][0]
    assert tail.stage("report").status == "done"
    with pytest.raises(ValueError, match="did you mean 'evaluate'"):
        run_pipeline(resume=result.run_dir, from_stage="evaluation")


def test_relative_paths_resume_from_anywhere_without_redoing_stages(db, tmp_path, monkeypatch):
    """`plus-ultra retrain --dataset data/x.db` as typed in a shell, resumed later from
    another directory: the resumed run resolves the same inputs and redoes nothing."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "market.db").write_bytes(db.read_bytes())
    monkeypatch.chdir(work)
    opts = RetrainOptions(
        dataset=Path("data/market.db"),
        train_config=None,
        overrides=(*TINY, *FIRST),
        output_dir=Path("runs"),
        skip_pretraining=True,
    )
    result = run_pipeline(opts)
    assert result.run_dir.is_absolute()
    kept = snapshot(result.run_dir, ("validate", "train", "evaluate"))
    monkeypatch.chdir(tmp_path)
    again = run_pipeline(resume=Path("work/runs") / result.run_dir.name)
    assert snapshot(result.run_dir, ("validate", "train", "evaluate")) == kept
    assert [s.status for s in again.stages] == [s.status for s in result.stages]


def test_a_changed_config_reruns_only_the_stages_that_read_it(first):
    result, _ = first
    data_stages = snapshot(result.run_dir, ("validate",))
    train_before = snapshot(result.run_dir, ("train",))
    changed = run_pipeline(
        resume=result.run_dir, changes={"overrides": (*FIRST, "training.learning_rate=0.002")}
    )
    assert snapshot(result.run_dir, ("validate",)) == data_stages  # data section unchanged
    assert snapshot(result.run_dir, ("train",)) != train_before
    assert changed.stage("train").status == "done"
    # the promotion rules are read by evaluate, not by training
    trained = snapshot(result.run_dir, ("train",))
    evaluated = snapshot(result.run_dir, ("evaluate",))
    rules = (*FIRST, "training.learning_rate=0.002", "orchestration.promotion.min_periods=12")
    run_pipeline(resume=result.run_dir, changes={"overrides": rules})
    assert snapshot(result.run_dir, ("train",)) == trained
    assert snapshot(result.run_dir, ("evaluate",)) != evaluated


def test_the_next_run_warm_starts_from_the_champion_and_is_scored_beside_it(first, db):
    result, out = first
    second = run_pipeline(options(db, out))
    warm = json.loads((second.run_dir / "train" / "warm_start.json").read_text())
    assert warm["kind"] == "champion" and str(result.run_dir) in warm["source"]
    metrics = json.loads((second.run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["champion"]["run"] == str(result.run_dir.resolve())
    candidate, champion = metrics["candidate"]["metrics"], metrics["champion"]["metrics"]
    assert candidate["n_periods"] == champion["n_periods"]  # the same bars
    rows = pd.read_parquet(second.run_dir / "evaluate" / "champion_predictions.parquet")
    scored = pd.read_parquet(second.run_dir / "evaluate" / "predictions.parquet")
    joined = rows.merge(scored, on=["timestamp", "symbol"], suffixes=("_champ", ""))
    assert len(joined) == len(rows)  # every champion row is a candidate row ...
    np.testing.assert_array_equal(joined["realised_return_champ"], joined["realised_return"])
    decision = json.loads((second.run_dir / "evaluate" / "decision.json").read_text())
    assert decision["metrics"]["compared_with"] == "champion"
    report = (second.run_dir / "report" / "report.md").read_text()
    assert "champion" in report


def _frame(stamps, symbols, samples) -> pd.DataFrame:
    keys = pd.MultiIndex.from_product([stamps, symbols], names=["timestamp", "symbol"])
    frame = keys.to_frame(index=False)
    frame["position"] = 0.5
    frame["realised_return"] = np.arange(len(frame), dtype=float) / 100
    frame["sample"] = np.repeat(samples, len(symbols))
    return frame


def test_common_rows_keeps_only_bars_out_of_sample_for_both_and_counts_the_rest():
    stamps = pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC")
    candidate = _frame(stamps, ["A", "B"], ["train"] * 4 + ["test"] * 6)
    # the champion trained on two more bars and never saw symbol B
    champion = _frame(stamps, ["A"], ["train"] * 6 + ["test"] * 4)
    champion["realised_return"] = -1.0
    kept, rows, counts = common_rows(candidate, champion)
    assert counts["candidate_out_of_sample"] == 12
    assert counts["scored"] == 4  # A on the last four bars
    assert counts["dropped_champion_in_sample"] == 2  # A on bars 4-5
    assert counts["dropped_champion_missing"] == 6  # B on every test bar
    scored = kept[kept["sample"] == "test"]
    assert scored["symbol"].unique().tolist() == ["A"] and len(scored) == 4
    assert (kept[kept["sample"] == "train"]["timestamp"] < stamps[6]).all()
    assert rows[["timestamp", "symbol"]].equals(
        scored[["timestamp", "symbol"]].reset_index(drop=True)
    )
    # the champion is scored on the candidate's realised returns, not its own
    np.testing.assert_array_equal(rows["realised_return"], scored["realised_return"])


def test_regimes_never_change_the_database_without_the_flag(tmp_path):
    db = tiny_db(tmp_path / "market.db")
    before = sha(db)
    opts = options(db, tmp_path / "runs", skip_training=True)
    plain = run_pipeline(opts, stages=("validate", "regimes"))
    assert sha(db) == before and plain.stage("regimes").status == "skipped"
    built = run_pipeline(
        resume=plain.run_dir, changes={"regenerate_regimes": True}, stages=("regimes",)
    )
    record = built.stage("regimes")
    assert record.status == "done" and sha(db) != before
    key = str(db.resolve())
    assert record.inputs[key] == before and record.external_writes[key] == sha(db)
    assert set(read_regimes(db).columns) >= {"volatility", "liquidity"}
    labels = json.loads((built.run_dir / "regimes" / "labels.json").read_text())
    assert labels["regenerated"] and labels["sha256_before"] == before
    # the run's own write does not count as a changed input on resume
    stamp = os.stat(built.run_dir / "regimes" / "labels.json").st_mtime_ns
    again = run_pipeline(resume=built.run_dir, stages=("validate", "regimes"))
    assert again.stage("validate").status == "done"
    assert os.stat(built.run_dir / "regimes" / "labels.json").st_mtime_ns == stamp
    # without the flag, the labels now in the database are recorded, not rebuilt
    recorded = run_pipeline(options(db, tmp_path / "runs", skip_training=True), stages=("regimes",))
    assert (
        recorded.stage("regimes").status == "done" and "unchanged" in recorded.stage("regimes").note
    )


def test_strict_validation_fails_the_run_and_keeps_its_report(tmp_path):
    db = tiny_db(tmp_path / "market.db")
    import sqlite3

    with sqlite3.connect(db) as con:  # a 30-bar hole in one symbol: a gap warning
        stamps = [
            r[0]
            for r in con.execute(
                "SELECT timestamp FROM series WHERE symbol='AAA' ORDER BY timestamp"
            )
        ]
        con.executemany(
            "DELETE FROM series WHERE symbol = ? AND timestamp = ?",
            [("AAA", t) for t in stamps[100:130]],
        )
    with pytest.raises(DataValidationError, match="gap"):
        run_pipeline(options(db, tmp_path / "runs"))
    run_dir = next((tmp_path / "runs").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    validate = manifest["stages"][0]
    assert validate["status"] == "failed" and "gap" in validate["note"]
    assert "validate/report.json" in validate["outputs"]
    report = json.loads((run_dir / "validate" / "report.json").read_text())
    assert report["passed"] is False and report["failures"][0]["check"] == "gap"
    assert all(s["status"] == "pending" for s in manifest["stages"][1:])


def test_warm_start_pretrain_needs_a_pretrained_backbone(db, tmp_path):
    with pytest.raises(ValueError, match="--warm-start pretrain: no pretrained backbone"):
        run_pipeline(options(db, tmp_path / "runs", warm_start="pretrain"))
    run_dir = next((tmp_path / "runs").iterdir())
    train = json.loads((run_dir / "manifest.json").read_text())["stages"][3]
    assert train["name"] == "train" and train["status"] == "failed"


def test_options_refuse_what_cannot_run(db, tmp_path):
    with pytest.raises(FileNotFoundError, match="--dataset"):
        options(tmp_path / "missing.db", tmp_path)
    with pytest.raises(ValueError, match="--warm-start 'champion'"):
        options(db, tmp_path, warm_start="champion")
    with pytest.raises(ValueError, match="--from-stage train needs --resume"):
        run_pipeline(options(db, tmp_path), from_stage="train")


def test_watch_runs_the_pipeline_on_a_dump_that_lands(tmp_path):
    import shutil
    import threading

    from market_nn_plus_ultra.orchestration.pipeline import watch_retrain

    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 7\n")
    folder = tmp_path / "dumps"
    folder.mkdir()
    source = tiny_db(tmp_path / "source.db")
    stop, results = threading.Event(), []

    def done(result):
        results.append(result)
        stop.set()

    given = {
        "train_config": config,
        "overrides": (*FIRST, "orchestration.watch_debounce_s=0.2"),
        "skip_pretraining": True,
        "output_dir": tmp_path / "runs",
    }
    watcher = threading.Thread(
        target=watch_retrain, args=(folder, given), kwargs={"stop": stop, "on_result": done}
    )
    watcher.start()
    try:
        time.sleep(1.5)  # dumps present when watching starts are the baseline: land after it
        shutil.copy(source, folder / "dump.db")
        assert stop.wait(60), "no run started for the dump"
    finally:
        stop.set()
        watcher.join(10)
    (result,) = results
    assert result.stage("evaluate").status == "done"
    recorded = json.loads((result.run_dir / "run.json").read_text())
    assert recorded["dataset"] == str((folder / "dump.db").resolve())
    with pytest.raises(ValueError, match="--regenerate-regimes"):
        watch_retrain(folder, {**given, "regenerate_regimes": True})


RL = (
    "reinforcement.env.num_envs=4",
    "reinforcement.env.episode_length=16",
    "reinforcement.ppo.steps_per_rollout=12",
    "reinforcement.ppo.minibatches=2",
    "reinforcement.ppo.update_epochs=1",
    "reinforcement.updates=2",
)


def test_the_rl_policy_is_the_candidate_when_fine_tuned(db, tmp_path):
    result = run_pipeline(
        options(db, tmp_path / "runs", overrides=(*FIRST, *RL), run_reinforcement=True)
    )
    rl = result.stage("rl_finetune")
    assert rl.status == "done" and "2 PPO updates" in rl.note
    assert "rl_finetune/policy.pt" in rl.outputs
    assert rl.inputs["train/best.ckpt"] == sha(result.run_dir / "train" / "best.ckpt")
    metrics = json.loads((result.run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["candidate"]["run"] == str(result.run_dir / "rl_finetune")
    assert read_champion(tmp_path / "runs").checkpoint == (result.run_dir / "rl_finetune").resolve()


def test_a_champion_that_cannot_predict_is_recorded_not_fatal(first, db, tmp_path):
    from types import SimpleNamespace

    from market_nn_plus_ultra.orchestration.pipeline import RetrainRun
    from market_nn_plus_ultra.orchestration.pipeline.evaluate import _champion_predictions

    result, _ = first
    run = RetrainRun.resume(result.run_dir)
    gone = SimpleNamespace(run_dir=tmp_path / "old", checkpoint=tmp_path / "old" / "train")
    frame, error = _champion_predictions(run, gone)
    assert frame is None and error.startswith("FileNotFoundError") and "old" in error
