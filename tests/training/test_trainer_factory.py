"""build_trainer: ``train`` and ``pretrain`` get one Trainer from one set of shared fields."""

from __future__ import annotations

import importlib

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from market_nn_plus_ultra.config import Config, ConfigError, load_config
from market_nn_plus_ultra.config.training import TrainerConfig
from market_nn_plus_ultra.training.checkpoint_io import AtomicCheckpointIO
from market_nn_plus_ultra.training.trainer import build_trainer, resolve_precision

from ._train_cases import fixture_db, tiny_config

# the modules, not the package's same-named functions
train_module = importlib.import_module("market_nn_plus_ultra.training.train")
pretrain_module = importlib.import_module("market_nn_plus_ultra.training.pretrain")

#: the same hardware/loop values for either section, all away from their defaults
SHARED = {
    "accelerator": "cpu",
    "devices": 1,
    "precision": "bf16-mixed",
    "max_epochs": 3,
    "max_steps": 7,
    "limit_train_batches": 5,
    "gradient_clip": 0.5,
    "accumulate_grad_batches": 2,
    "deterministic": True,
    "log_every_n_steps": 3,
    "progress_bar": False,
}


def _settings(trainer: L.Trainer) -> dict[str, object]:
    """What a Trainer was built with, read back from its public attributes."""
    return {
        "accelerator": type(trainer.accelerator).__name__,
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "precision": trainer.precision,
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "limit_train_batches": trainer.limit_train_batches,
        "gradient_clip": trainer.gradient_clip_val,
        "accumulate": trainer.accumulate_grad_batches,
        "log_every_n_steps": trainer.log_every_n_steps,
        "sanity_steps": trainer.num_sanity_val_steps,
        "limit_val_batches": trainer.limit_val_batches,
        "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
        "distributed_sampler": trainer._accelerator_connector.use_distributed_sampler,
    }


class _Built(Exception):
    """Raised by the spy once the Trainer exists: nothing is fitted."""


def _capture(monkeypatch, module) -> list[L.Trainer]:
    built: list[L.Trainer] = []

    def spy(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        # deterministic=True reaches torch process-wide: record it, then undo it
        trainer.deterministic_set = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        built.append(trainer)
        raise _Built

    monkeypatch.setattr(module, "build_trainer", spy)
    return built


def test_train_and_pretrain_build_the_same_trainer(tmp_path, monkeypatch):
    db = fixture_db(tmp_path, rows=200)
    sets = [
        f"{section}.{k}={v}" for section in ("training", "pretraining") for k, v in SHARED.items()
    ]
    cfg = tiny_config(
        db,
        tmp_path / "train",
        f"pretraining.checkpoint_dir={tmp_path / 'pretrain'}",
        "pretraining.batch_size=32",
        "diagnostics.enabled=false",
        *sets,
    )
    trained, pretrained = (
        _capture(monkeypatch, train_module),
        _capture(monkeypatch, pretrain_module),
    )
    with pytest.raises(_Built):
        train_module.train(cfg)
    with pytest.raises(_Built):
        pretrain_module.pretrain(cfg)

    a, b = _settings(trained[0]), _settings(pretrained[0])
    expected = {
        "accelerator": "CPUAccelerator",
        "devices": 1,
        "num_nodes": 1,
        "precision": "bf16-mixed",
        "max_epochs": 3,
        "max_steps": 7,
        "limit_train_batches": 5,
        "gradient_clip": 0.5,
        "accumulate": 2,
        "log_every_n_steps": 3,
        "sanity_steps": 0,
        "limit_val_batches": 1.0,
        "checkpoint_io": "AtomicCheckpointIO",
        # the old pretrain Trainer left this True: Lightning re-sharded the rank-sharded sampler
        "distributed_sampler": False,
    }
    assert a == expected and b == expected
    assert trained[0].deterministic_set and pretrained[0].deterministic_set
    # what differs is only what each command passes: its checkpoints and its loggers
    assert trained[0].checkpoint_callbacks and not pretrained[0].checkpoint_callbacks
    assert isinstance(pretrained[0].logger, CSVLogger)


def test_pretraining_accepts_every_shared_key_with_its_own_defaults():
    # keys the old PretrainingConfig refused: now one field set for both sections
    cfg = load_config(
        None,
        [
            "pretraining.strategy=ddp",
            "pretraining.num_nodes=2",
            "pretraining.accumulate_grad_batches=4",
        ],
    )
    assert (cfg.pretraining.strategy, cfg.pretraining.num_nodes) == ("ddp", 2)
    assert cfg.pretraining.accumulate_grad_batches == 4
    # defaults stay per section, bounds and descriptions come from the shared field
    p, t = Config().pretraining, Config().training
    assert (p.learning_rate, p.warmup_steps, p.max_epochs, p.log_every_n_steps) == (
        1e-3,
        100,
        10,
        10,
    )
    assert (t.learning_rate, t.warmup_steps, t.max_epochs, t.log_every_n_steps) == (
        3e-4,
        200,
        20,
        50,
    )
    for name in TrainerConfig.model_fields:
        shared = TrainerConfig.model_fields[name]
        for section in (type(p), type(t)):
            field = section.model_fields[name]
            assert (field.description, field.metadata) == (shared.description, shared.metadata)
    with pytest.raises(ConfigError, match=r"pretraining\.max_epochs"):
        load_config(None, ["pretraining.max_epochs=0"])


def test_callbacks_decide_checkpointing_and_loggers_add_a_learning_rate_monitor(tmp_path):
    section = TrainerConfig(accelerator="cpu", progress_bar=False)
    bare = build_trainer(section, tmp_path, validate=False)
    assert bare.checkpoint_callbacks == [] and bare.limit_val_batches == 0
    assert not any(isinstance(cb, LearningRateMonitor) for cb in bare.callbacks)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    logged = build_trainer(
        section, tmp_path, loggers=[CSVLogger(tmp_path, name="logs")], callbacks=[ckpt]
    )
    assert logged.checkpoint_callbacks == [ckpt]
    assert sum(isinstance(cb, LearningRateMonitor) for cb in logged.callbacks) == 1
    assert isinstance(logged.strategy.checkpoint_io, AtomicCheckpointIO)


def test_float32_matmul_precision_is_set_by_the_factory(tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        build_trainer(TrainerConfig(accelerator="cpu", float32_matmul_precision="medium"), tmp_path)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(
    ("precision", "accelerator", "cuda", "bf16", "expected"),
    [
        ("auto", "auto", False, False, "32-true"),
        ("auto", "cpu", True, True, "32-true"),
        ("auto", "auto", True, True, "bf16-mixed"),
        ("auto", "cuda", True, False, "16-mixed"),  # the old train() chose bf16-mixed here
        ("16-mixed", "cpu", False, False, "16-mixed"),
    ],
)
def test_resolve_precision(monkeypatch, precision, accelerator, cuda, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision(precision, accelerator) == expected
    assert train_module.resolve_precision is resolve_precision  # one rule, re-exported
