"""Walk-forward with retraining: a fresh model per fold, trained on that fold's past only.

The database's bars (the union calendar of ``data.symbols`` between ``data.start`` and
``data.end``) are cut into folds by :func:`~market_nn_plus_ultra.windows.walk_forward_splits`
with the model's window ``W`` and horizon ``H``: fold k owns ``evaluation.train_window``
training end rows and ``evaluation.test_window`` test rows, and between them lie
``H + evaluation.embargo + W - 1`` purged rows, so no row a training window or target
reads is ever inside a test window's inputs. For every fold:

1. **Train** a fresh model (the same config, seed ``seed + k``) on the rows from the first
   training input row to the last training target row, and nothing later: the panel is
   cut there before the DataModule sees it, and ``data.end`` in the fold's saved config
   names that last row. The fold's own purged train/val split picks the best checkpoint;
   its inner test split is empty (the fold's test window is the test).
2. **Predict** the fold's test bars with :class:`~market_nn_plus_ultra.inference.Agent`:
   each prediction reads its window's bars up to and including the bar predicted.
3. Write ``fold_k/predictions.parquet`` (atomically): it marks the fold done, and a re-run
   skips every fold that has one.

The folds' predictions are stitched into ``predictions.parquet`` and scored by
:class:`~market_nn_plus_ultra.evaluation.WalkForwardBacktester` on exactly those folds,
with the baselines refitted on each fold's training bars beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_path, atomic_write
from ..config import Config
from ..evaluation.baselines import TimeSplit
from ..evaluation.sample import select_sample
from ..evaluation.summary import RetrainSummary
from ..evaluation.walkforward import WalkForwardBacktester, WalkForwardResult
from ..evaluation.walkforward_io import attach_breaches, guard_predictions
from ..features.compute import compute_features
from ..inference.agent import Agent
from ..training.data import MarketDataModule
from ..training.train import train
from ..windows import walk_forward_splits

__all__ = ["FOLD_PREDICTIONS", "RetrainFold", "fit_fold", "retrain_folds", "walkforward_retrain"]

#: The file in each ``fold_k/`` folder whose presence marks the fold as finished.
FOLD_PREDICTIONS = "predictions.parquet"
_FOLD_INFO = "fold.json"
_OHLCV = ["open", "high", "low", "close", "volume"]


@dataclass(frozen=True)
class RetrainFold:
    """One fold on the database calendar; rows index ``stamps``, bounds are inclusive.

    ``train_rows``: the training windows' end rows. ``read_rows``: every row the fold's
    training reads (first window's inputs to the last window's targets). ``test_rows``:
    the bars predicted and scored.
    """

    index: int
    train_rows: range
    read_rows: range
    test_rows: range
    stamps: pd.DatetimeIndex

    @property
    def name(self) -> str:
        return f"fold{self.index}"

    @property
    def folder(self) -> str:
        return f"fold_{self.index}"

    def bound(self, rows: range, last: bool) -> pd.Timestamp:
        return self.stamps[rows.stop - 1 if last else rows.start]

    def time_split(self) -> TimeSplit:
        """The fold as the backtester's split (baselines fit on the training end rows)."""
        t, r = self.train_rows, self.test_rows
        return TimeSplit(
            self.name,
            self.bound(t, False),
            self.bound(t, True),
            self.bound(r, False),
            self.bound(r, True),
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able bounds (ISO-8601 timestamps and calendar rows) saved as ``fold.json``."""
        info: dict[str, Any] = {"fold": self.name}
        for label, rows in (
            ("train", self.train_rows),
            ("read", self.read_rows),
            ("test", self.test_rows),
        ):
            info[f"{label}_start"] = self.bound(rows, False).isoformat()
            info[f"{label}_end"] = self.bound(rows, True).isoformat()
            info[f"{label}_rows"] = [rows.start, rows.stop]
        return info


def retrain_folds(stamps: pd.DatetimeIndex, cfg: Config) -> list[RetrainFold]:
    """The folds of ``cfg.evaluation`` over the sorted calendar ``stamps``, purged for the
    model's window (``windows.window``) and horizon (``windows.horizon``).

    Raises ``ValueError`` naming the bars needed when the calendar is too short.
    """
    ev, w = cfg.evaluation, cfg.windows
    try:
        folds = list(
            walk_forward_splits(
                len(stamps),
                ev.train_window,
                ev.test_window,
                ev.step,
                window=w.window,
                horizon=w.horizon,
                embargo=ev.embargo,
                expanding=ev.expanding,
            )
        )
    except ValueError as err:
        raise ValueError(
            f"walk-forward --retrain over {len(stamps)} bars of {cfg.data.sqlite_path}: {err} "
            "(evaluation.train_window / evaluation.test_window / windows.window)"
        ) from None
    return [
        RetrainFold(
            k,
            train.rows,
            range(train.input_rows.start, train.target_limit),
            test.rows,
            stamps,
        )
        for k, (train, test) in enumerate(folds)
    ]


def _fold_config(cfg: Config, fold: RetrainFold, folder: Path) -> Config:
    """The fold's config: data ends at its last training row; fresh seed; own run folder."""
    fold_cfg = cfg.model_copy(deep=True)
    fold_cfg.seed = cfg.seed + fold.index
    fold_cfg.data.end = fold.bound(fold.read_rows, True).isoformat()
    fold_cfg.windows.test_fraction = 0.0  # the fold's test window is the out-of-sample test
    fold_cfg.training.checkpoint_dir = folder
    fold_cfg.training.progress_bar = False  # the pipeline reports progress per fold
    return fold_cfg


def _check_folder(folder: Path, fold: RetrainFold) -> None:
    """Refuse to reuse a finished fold whose bounds differ from this run's fold."""
    info = folder / _FOLD_INFO
    if not info.is_file():
        return
    saved = json.loads(info.read_text())
    if saved != fold.describe():
        raise ValueError(
            f"{folder} holds {saved.get('fold')} with train {saved.get('train_start')}.."
            f"{saved.get('train_end')} / test {saved.get('test_start')}..{saved.get('test_end')}, "
            f"but this run's {fold.name} trains {fold.describe()['train_start']}.."
            f"{fold.describe()['train_end']} and tests {fold.describe()['test_start']}.."
            f"{fold.describe()['test_end']} — use another --output-dir or delete the old folds"
        )


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def fit_fold(cfg: Config, panel: pd.DataFrame, fold: RetrainFold, folder: Path) -> Config:
    """Train a fresh model on ``fold``'s rows of ``panel`` only, into the run folder
    ``folder``; returns the fold's config (data ends at its last training row)."""
    fold_cfg = _fold_config(cfg, fold, folder)
    stamps = panel.index.get_level_values("timestamp")
    first, last = fold.bound(fold.read_rows, False), fold.bound(fold.read_rows, True)
    rows = panel[(stamps >= first) & (stamps <= last)]
    train(fold_cfg, datamodule=MarketDataModule(fold_cfg, panel=rows))
    return fold_cfg


def _run_fold(cfg: Config, panel: pd.DataFrame, fold: RetrainFold, folder: Path) -> pd.DataFrame:
    """Train the fold's fresh model on its rows only, then predict its test bars."""
    fit_fold(cfg, panel, fold, folder)
    device = "cpu" if cfg.training.accelerator == "cpu" else "auto"
    agent = Agent.from_checkpoint(folder, device=device)
    test = fold.time_split()
    frame = agent.predict(
        cfg.data.sqlite_path,
        start=test.test_start,
        end=test.test_end,
        batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
    )
    frame.insert(2, "fold", fold.name)
    # written once the run folder exists (Lightning warns about non-empty folders)
    atomic_write(folder / _FOLD_INFO, json.dumps(fold.describe(), indent=2) + "\n")
    return frame


def walkforward_retrain(
    cfg: Config,
    output_dir: str | Path,
    *,
    bootstrap: bool = True,
    guardrails: bool = False,
    on_fold: Callable[[int, int, str], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> WalkForwardResult:
    """Retrain a fresh model per walk-forward fold and score the stitched test predictions.

    Folds come from ``cfg.evaluation`` (train_window / test_window / step / embargo /
    expanding, in bars of the database's calendar), purged by ``windows.window`` and
    ``windows.horizon``. Each fold's run folder is ``output_dir/fold_k/`` (config.yaml,
    model_info.json, checkpoints, fold.json, predictions.parquet); a fold whose
    predictions file exists is not retrained. The stitched out-of-sample predictions go to
    ``output_dir/predictions.parquet``. ``guardrails``: apply ``cfg.guardrails`` to the
    stitched positions before scoring (the saved predictions stay unguarded; the breaches
    land in ``result.breaches``). ``on_fold(done, total, message)`` reports each
    fold; ``on_step`` the backtester's steps. The result's ``summary.retrain`` lists
    every fold's bounds and whether it was trained now or reused.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = on_fold or (lambda _done, _total, _message: None)
    report(0, 0, "reading the database and building features")
    panel, _ = compute_features(cfg.data, cfg.features)
    calendar = pd.DatetimeIndex(panel.index.get_level_values("timestamp").unique()).sort_values()
    folds = retrain_folds(calendar, cfg)
    parts, status = [], {}
    for fold in folds:
        folder = output / fold.folder
        done = folder / FOLD_PREDICTIONS
        _check_folder(folder, fold)
        if done.is_file():
            report(fold.index, len(folds), f"{fold.name}: finished earlier, reusing {done}")
            parts.append(pd.read_parquet(done))
            status[fold.name] = "reused"
        else:
            report(
                fold.index,
                len(folds),
                f"{fold.name}: training on {fold.describe()['read_start'][:10]}"
                f"..{fold.describe()['read_end'][:10]}",
            )
            frame = _run_fold(cfg, panel, fold, folder)
            _atomic_parquet(frame, done)
            parts.append(frame)
            status[fold.name] = "trained"
        report(fold.index + 1, len(folds), f"{fold.name}: done")
    stitched = pd.concat(parts, ignore_index=True).sort_values(
        ["timestamp", "symbol"], ignore_index=True
    )
    predictions = _atomic_parquet(stitched, output / "predictions.parquet")
    breaches = None
    if guardrails:
        stitched, breaches = guard_predictions(stitched, cfg.guardrails, cfg.data)
    ohlcv = panel[[c for c in _OHLCV if c in panel.columns]]
    _, sample = select_sample(stitched)  # each fold predicts bars after its own data
    tester = WalkForwardBacktester.from_config(cfg.evaluation)
    result = tester.run(
        stitched,
        panel=ohlcv,
        config=cfg.evaluation,
        regime_column=cfg.evaluation.regime_column,
        bootstrap=bootstrap,
        seed=cfg.seed,
        on_step=on_step,
        splits=[fold.time_split() for fold in folds],
        sample=sample,
    )
    if breaches is not None:
        result = attach_breaches(result, breaches)
    record = RetrainSummary(
        output_dir=str(output),
        predictions=str(predictions),
        window=cfg.windows.window,
        horizon=cfg.windows.horizon,
        folds=tuple({**fold.describe(), "status": status[fold.name]} for fold in folds),
    )
    return replace(result, summary=replace(result.summary, retrain=record))
