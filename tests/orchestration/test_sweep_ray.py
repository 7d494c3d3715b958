"""The Ray engine of a sweep on a local Ray: the sequential engine's rows, failures, the driver."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.orchestration.catalogue import CATALOGUE_COLUMNS, read_catalogue
from market_nn_plus_ultra.orchestration.sweep import (
    begin_sweep,
    expand_scenarios,
    run_scenario,
    run_sweep,
)
from tests.orchestration.test_sweep import TINY

ray = pytest.importorskip("ray", reason="the distributed extra (Ray Tune) is not installed")
sweep_ray = pytest.importorskip("market_nn_plus_ultra.orchestration.sweep_ray")

#: What legitimately differs between two runs of one scenario: when, how long, where.
VARYING = (
    "timestamp",
    "sweep_id",
    "scenario_id",
    "checkpoint_dir",
    "runtime_s",
    "train_loop_s",
    "samples_per_s",
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray trial runs (Ray sets OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Config:
    db = tmp_path_factory.mktemp("sweep_ray") / "market.db"
    write_fixture(db, symbols=["AAA", "BBB"], rows=300, freq="1D", alt_features=0)
    return load_config(None, [f"data.sqlite_path={db}", *TINY])


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows in scenario order, without timings, ids and paths (the config's one too)."""
    frame = frame.sort_values("swept").reset_index(drop=True).drop(columns=list(VARYING))

    def without_run_dir(text: object) -> object:
        if pd.isna(text):
            return text
        cfg = json.loads(text)
        cfg["training"].pop("checkpoint_dir")
        return json.dumps(cfg, sort_keys=True)

    frame["config"] = frame["config"].map(without_run_dir).astype("string")
    return frame


def test_ray_engine_appends_the_rows_the_sequential_engine_does(local_ray, base, tmp_path):
    scenarios = expand_scenarios({"architecture": ["hybrid_transformer", "state_space"]})
    sequential = run_sweep(base, scenarios, tmp_path / "seq", tmp_path / "seq.parquet")

    catalogue = tmp_path / "ray.parquet"
    started: list[int] = []
    rows_when_done: list[int] = []  # the catalogue's length when each row is reported

    def done(i: int, scenario, row: dict) -> None:
        rows_when_done.append(len(read_catalogue(catalogue)))

    result = sweep_ray.run_sweep_ray(
        base,
        scenarios,
        tmp_path / "ray",
        catalogue,
        options=sweep_ray.RayOptions(max_concurrent=2, cpus_per_trial=1),
        on_start=lambda i, s: started.append(i),
        on_done=done,
    )
    assert sorted(started) == [0, 1]
    assert rows_when_done == [1, 2]  # the driver appended each row as its trial ended

    frame = read_catalogue(catalogue)
    assert list(frame.columns) == list(CATALOGUE_COLUMNS)
    assert frame["status"].eq("ok").all(), frame["error"].tolist()
    assert frame["sweep_id"].eq(result.sweep_id).all() and frame["scenario_id"].is_unique
    # the deflation step ran over the 2 trials, as in the sequential sweep
    assert frame["n_trials"].eq(2).all() and frame["deflated_sharpe"].notna().all()
    pd.testing.assert_frame_equal(
        _comparable(frame), _comparable(read_catalogue(tmp_path / "seq.parquet"))
    )

    # the returned rows: scenario order, deflated, each run in its own absolute folder
    assert result.output.is_absolute() and result.output.parent == (tmp_path / "ray").resolve()
    assert [Path(r["checkpoint_dir"]).name for r in result.rows] == [
        "000-hybrid_transformer",
        "001-state_space",
    ]
    for ours, theirs in zip(result.rows, sequential.rows, strict=True):
        assert ours["deflated_sharpe"] == pytest.approx(theirs["deflated_sharpe"], rel=1e-12)
        assert (Path(ours["checkpoint_dir"]) / "test_predictions.parquet").exists()
    assert (result.output / "ray").is_dir()  # Tune's own records of the trials


