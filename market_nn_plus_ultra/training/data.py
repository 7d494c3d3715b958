"""The Lightning DataModule: SQLite → feature panel → market tensors → purged window splits.

    dm = MarketDataModule(cfg)
    dm.setup()                       # reads, builds features and tensors once
    dm.n_features, dm.feature_columns, dm.symbols, dm.splits["test"]
    print(dm.symbol_report.format())  # bars, usable cells, windows per split, per symbol
    for batch in dm.train_dataloader(): batch["x"]  # (B, W, F)

Batches are gathered whole by :meth:`SlidingWindowDataset.batch` (one advanced-indexing
call per batch, no per-item Python): the loaders take ``batch_size=None`` and a batch
sampler. The training sampler draws a permutation from ``(seed, epoch)`` only, so the
data order is the same on every run with the same seed, and the loader is *stateful*:
Lightning saves how many batches of the epoch were consumed in each checkpoint and a
resumed run continues with the next batch of the same permutation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import Config, supervision_of
from ..data.alternative import alt_column_hints
from ..features.compute import compute_features
from ..windows import (
    MarketTensors,
    Normaliser,
    SequenceDataset,
    SlidingWindowDataset,
    Split,
    SymbolReport,
    build_tensors,
    fit_normaliser,
    purged_splits,
    symbol_report,
)

__all__ = ["MarketDataModule", "ResumableBatchSampler", "normaliser_from_state", "normaliser_state"]

log = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")


def normaliser_state(normaliser: Normaliser, symbols: list[str]) -> dict[str, Any]:
    """``train_zscore`` statistics as checkpoint-safe tensors, labelled by symbol name."""

    def tensor(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(np.array(array, dtype=np.float32))

    return {
        "symbols": list(symbols),
        "rows": [normaliser.rows.start, normaliser.rows.stop],
        "mean": tensor(normaliser.mean),  # (S, F)
        "std": tensor(normaliser.std),
        "context_mean": tensor(normaliser.context_mean),  # (S, C) or None
        "context_std": tensor(normaliser.context_std),
    }


def normaliser_from_state(state: dict[str, Any], symbols: list[str]) -> Normaliser:
    """The :class:`Normaliser` of :func:`normaliser_state`, rows reordered to ``symbols``.

    Statistics are per (symbol, feature), so every symbol must have been a training one.
    """
    known = list(state["symbols"])
    unknown = [s for s in symbols if s not in known]
    if unknown:
        raise ValueError(
            f"symbols {unknown} were not in the training run (windows.normalise=train_zscore "
            f"keeps statistics per symbol for {known}) — predict for those symbols, or train "
            "with windows.normalise=window_zscore to predict for new ones"
        )
    order = [known.index(s) for s in symbols]

    def rows(key: str) -> np.ndarray | None:
        value = state.get(key)
        return None if value is None else value.numpy()[order]

    start, stop = state["rows"]
    return Normaliser(
        rows("mean"), rows("std"), range(start, stop), rows("context_mean"), rows("context_std")
    )


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of window indices in a order fixed by ``(seed, epoch)``, sharded by rank.

    ``shuffle=False`` keeps index order (validation/test). Under data parallelism each of
    ``world_size`` ranks takes every ``world_size``-th index of the permutation (padded
    by wrapping so every rank sees the same number of batches). ``skip`` batches are left
    out of the start of epoch ``skip_epoch`` (set by a resumed loader) — every time that
    epoch is iterated, since Lightning may open an iterator more than once.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_items, self.batch_size, self.shuffle = int(n_items), int(batch_size), shuffle
        self.seed, self.drop_last = int(seed), drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.skip, self.skip_epoch = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: the permutation depends on it."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Start epoch ``epoch`` after its first ``consumed`` batches (a resumed run)."""
        self.epoch, self.skip_epoch, self.skip = int(epoch), int(epoch), int(consumed)

    @property
    def skipped(self) -> int:
        """Batches left out of the start of the current epoch."""
        return self.skip if self.epoch == self.skip_epoch else 0

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n_items, generator=generator).numpy()
        else:
            order = np.arange(self.n_items)
        if self.world_size > 1:
            per_rank = -(-self.n_items // self.world_size)
            order = np.resize(order, per_rank * self.world_size)  # wrap-pad to equal shards
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = -(-self.n_items // self.world_size) if self.world_size > 1 else self.n_items
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._indices()
        for b in range(self.skipped, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


class _StatefulLoader(DataLoader):
    """A DataLoader Lightning checkpoints: ``{"epoch", "consumed"}`` batches of the epoch.

    ``consumed`` counts batches handed to the training loop (not batches prefetched by
    workers), so a resumed run skips exactly the batches the interrupted one trained on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        self._consumed = sampler.skipped if isinstance(sampler, ResumableBatchSampler) else 0
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch = getattr(self.sampler, "epoch", 0)
        return {"epoch": int(epoch), "consumed": int(self._consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, ResumableBatchSampler):
            self.sampler.resume_at(state.get("epoch", 0), state.get("consumed", 0))


class MarketDataModule(L.LightningDataModule):
    """Windows of the database ``cfg.data`` names, split train/val/test with purging.

    ``setup()`` runs once (later calls reuse the result): ``compute_features`` (read the
    panel, join ``data.alternative_data`` as of each bar, add ``features``) →
    :func:`build_tensors` → :func:`purged_splits` → one :class:`SlidingWindowDataset` per
    split. With ``windows.normalise=train_zscore`` the statistics are fitted on the
    training split's input rows only. Pass ``panel`` to skip the database read (it must
    already hold the feature columns).

    ``symbol_report`` (after ``setup``) holds each symbol's bars, usable cells and windows
    per split, logged at INFO; a symbol with no window in any split is a
    :class:`~market_nn_plus_ultra.windows.WindowsError` naming the column that blanks it.
    """

    def __init__(self, cfg: Config, panel: pd.DataFrame | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self._panel = panel
        self.tensors: MarketTensors | None = None
        self.splits: dict[str, Split] = {}
        self.datasets: dict[str, SlidingWindowDataset] = {}
        self.normaliser: Normaliser | None = None
        self.symbol_report: SymbolReport | None = None
        self._loaders: dict[str, DataLoader] = {}
        self._resume_state: dict[str, int] | None = None

    # ----------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build tensors, splits and datasets (idempotent)."""
        if self.tensors is not None:
            return
        cfg = self.cfg
        panel = self._panel
        if panel is None:
            panel, report = compute_features(cfg.data, cfg.features)
            if report.skipped:
                log.info("features skipped: %s", report.skipped)
        self.tensors = build_tensors(panel, cfg.windows)
        self._panel = None  # the tensors hold everything training needs; free the frame
        w = cfg.windows
        train, val, test = purged_splits(
            self.tensors.n_rows,
            w.val_fraction,
            w.test_fraction,
            window=w.window,
            horizon=w.horizon,
            embargo=w.embargo,
        )
        self.splits = {"train": train, "val": val, "test": test}
        if w.normalise == "train_zscore":
            self.normaliser = fit_normaliser(self.tensors, train.input_rows)
        supervised_all = supervision_of(cfg).mode == "all"
        for name, split in self.splits.items():
            if supervised_all:  # one sequence, a target at every position
                self.datasets[name] = SequenceDataset.from_config(
                    self.tensors, cfg, split=split, normaliser=self.normaliser
                )
            else:
                self.datasets[name] = SlidingWindowDataset.from_config(
                    self.tensors, w, split=split, normaliser=self.normaliser
                )
        self._report_symbols()
        if len(self.datasets["train"]) == 0:
            raise ValueError(
                f"the training split (rows {train.rows.start}..{train.rows.stop - 1}) has no "
                "complete windows — load more history (data.start/data.end), shorten "
                "windows.window, or check that the features are not NaN everywhere"
            )
        log.info("windows: %s", self.split_info())

    def _report_symbols(self) -> None:
        """Log the per-symbol usage; refuse symbols that no split has a window of."""
        report = symbol_report(self._require(), self.datasets)
        self.symbol_report = report
        log.info("windows per symbol:\n%s", report.format())
        for r in report.sparse():
            log.warning(
                "%s: column %s is NaN on %d of its %d bars (only %d usable) — check that "
                "series for %s",
                r.symbol,
                ", ".join(r.blanking),
                r.blanked,
                r.bars,
                r.usable,
                r.symbol,
            )
        report.check(hints=alt_column_hints(self.cfg.data.alternative_data))

    def _require(self) -> MarketTensors:
        if self.tensors is None:
            raise RuntimeError("MarketDataModule.setup() has not run yet — call dm.setup() first")
        return self.tensors

    # ----------------------------------------------------------------------------------
    # What the model and the checkpoint need to know
    # ----------------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        """Input channels F of every window ``x`` ``(B, W, F)``."""
        return self._require().n_features

    @property
    def feature_columns(self) -> list[str]:
        """The panel columns behind the F input channels, in order."""
        return list(self._require().feature_names)

    @property
    def symbols(self) -> list[str]:
        return list(self._require().symbols)

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        """The union calendar: ``t_index`` of a batch indexes it."""
        return self._require().timestamps

    def split_info(self) -> dict[str, dict[str, Any]]:
        """Per split: end rows, first/last end timestamp and number of windows."""
        ts = self._require().timestamps
        info: dict[str, dict[str, Any]] = {}
        for name, split in self.splits.items():
            rows = split.rows
            info[name] = {
                "rows": [rows.start, rows.stop],
                "start": ts[rows.start].isoformat() if len(rows) else None,
                "end": ts[rows.stop - 1].isoformat() if len(rows) else None,
                "windows": len(self.datasets[name]) if name in self.datasets else 0,
            }
        return info

    # ----------------------------------------------------------------------------------
    # Loaders
    # ----------------------------------------------------------------------------------

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def items_per_batch(self, batch_size: int) -> int:
        """Items per batch of ``batch_size`` targets: windows, or with
        ``training.supervision=all`` sequences of ``sequence_length − min_context + 1``
        scored positions each (``batch_size`` / that, rounded, at least 1)."""
        return max(1, round(batch_size / supervision_of(self.cfg).scored_per_sequence))

    def _loader(self, name: str) -> DataLoader:
        self.setup()
        t = self.cfg.training
        train = name == "train"
        rank, world = self._rank() if train else (0, 1)  # every rank evaluates the full split
        sampler = ResumableBatchSampler(
            len(self.datasets[name]),
            self.items_per_batch(t.batch_size if train else (t.eval_batch_size or t.batch_size)),
            shuffle=train,
            seed=self.cfg.seed,
            drop_last=train and len(self.datasets[name]) > self.items_per_batch(t.batch_size),
            rank=rank,
            world_size=world,
        )
        workers = t.num_workers
        return _StatefulLoader(
            self.datasets[name],
            batch_size=None,  # the sampler yields whole batches; the dataset gathers them
            sampler=sampler,
            num_workers=workers,
            persistent_workers=t.persistent_workers and workers > 0,
            pin_memory=t.pin_memory and torch.cuda.is_available(),
            prefetch_factor=2 if workers > 0 else None,
            # its own generator: opening an iterator draws worker seeds from it, not from
            # the global RNG, so dropout draws match between a run and its resumption
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (by seed and epoch), sharded by rank, resumable mid-epoch."""
        # One loader object per split: Lightning restores a checkpoint's loader state into
        # the object it built, and persistent workers survive between epochs.
        if "train" not in self._loaders:
            self._loaders["train"] = self._loader("train")
            if self._resume_state is not None:
                self._loaders["train"].load_state_dict(self._resume_state)
        return self._loaders["train"]

    # Lightning builds the train loader before it restores a checkpoint (to count the
    # steps the LR schedule spans), so the loader's position travels with the DataModule.
    def state_dict(self) -> dict[str, Any]:
        """The training loader's position ``{"epoch", "consumed"}`` (for resume), and the
        ``train_zscore`` statistics as ``normaliser`` (inference scales new rows by them)."""
        loader = self._loaders.get("train")
        state = dict(loader.state_dict()) if isinstance(loader, _StatefulLoader) else {}
        if self.normaliser is not None:
            state["normaliser"] = normaliser_state(self.normaliser, self.symbols)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the training data order where a checkpointed run stopped."""
        position = {k: int(v) for k, v in state_dict.items() if k in ("epoch", "consumed")}
        if not position:
            return
        self._resume_state = position
        loader = self._loaders.get("train")
        if isinstance(loader, _StatefulLoader):
            loader.load_state_dict(self._resume_state)

    def val_dataloader(self) -> DataLoader:
        """The validation windows in (time, symbol) order, the whole split on every rank."""
        if "val" not in self._loaders:
            self._loaders["val"] = self._loader("val")
        return self._loaders["val"]

    def test_dataloader(self) -> DataLoader:
        """The held-out test windows in (time, symbol) order."""
        if "test" not in self._loaders:
            self._loaders["test"] = self._loader("test")
        return self._loaders["test"]
