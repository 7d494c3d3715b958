"""Checkpoints load with weights_only=True: a pickle that would run code is refused, unrun.

The hostile file is a real run's checkpoint with one extra entry whose pickle calls
:func:`_plant` (a harmless stand-in for ``os.system``) while it loads: the marker file it
writes proves whether any code ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.training import CheckpointError, train
from market_nn_plus_ultra.training.safe_load import read_checkpoint
from tests.training._train_cases import TINY, fixture_db, tiny_config


def _plant(path: str) -> str:
    """What the hostile pickle calls while it loads: leaves a marker file."""
    Path(path).write_text("code ran")
    return path


class _Payload:
    """Pickles as a call to :func:`_plant` (the shape of an ``os.system`` exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_plant, (str(self.marker),))


def _hostile(source: Path, target: Path, marker: Path) -> Path:
    """``source`` (a real checkpoint) plus an entry that runs :func:`_plant` when unpickled."""
    ckpt = dict(torch.load(source, map_location="cpu", weights_only=True))
    ckpt["callbacks_extra"] = _Payload(marker)
    torch.save(ckpt, target)
    return target


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safety")
    db = fixture_db(tmp, rows=300)
    return train(tiny_config(db, tmp / "run")), db


def _hostile_run(run, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run folder whose best.ckpt and last.ckpt are hostile."""
    result, _ = run
    folder = tmp_path / "hostile_run"
    shutil.copytree(result.checkpoint_dir, folder)
    marker = tmp_path / "MARKER"
    for name in ("best.ckpt", "last.ckpt"):
        _hostile(result.checkpoint_dir / name, folder / name, marker)
    return folder, marker


def test_the_hostile_file_does_run_code_when_loaded_unsafely(run, tmp_path):
    # the premise of every test below: without weights_only the marker appears
    result, _ = run
    marker = tmp_path / "MARKER"
    path = _hostile(result.checkpoint_dir / "last.ckpt", tmp_path / "x.ckpt", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran"


def test_every_checkpoint_the_product_writes_loads_with_weights_only(run):
    result, _ = run
    for path in (result.checkpoint_dir / "best.ckpt", result.checkpoint_dir / "last.ckpt"):
        ckpt = read_checkpoint(path)
        assert {"state_dict", "hyper_parameters", "optimizer_states", "loops"} <= set(ckpt)
        assert ckpt["hyper_parameters"]["n_features"] == result_n_features(result)


def result_n_features(result) -> int:
    import json

    return json.loads(result.model_info_path.read_text())["n_features"]


def test_agent_refuses_the_hostile_checkpoint_without_running_it(run, tmp_path):
    folder, marker = _hostile_run(run, tmp_path)
    with pytest.raises(CheckpointError, match="refused") as caught:
        Agent.from_checkpoint(folder, device="cpu")
    message = str(caught.value)
    assert "_plant" in message and str(folder / "best.ckpt") in message
    assert "Nothing from it was run" in message
    assert not marker.exists()


def test_predict_command_refuses_it_with_exit_2(run, tmp_path):
    folder, marker = _hostile_run(run, tmp_path)
    args = ["predict", "--checkpoint", str(folder), "--device", "cpu"]
    args += ["-o", str(tmp_path / "p.parquet")]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exit_code == 2, invoked.output
    assert "refused" in invoked.output and not marker.exists()
    assert not (tmp_path / "p.parquet").exists()


def _train_args(db: Path, out: Path) -> list[str]:
    args = ["train", "--accelerator", "cpu"]
    for item in [f"data.sqlite_path={db}", "data.cache=false", f"training.checkpoint_dir={out}"]:
        args += ["--set", item]
    for item in TINY:
        args += ["--set", item]
    return args


def test_train_resume_refuses_it_with_exit_2(run, tmp_path):
    result, db = run
    marker = tmp_path / "MARKER"
    hostile = _hostile(result.checkpoint_dir / "last.ckpt", tmp_path / "last.ckpt", marker)
    args = [*_train_args(db, tmp_path / "resumed"), "--resume", str(hostile)]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exit_code == 2, invoked.output
    flat = " ".join(invoked.output.split())
    assert "--resume" in flat and "refused" in flat and not marker.exists()


def test_a_normal_checkpoint_still_resumes_and_predicts(run, tmp_path):
    result, db = run
    out = tmp_path / "resumed"
    args = [*_train_args(db, out), "--resume", str(result.checkpoint_dir / "last.ckpt")]
    args += ["--set", "training.max_epochs=2"]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exit_code == 0, invoked.output
    ckpt = read_checkpoint(out / "last.ckpt")
    assert ckpt["epoch"] == 1  # the second epoch, continued from the first
    frame = Agent.from_checkpoint(out, device="cpu").predict(db, batch_size=50)
    assert len(frame) > 20 and frame["position"].between(-1, 1).all()


def test_a_truncated_file_says_so(run, tmp_path):
    result, _ = run
    data = (result.checkpoint_dir / "last.ckpt").read_bytes()
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(broken, "--resume ")
