"""Curriculum: train on short windows and near horizons first, then grow them over epochs.

    scheduler = CurriculumScheduler(cfg.curriculum, cfg.windows.window, cfg.model.horizon)
    scheduler.at(3)                       # Stage(window=40, horizon=3)
    train(cfg, callbacks=[CurriculumCallback(scheduler)])   # train() adds it from config

The schedule is either explicit ``curriculum.stages`` (each applies from its ``epoch``
until the next stage) or linear growth from ``start_window``/``start_horizon`` to the
full ``windows.window``/``model.horizon`` over ``ramp_epochs`` epochs (rounded to whole
bars). From ``ramp_epochs`` on, and after the last stage, training sees what the config
describes, so validation, test and inference never depend on the curriculum.

Window growth. The training windows keep the item set of the full window (the same
end cells, the same batch sampler, the same number of batches per epoch); only how far
back each item reads changes. :class:`CurriculumDataset` answers a batch request for
the items of the full dataset with the windows of a shorter one ending at the same
cells — a shorter window reads a subset of the rows the full one reads, so purging
still holds — normalised over its own rows. The active window lives in a shared-memory
tensor, so DataLoader workers (persistent ones included) see each change.

Horizon growth. The head always predicts the full ``model.horizon`` steps (its shape
never changes, checkpoints stay loadable); the training loss scores only the first
``horizon`` steps of the stage (:attr:`TradingModule.loss_horizon`), so later steps are
masked out of the head loss rather than trained on. The PnL/risk terms read only the
first step and validation always scores every step, so epochs stay comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset

from ..config import CurriculumConfig, WindowsConfig
from ..windows import Normaliser, SlidingWindowDataset, Split

__all__ = ["CurriculumCallback", "CurriculumDataset", "CurriculumScheduler", "Stage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """What one epoch trains on: ``window`` input bars, loss over ``horizon`` target steps."""

    window: int
    horizon: int


class CurriculumScheduler:
    """Window and scored horizon per epoch, never above ``max_window``/``max_horizon``.

    ``max_window`` is ``windows.window`` (the windows the datasets are built with) and
    ``max_horizon`` is ``model.horizon`` (the steps the head predicts).
    """

    def __init__(self, cfg: CurriculumConfig, max_window: int, max_horizon: int) -> None:
        self.cfg, self.max_window, self.max_horizon = cfg, int(max_window), int(max_horizon)
        for i, stage in enumerate(cfg.stages):
            self._check(f"curriculum.stages[{i}]", stage.window, stage.horizon)
        if not cfg.stages:
            self._check("curriculum.start", cfg.start_window, cfg.start_horizon)

    def _check(self, name: str, window: int, horizon: int) -> None:
        if window > self.max_window:
            raise ValueError(
                f"{name}.window={window} exceeds windows.window={self.max_window}: the "
                "curriculum grows towards the configured window — lower it or raise "
                "windows.window"
            )
        if horizon > self.max_horizon:
            raise ValueError(
                f"{name}.horizon={horizon} exceeds model.horizon={self.max_horizon}: the "
                "head predicts model.horizon steps — lower it or raise model.horizon"
            )

    def at(self, epoch: int) -> Stage:
        """The stage of 0-based ``epoch``."""
        cfg = self.cfg
        if cfg.stages:
            starts = np.array([s.epoch for s in cfg.stages])
            i = max(0, int(np.searchsorted(starts, epoch, side="right")) - 1)
            return Stage(cfg.stages[i].window, cfg.stages[i].horizon)
        frac = 1.0 if cfg.ramp_epochs == 0 else min(1.0, max(0, epoch) / cfg.ramp_epochs)
        # round half up, so a ramp reaches each whole bar at a predictable epoch
        window = int(np.floor(cfg.start_window + (self.max_window - cfg.start_window) * frac + 0.5))
        horizon = int(
            np.floor(cfg.start_horizon + (self.max_horizon - cfg.start_horizon) * frac + 0.5)
        )
        return Stage(window, horizon)

    def schedule(self, n_epochs: int) -> list[Stage]:
        """Stages of epochs ``0 .. n_epochs-1``."""
        return [self.at(e) for e in range(n_epochs)]


class CurriculumDataset(Dataset):
    """The items of ``full`` (a :class:`SlidingWindowDataset`) read with a shorter window.

    ``set_window(w)`` switches every later batch to windows of ``w`` bars ending at the
    same (time, symbol) cells as ``full``'s items; ``w`` = ``full.window`` returns
    ``full``'s own batches. Needs ``windows.stride=1`` (or window differences that are a
    multiple of the stride): otherwise a shorter window's end cells differ.
    """

    def __init__(
        self,
        full: SlidingWindowDataset,
        cfg: WindowsConfig,
        *,
        split: Split | None,
        normaliser: Normaliser | None,
    ) -> None:
        self.full, self.cfg, self.split, self.normaliser = full, cfg, split, normaliser
        self._keys = self._item_keys(full)
        self._views: dict[int, tuple[SlidingWindowDataset, np.ndarray]] = {}
        # shared memory: persistent DataLoader workers read the window the trainer set
        self._window = torch.full((1,), full.window, dtype=torch.int64).share_memory_()

    @staticmethod
    def _item_keys(ds: SlidingWindowDataset) -> np.ndarray:
        t, s = ds.item_keys()
        return t if ds.symbols_per_item == "all" else t * ds.tensors.n_symbols + s

    @property
    def window(self) -> int:
        """The window length batches are gathered with now."""
        return int(self._window[0])

    def prepare(self, window: int) -> None:
        """Build the view for ``window`` now (in the main process, before workers fork)."""
        if window != self.full.window and window not in self._views:
            self._views[window] = self._build(window)

    def set_window(self, window: int) -> None:
        """Gather every later batch with ``window`` input bars."""
        if not 1 <= window <= self.full.window:
            raise ValueError(
                f"curriculum window {window} must lie in 1..windows.window={self.full.window}"
            )
        self.prepare(window)
        self._window[0] = window

    def _build(self, window: int) -> tuple[SlidingWindowDataset, np.ndarray]:
        cfg = self.cfg.model_copy(update={"window": window})
        view = SlidingWindowDataset.from_config(
            self.full.tensors, cfg, split=self.split, normaliser=self.normaliser
        )
        keys = self._item_keys(view)
        pos = np.minimum(np.searchsorted(keys, self._keys), max(0, len(keys) - 1))
        if len(keys) == 0 or not np.array_equal(keys[pos], self._keys):
            raise ValueError(
                f"curriculum window {window}: windows of {window} bars do not end at every "
                f"cell the windows.window={self.full.window} windows end at (windows.stride="
                f"{self.cfg.stride}) — use windows.stride=1 or stage windows that differ from "
                "windows.window by a multiple of the stride"
            )
        return view, pos.astype(np.int64)

    def __len__(self) -> int:
        return len(self.full)

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Items ``indices`` of ``full``, each window cut to the active length (see class)."""
        window = self.window
        if window == self.full.window:
            return self.full.batch(indices)
        if window not in self._views:  # a worker that forked before prepare()
            self._views[window] = self._build(window)
        view, pos = self._views[window]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.full)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"window index out of range: the dataset has {n} windows")
        return view.batch(pos[np.where(idx < 0, idx + n, idx)])

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return {k: v[0] for k, v in self.batch([int(index)]).items()}
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        if torch.is_tensor(index):
            index = index.cpu().numpy()
        return self.batch(index)


