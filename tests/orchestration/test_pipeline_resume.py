"""kill -9 in the middle of a retrain run, then --resume: finished stages stay as they were."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from market_nn_plus_ultra.data.fixtures import write_fixture

from .test_pipeline import FIRST

# The train stage runs long enough (many one-batch epochs) to be killed while running.
SLOW_TRAIN = (
    "training.max_epochs=40",
    "training.limit_train_batches=1",
    "training.early_stopping_patience=100",
)


def _manifest(out: Path) -> tuple[Path | None, dict]:
    runs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    if not runs or not (runs[0] / "manifest.json").is_file():
        return None, {}
    raw = json.loads((runs[0] / "manifest.json").read_text())
    return runs[0], {s["name"]: s for s in raw["stages"]}


def _files(run_dir: Path, stages: dict, names: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    found = [o for n in names for o in stages[n]["outputs"]]
    return {f: (os.stat(run_dir / f).st_mtime_ns, (run_dir / f).read_bytes()) for f in found}


def test_a_run_killed_with_sigkill_resumes_where_it_stopped(tmp_path):
    db = tmp_path / "market.db"
    write_fixture(db, symbols=["AAA", "BBB"], rows=400, freq="1D", alt_features=0, autocorr=0.2)
    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 7\n")
    out = tmp_path / "runs"
    sets = [arg for item in (*FIRST, *SLOW_TRAIN) for arg in ("--set", item)]
    base = [sys.executable, "-m", "market_nn_plus_ultra", "retrain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        *base,
        "--dataset",
        str(db),
        "--train-config",
        str(config),
        "--output-dir",
        str(out),
        "--skip-pretraining",
        *sets,
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        run_dir, stages = None, {}
        while time.monotonic() < deadline:
            run_dir, stages = _manifest(out)
            train = stages.get("train", {})
            if train.get("status") == "running" and (run_dir / "train" / "last.ckpt").is_file():
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.02)
        else:
            pytest.fail("the train stage never ran")
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no last manifest write
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    _, stages = _manifest(out)
    assert stages["validate"]["status"] == "done" and stages["train"]["status"] == "running"
    assert stages["evaluate"]["status"] == "pending"
    before = _files(run_dir, stages, ("validate",))

    done = subprocess.run(
        [*base, "--resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, stages = _manifest(out)
    assert _files(run_dir, stages, ("validate",)) == before  # same bytes, same mtimes
    assert {s["status"] for s in stages.values()} <= {"done", "skipped"}
    assert [n for n, s in stages.items() if s["status"] == "done"] == [
        "validate",
        "train",
        "evaluate",
        "report",
        "promote",
    ]
    warm = json.loads((run_dir / "train" / "warm_start.json").read_text())
    assert warm["kind"] == "resumed"  # training went on from the last.ckpt it left
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert metrics["epochs"] == 40
    assert (run_dir / "report" / "report.html").is_file()
    assert "manifest" in done.stdout and "promoted" in done.stdout


def test_a_stage_cut_while_running_is_redone_from_an_empty_folder(tmp_path):
    """What a kill leaves (a stage `running`, half its files) is redone; nothing else is."""
    from market_nn_plus_ultra.orchestration.pipeline import Manifest, run_pipeline

    from .test_pipeline import options, snapshot, tiny_db

    db = tiny_db(tmp_path / "market.db")
    first = run_pipeline(options(db, tmp_path / "runs", overrides=FIRST))
    kept = snapshot(first.run_dir, ("validate", "train"))
    manifest = Manifest.load(first.run_dir)
    manifest.update("evaluate", status="running", outputs=[], finished=None, seconds=None)
    for name in ("report", "promote"):
        manifest.update(name, status="pending", outputs=[], started=None, finished=None)
    junk = first.run_dir / "evaluate" / "half-written.parquet"
    junk.write_bytes(b"PAR1")
    resumed = run_pipeline(resume=first.run_dir)
    assert not junk.exists()
    assert snapshot(first.run_dir, ("validate", "train")) == kept
    assert [resumed.stage(n).status for n in ("evaluate", "report", "promote")] == ["done"] * 3
    assert resumed.promoted  # the run already named in champion.json stays the champion


def test_a_run_folder_busy_in_another_process_is_refused(tmp_path):
    """Two resumes of one run would write the same stage folders: the second is refused
    while the first holds the folder's lock, and runs once it is released."""
    import fcntl

    from market_nn_plus_ultra.orchestration.pipeline import run_pipeline
    from market_nn_plus_ultra.orchestration.pipeline.run import RunBusyError

    from .test_pipeline import options, tiny_db

    db = tiny_db(tmp_path / "market.db")
    first = run_pipeline(options(db, tmp_path / "runs", overrides=FIRST))
    with open(first.run_dir / ".retrain.lock", "a+b") as other:  # another process's hold
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RunBusyError, match="being run by another plus-ultra retrain"):
            run_pipeline(resume=first.run_dir)
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    assert run_pipeline(resume=first.run_dir).stage("train").status == "done"
