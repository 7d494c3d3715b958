"""Curriculum: hand-checked schedules, shorter windows over the same items, a growing run."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from market_nn_plus_ultra.config import CurriculumConfig, load_config
from market_nn_plus_ultra.training.curriculum import (
    CurriculumCallback,
    CurriculumDataset,
    CurriculumScheduler,
    Stage,
)
from market_nn_plus_ultra.training.data import MarketDataModule
from market_nn_plus_ultra.training.module import TradingModule
from market_nn_plus_ultra.training.train import train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("curriculum"), rows=300)


def test_linear_schedule_by_hand():
    cfg = CurriculumConfig(enabled=True, start_window=16, start_horizon=1, ramp_epochs=4)
    sched = CurriculumScheduler(cfg, max_window=64, max_horizon=5)
    # window 16 + 48·e/4 = 16, 28, 40, 52, 64; horizon 1 + 4·e/4 = 1, 2, 3, 4, 5
    assert sched.schedule(6) == [
        Stage(16, 1),
        Stage(28, 2),
        Stage(40, 3),
        Stage(52, 4),
        Stage(64, 5),
        Stage(64, 5),
    ]
    # halves round up: 8 + 9·e/2 → 8, 12.5→13, 17
    odd = CurriculumScheduler(CurriculumConfig(start_window=8, ramp_epochs=2), 17, 1)
    assert [s.window for s in odd.schedule(3)] == [8, 13, 17]
    now = CurriculumScheduler(CurriculumConfig(start_window=4, ramp_epochs=0), 32, 3)
    assert now.at(0) == Stage(32, 3)


def test_stage_schedule_and_errors():
    cfg = load_config(
        None,
        [
            "curriculum.stages=[{epoch: 0, window: 8, horizon: 1}, "
            "{epoch: 2, window: 16, horizon: 3}, {epoch: 5, window: 32, horizon: 5}]"
        ],
    ).curriculum
    sched = CurriculumScheduler(cfg, max_window=32, max_horizon=5)
    windows = [s.window for s in sched.schedule(7)]
    assert windows == [8, 8, 16, 16, 16, 32, 32]
    assert [s.horizon for s in sched.schedule(7)] == [1, 1, 3, 3, 3, 5, 5]
    with pytest.raises(ValueError, match=r"stages\[2\]\.window=32 exceeds windows.window=16"):
        CurriculumScheduler(cfg, max_window=16, max_horizon=5)
    with pytest.raises(ValueError, match=r"model\.horizon=2"):
        CurriculumScheduler(cfg, max_window=32, max_horizon=2)
    with pytest.raises(ValueError, match="start at 0 and strictly increase"):
        load_config(None, ["curriculum.stages=[{epoch: 1, window: 8, horizon: 1}]"])


def test_shorter_window_reads_same_items(db, tmp_path):
    cfg = tiny_config(
        db, tmp_path, "windows.window=12", "windows.normalise=none", "training.supervision=last"
    )
    dm = MarketDataModule(cfg)
    dm.setup()
    full = dm.datasets["train"]
    ds = CurriculumDataset(full, cfg.windows, split=dm.splits["train"], normaliser=None)
    idx = np.array([0, 5, len(ds) - 1])
    ref = full.batch(idx)
    ds.set_window(5)
    short = ds[idx]
    assert len(ds) == len(full) and short["x"].shape[1] == 5
    # same end cells and targets; the inputs are the last 5 rows of the full windows
    for key in ("t_index", "symbol_index", "y", "y_mask"):
        torch.testing.assert_close(short[key], ref[key])
    torch.testing.assert_close(short["x"], ref["x"][:, -5:])
    ds.set_window(12)
    torch.testing.assert_close(ds[idx]["x"], ref["x"])
    with pytest.raises(ValueError, match=r"1\.\.windows\.window=12"):
        ds.set_window(13)


class _Seen(L.Callback):
    """Window length of the first batch and the module's loss horizon, per epoch."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, int | None]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, (batch["x"].shape[1], pl_module.loss_horizon))


def test_training_run_grows_window_and_horizon(db, tmp_path):
    cfg = tiny_config(
        db,
        tmp_path / "run",
        "windows.window=12",
        "windows.horizon=3",
        "model.horizon=3",
        "training.max_epochs=3",
        "diagnostics.enabled=false",
        "curriculum.enabled=true",
        "curriculum.start_window=4",
        "curriculum.start_horizon=1",
        "curriculum.ramp_epochs=2",
    )
    seen = _Seen()
    result = train(cfg, callbacks=[seen])
    # window 4 + 8·e/2 = 4, 8, 12; horizon 1 + 2·e/2 = 1, 2, 3 (3 = full: every step scored)
    assert seen.seen == {0: (4, 1), 1: (8, 2), 2: (12, None)}
    assert result.epochs == 3 and np.isfinite(result.metrics["val_loss"])


def test_loss_horizon_masks_later_steps(db, tmp_path):
    cfg = tiny_config(
        db, tmp_path, "windows.horizon=3", "model.horizon=3", "training.supervision=last"
    )
    dm = MarketDataModule(cfg)
    dm.setup()
    batch = dm.datasets["train"].batch(np.arange(16))
    module = TradingModule(cfg.model, cfg.training, dm.n_features).train()
    torch.manual_seed(0)
    full = module._step(batch)[0]
    module.loss_horizon = 1
    changed = dict(batch, y=batch["y"].clone())
    changed["y"][:, 1:] += 5.0  # targets the masked steps would see: must not matter
    torch.manual_seed(0)
    masked_a = module._step(batch)[0]
    torch.manual_seed(0)
    masked_b = module._step(changed)[0]
    torch.testing.assert_close(masked_a, masked_b)
    assert not torch.isclose(masked_a, full)
    module.eval()  # validation scores every step whatever the curriculum
    assert not torch.isclose(module._step(changed)[0], module._step(batch)[0])


def test_callback_needs_datamodule():
    cb = CurriculumCallback(CurriculumScheduler(CurriculumConfig(), 16, 1))

    class _Trainer:
        datamodule = None

    with pytest.raises(ValueError, match="MarketDataModule"):
        cb.setup(_Trainer(), None, "fit")