def test_a_failing_scenario_is_a_failed_row_and_the_sweep_goes_on(local_ray, base, tmp_path):
    # d_model 18 with 2 heads: odd head widths, an invalid combination; it runs first
    scenarios = expand_scenarios({"d_model": [18, 16]})
    catalogue = tmp_path / "catalogue.parquet"
    result = sweep_ray.run_sweep_ray(
        base,
        scenarios,
        tmp_path / "runs",
        catalogue,
        options=sweep_ray.RayOptions(max_concurrent=1),
    )
    frame = read_catalogue(catalogue)
    assert [r["status"] for r in result.rows] == ["failed", "ok"]
    failed = frame[frame["status"] == "failed"].iloc[0]
    # the error is the one the sequential engine records for that scenario
    alone = run_scenario(base, scenarios[0], tmp_path / "alone", run_id="x")
    assert failed["error"] == alone["error"] and "model.n_heads" in failed["error"]
    assert failed["d_model"] == 18 and pd.isna(failed["config"]) and pd.isna(failed["n_trials"])
    ok = frame[frame["status"] == "ok"].iloc[0]
    assert ok["d_model"] == 16 and ok["n_trials"] == 1  # one trial: DSR = PSR
    assert ok["deflated_sharpe"] == ok["probabilistic_sharpe"]


def test_a_trial_ray_lost_is_recorded_with_ray_error(tmp_path):
    scenarios = expand_scenarios({"d_model": [16, 32]})
    sweep = begin_sweep(scenarios, tmp_path / "runs", tmp_path / "catalogue.parquet")
    seen: list[str] = []
    recorder = sweep_ray._Recorder(sweep, scenarios, None, lambda i, s, r: seen.append(r["error"]))
    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\nTraceback ...\n\nray.exceptions.OutOfMemoryError: killed\n")
    lost = SimpleNamespace(config={"index": 1}, error_file=str(error_file), last_result={})
    recorder.on_trial_start(0, [], lost)
    recorder.on_trial_error(0, [], lost)
    mute = SimpleNamespace(config={"index": 0}, last_result={"training_iteration": 1})
    recorder.on_trial_complete(0, [], mute)
    assert seen == [
        f"ray.exceptions.OutOfMemoryError: killed (Ray traceback: {error_file})",
        "the Ray trial ended without reporting its row",
    ]
    frame = read_catalogue(sweep.catalogue_path)
    assert frame["status"].eq("failed").all() and frame["d_model"].tolist() == [32, 16]
    assert frame["checkpoint_dir"].iloc[0] == str(sweep.output / "001-32")
    assert frame["runtime_s"].iloc[0] >= 0 and recorder.done == {0, 1}
    recorder.on_trial_error(0, [], lost)  # a second report of one trial adds no row
    assert len(read_catalogue(sweep.catalogue_path)) == 2


def test_a_row_the_driver_cannot_append_stops_the_sweep(tmp_path):
    scenarios = expand_scenarios({"d_model": [16]})
    sweep = begin_sweep(scenarios, tmp_path / "runs", tmp_path / "catalogue.parquet")
    sweep.catalogue_path.mkdir()  # a folder where the catalogue file should be
    recorder = sweep_ray._Recorder(sweep, scenarios, None, None)
    stopper = sweep_ray._StopOnError(recorder)
    assert not stopper.stop_all()
    recorder.on_trial_error(0, [], SimpleNamespace(config={"index": 0}, error_file=None))
    assert isinstance(recorder.error, OSError | ValueError) and stopper.stop_all()
    assert recorder.done == set()


def test_a_trial_larger_than_the_local_ray_is_refused_before_it_waits(monkeypatch):
    calls: list[str] = []
    # a fresh local Ray of 2 CPUs and no GPU (the real one is this module's, left alone)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(f"init {kwargs['address']}"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    assert sweep_ray._connect(sweep_ray.RayOptions(cpus_per_trial=2)) is True
    with pytest.raises(ValueError, match=r"--gpus-per-trial 1: this machine's Ray has 0 GPU"):
        sweep_ray._connect(sweep_ray.RayOptions(gpus_per_trial=1))
    with pytest.raises(ValueError, match=r"--cpus-per-trial 3: this machine's Ray has 2 CPU"):
        sweep_ray._connect(sweep_ray.RayOptions(cpus_per_trial=3))
    assert calls == ["init None", "init None", "shutdown", "init None", "shutdown"]
    # a cluster is not checked: it may grow (autoscaling) to fit the trial
    assert sweep_ray._connect(sweep_ray.RayOptions(address="auto", gpus_per_trial=8)) is True
    assert calls[-1] == "init auto"


def test_ray_options_name_the_flag_to_fix():
    with pytest.raises(ValueError, match="--max-concurrent 0"):
        sweep_ray.RayOptions(max_concurrent=0)
    with pytest.raises(ValueError, match="--cpus-per-trial 0"):
        sweep_ray.RayOptions(cpus_per_trial=0)
    with pytest.raises(ValueError, match="--gpus-per-trial -1"):
        sweep_ray.RayOptions(gpus_per_trial=-1)
    with pytest.raises(ValueError, match=r"Ray Client .* --ray-address auto"):
        sweep_ray.RayOptions(address="ray://head:10001")
