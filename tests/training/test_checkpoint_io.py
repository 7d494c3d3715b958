"""Lightning's checkpoints go through the crash-safe writer: a failed save keeps the old file."""

from __future__ import annotations

import errno

import pytest
import torch

from market_nn_plus_ultra.training import checkpoint_io, train
from market_nn_plus_ultra.training.checkpoint_io import AtomicCheckpointIO
from tests.training._train_cases import fixture_db, tiny_config


def test_a_save_that_fails_midway_keeps_the_old_checkpoint_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "steps" / "step-10.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 10, "w": torch.arange(4.0)}, target)
    good = target.read_bytes()

    def full_disk(obj, path):
        with open(path, "wb") as handle:
            handle.write(good[: len(good) // 3])  # a truncated write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 20, "w": torch.zeros(4)}, target)
    assert target.read_bytes() == good  # before: a truncated step-10.ckpt under its name
    assert sorted(p.name for p in target.parent.iterdir()) == ["step-10.ckpt"]
    loaded = torch.load(target, weights_only=True)
    assert loaded["step"] == 10 and torch.equal(loaded["w"], torch.arange(4.0))


def test_train_writes_every_checkpoint_through_the_atomic_io(tmp_path, monkeypatch):
    saved: list[str] = []
    real = AtomicCheckpointIO.save_checkpoint

    def recording(self, checkpoint, path, storage_options=None):
        saved.append(str(path))
        real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    db = fixture_db(tmp_path, rows=300)
    result = train(tiny_config(db, tmp_path / "run"))
    written = sorted(p for p in result.checkpoint_dir.rglob("*.ckpt"))
    assert written, "the run wrote no checkpoint"
    assert {str(p) for p in written} <= set(saved)  # each file on disk came through it
    assert not list(result.checkpoint_dir.rglob("*.tmp"))