class CurriculumCallback(Callback):
    """Apply ``scheduler``'s stage each epoch: the train dataset's window, the loss horizon.

    At ``setup`` the DataModule's training dataset is wrapped in a
    :class:`CurriculumDataset` (before its loader is built). The stage of the coming
    epoch is set at the end of the previous one (so workers that prefetch the next epoch
    already use it) and again at epoch start (resumed runs). ``applied`` lists
    ``(epoch, window, horizon)`` of every epoch started.
    """

    def __init__(self, scheduler: CurriculumScheduler) -> None:
        self.scheduler = scheduler
        self.dataset: CurriculumDataset | None = None
        self.applied: list[tuple[int, int, int]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "datasets"):
            raise ValueError(
                "curriculum.enabled needs training through a MarketDataModule (it reshapes "
                "the training windows) — pass datamodule=MarketDataModule(cfg)"
            )
        dm.setup()
        train_ds = dm.datasets["train"]
        if not isinstance(train_ds, CurriculumDataset):
            train_ds = CurriculumDataset(
                train_ds, dm.cfg.windows, split=dm.splits.get("train"), normaliser=dm.normaliser
            )
            dm.datasets["train"] = train_ds
        self.dataset = train_ds
        for epoch in range(max(1, trainer.max_epochs or 1)):
            train_ds.prepare(self.scheduler.at(epoch).window)

    def _apply(self, epoch: int, pl_module: L.LightningModule) -> Stage:
        stage = self.scheduler.at(epoch)
        if self.dataset is not None:
            self.dataset.set_window(stage.window)
        full = self.scheduler.max_horizon
        pl_module.loss_horizon = None if stage.horizon >= full else stage.horizon
        return stage

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        stage = self._apply(epoch, pl_module)
        self.applied.append((epoch, stage.window, stage.horizon))
        log.info(
            "curriculum epoch %d: window %d, horizon %d",
            epoch,
            stage.window,
            stage.horizon,
            extra={"fields": {"event": "curriculum_stage", "epoch": epoch, **vars(stage)}},
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer.current_epoch + 1, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # leave the module scoring every step (e.g. for a later fine-tune in-process)
        pl_module.loss_horizon = None
        if self.dataset is not None:
            self.dataset.set_window(self.dataset.full.window)
