"""``plus-ultra bench sweep`` and ``bench pretraining-comparison`` through the real entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from market_nn_plus_ultra.cli._common import out
from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.orchestration.catalogue import read_catalogue

SETS = [
    "data.cache=false",
    "data.alternative_data=[]",
    "model.n_heads=2",
    "model.ff_mult=2",
    "model.dropout=0.0",
    "model.dilations=[1]",
    "model.ssm_state_dim=4",
    "model.d_model=16",
    "model.depth=1",
    "windows.window=8",
    "training.batch_size=32",
    "training.num_workers=0",
    "training.warmup_steps=0",
    "training.accelerator=cpu",
    "diagnostics.enabled=false",
    "tracking.tensorboard=false",
    "pretraining.max_steps=3",
    "pretraining.batch_size=32",
    "pretraining.warmup_steps=0",
    "pretraining.accelerator=cpu",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _wide_tables():
    saved = out._width
    out.width = 250  # the tables' cells are asserted whole, not wrapped at 80 columns
    yield
    out._width = saved


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "market.db"
    return write_fixture(path, symbols=["AAA", "BBB"], rows=300, freq="1D", alt_features=0)


def _run(db: Path, *args: str) -> tuple[int, str]:
    sets = [item for s in [f"data.sqlite_path={db}", *SETS] for item in ("--set", s)]
    result = CliRunner().invoke(app, ["bench", *args, *sets])
    return result.exit_code, " ".join(result.output.split())


def test_sweep_trains_each_scenario_and_appends_to_the_catalogue(db, tmp_path):
    catalogue = tmp_path / "catalogue.parquet"
    args = (
        "sweep", "--architectures", "hybrid_transformer,state_space", "--model-dims", "16",
        "--depths", "1", "--horizons", "1", "--horizons", "2", "--limit-train-batches", "2",
        "--max-epochs", "1", "--output", str(tmp_path / "runs"), "--catalogue", str(catalogue),
    )  # fmt: skip
    code, text = _run(db, *args)
    assert code == 0, text
    frame = read_catalogue(catalogue)
    assert frame["status"].eq("ok").all(), frame["error"].tolist()
    assert list(zip(frame["architecture"], frame["horizon"], strict=True)) == [
        ("hybrid_transformer", 1),
        ("hybrid_transformer", 2),
        ("state_space", 1),
        ("state_space", 2),
    ]
    assert frame["global_step"].eq(2).all() and frame["epochs"].eq(1).all()
    assert np.isfinite(frame[["val_ic", "roi", "samples_per_s"]].to_numpy(dtype=float)).all()
    assert f"catalogue (4 row(s) appended): {catalogue}" in text
    assert "hybrid_transformer-16-1-2" in text  # the table names each scenario
    # each scenario's deflated Sharpe over the sweep's 4 trials, in the catalogue and table
    assert frame["n_trials"].eq(4).all()
    assert "deflated Sharpe (DSR) over 4 trial(s)" in text
    dsr, psr = frame["deflated_sharpe"].to_numpy(), frame["probabilistic_sharpe"].to_numpy()
    assert ((dsr >= 0) & (dsr <= 1) & (dsr < psr)).all()  # the selection costs every row
    assert f"{psr[0]:.3f} │ {dsr[0]:.3f} │ 4 │" in text  # PSR, DSR, trials of the first row

    # an invalid width is recorded as failed; the run still appends; all failed → exit 1
    code, text = _run(
        db, "sweep", "--model-dims", "18", "--catalogue", str(catalogue),
        "--output", str(tmp_path / "runs"), "--limit-train-batches", "2",
    )  # fmt: skip
    assert code == 1 and "failed" in text and "model.n_heads" in text
    after = read_catalogue(catalogue)
    assert len(after) == 5 and after["status"].iloc[-1] == "failed"
    assert np.isnan(after["deflated_sharpe"].iloc[-1]) and "over 0 trial(s)" in text
    assert after["deflated_sharpe"].iloc[:4].tolist() == frame["deflated_sharpe"].tolist()


def test_sweep_names_an_unknown_grid_axis(db, tmp_path):
    code, text = _run(db, "sweep", "--grid", "depht=1,2", "--catalogue", str(tmp_path / "c.pq"))
    assert code == 2 and "did you mean `depth`" in text
    assert not (tmp_path / "c.pq").exists()


def test_pretraining_comparison_prints_the_deltas(db, tmp_path):
    catalogue = tmp_path / "catalogue.parquet"
    code, text = _run(
        db, "pretraining-comparison", "--objective", "contrastive", "--max-epochs", "1",
        "--limit-train-batches", "2", "--output", str(tmp_path / "runs"),
        "--catalogue", str(catalogue),
    )  # fmt: skip
    assert code == 0, text
    frame = read_catalogue(catalogue)
    assert frame["kind"].tolist() == ["scratch", "warm_start"]
    assert frame["comparison"].nunique() == 1
    cfg_json = frame["config"].iloc[1]
    assert '"objective": "contrastive"' in cfg_json
    delta = frame["delta_val_ic"].iloc[1]
    assert delta == pytest.approx(frame["val_ic"].iloc[1] - frame["val_ic"].iloc[0])
    assert "warm-started minus scratch" in text and f"{delta:+,.4f}" in text
    assert f"comparison {frame['comparison'].iloc[0]}" in text


@pytest.mark.slow  # starts and stops a whole local Ray: 25-60 s on 2 busy cores
def test_sweep_with_the_ray_engine_on_a_local_ray(db, tmp_path):
    ray = pytest.importorskip("ray", reason="the distributed extra (Ray Tune) is not installed")
    catalogue = tmp_path / "catalogue.parquet"
    common = (
        "sweep", "--engine", "ray", "--model-dims", "16,18", "--limit-train-batches", "2",
        "--max-epochs", "1", "--output", str(tmp_path / "runs"), "--catalogue", str(catalogue),
    )  # fmt: skip
    # no Ray is running in this process: the command starts a local one, and stops it
    code, text = _run(db, *common, "--max-concurrent", "2", "--cpus-per-trial", "1")
    assert code == 0, text
    assert "sweeping 2 scenario(s)" in text and "with Ray (local)" in text
    frame = read_catalogue(catalogue)
    assert sorted(zip(frame["d_model"], frame["status"], strict=True)) == [
        (16, "ok"),
        (18, "failed"),
    ]
    assert "18 failed:" in text and "model.n_heads" in text  # said as the trial ends
    assert "1 of 2 scenario(s) failed" in text and "over 1 trial(s)" in text
    assert f"catalogue (2 row(s) appended): {catalogue}" in text
    assert not ray.is_initialized()


def test_sweep_ray_engine_without_ray_names_the_extra(db, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    monkeypatch.delitem(sys.modules, "market_nn_plus_ultra.orchestration.sweep_ray", False)
    catalogue = tmp_path / "c.parquet"
    code, text = _run(db, "sweep", "--engine", "ray", "--catalogue", str(catalogue))
    assert code == 2, text
    assert "--engine ray needs Ray Tune" in text
    assert "pip install 'market-nn-plus-ultra[distributed]'" in text
    assert not catalogue.exists()


def test_sweep_refuses_ray_options_without_the_ray_engine(db, tmp_path):
    code, text = _run(db, "sweep", "--max-concurrent", "2", "--ray-address", "auto")
    assert code == 2 and "--ray-address, --max-concurrent: only for --engine ray" in text
