"""The benchmark catalogue: one Parquet file, one row per benchmarked training run.

``plus-ultra bench sweep`` and ``plus-ultra bench pretraining-comparison`` append to it;
rows are never removed, so a catalogue accumulates every run made on every machine
that shares it. The one update: when a sweep ends, its rows get their deflated Sharpe
ratio over the sweep's trials (:func:`deflate_catalogue`). Each write is atomic: the
old rows and the new ones are written to a temporary file beside the catalogue, fsynced,
which then replaces it (``atomic_path``), so a crash mid-write never leaves a truncated
catalogue; each read-modify-write holds an exclusive lock (``exclusive``), so two sweeps
appending to one catalogue at once keep both their rows. The columns are
:data:`CATALOGUE_COLUMNS` (docs/benchmarks.md explains each one).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from .._io import atomic_path, exclusive
from ..config import Config, config_to_dict
from ..data.store import summarise_series
from ..evaluation.backtest import backtest
from ..evaluation.deflated import deflate_trials, return_moments
from ..training.train import TrainResult

__all__ = [
    "CATALOGUE_COLUMNS",
    "DEFLATION_COLUMNS",
    "RunTimer",
    "append_catalogue",
    "config_json",
    "dataset_stats",
    "deflate_catalogue",
    "deflate_rows",
    "hardware",
    "read_catalogue",
    "run_metrics",
]

_STRING = (
    "sweep_id",
    "scenario_id",
    "kind",
    "comparison",
    "status",
    "error",
    "architecture",
    "swept",
    "config",
    "checkpoint_dir",
    "database",
    "symbols",
    "cpu",
    "gpu",
    "device",
    "torch_version",
)
_INTEGER = (
    "d_model",
    "depth",
    "horizon",
    "parameters",
    "rows",
    "features",
    "train_windows",
    "val_windows",
    "test_windows",
    "global_step",
    "epochs",
    "train_samples",
    "n_periods",
    "n_trials",
    "seed",
)
_FLOAT = (
    "runtime_s",
    "train_loop_s",
    "samples_per_s",
    "val_loss",
    "val_ic",
    "test_ic",
    "val_sharpe",
    "test_sharpe",
    "sharpe",
    "roi",
    "max_drawdown",
    "cost_bps",
    "periods_per_year",
    "returns_skew",
    "returns_kurtosis",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "deflated_sharpe",
    "pretrain_s",
    "pretrain_loss_before",
    "pretrain_loss_after",
    "delta_val_loss",
    "delta_val_ic",
    "delta_test_ic",
    "delta_sharpe",
    "delta_runtime_s",
    "baseline_sharpe",
    "buy_and_hold_sharpe",
    "delta_sharpe_low",
    "delta_sharpe_high",
    "delta_sharpe_p",
)
#: Every catalogue column, in file order (``timestamp`` is a UTC datetime).
CATALOGUE_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "sweep_id",
    "scenario_id",
    "kind",
    "comparison",
    "status",
    "error",
    "architecture",
    "d_model",
    "depth",
    "horizon",
    "swept",
    "config",
    "checkpoint_dir",
    "database",
    "symbols",
    "rows",
    "features",
    "train_windows",
    "val_windows",
    "test_windows",
    "parameters",
    "runtime_s",
    "train_loop_s",
    "train_samples",
    "samples_per_s",
    "global_step",
    "epochs",
    "val_loss",
    "val_ic",
    "test_ic",
    "val_sharpe",
    "test_sharpe",
    "sharpe",
    "roi",
    "max_drawdown",
    "cost_bps",
    "n_periods",
    "periods_per_year",
    "returns_skew",
    "returns_kurtosis",
    "n_trials",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "deflated_sharpe",
    "pretrain_s",
    "pretrain_loss_before",
    "pretrain_loss_after",
    "delta_val_loss",
    "delta_val_ic",
    "delta_test_ic",
    "delta_sharpe",
    "delta_runtime_s",
    "seed",
    "baseline_sharpe",
    "buy_and_hold_sharpe",
    "delta_sharpe_low",
    "delta_sharpe_high",
    "delta_sharpe_p",
    "cpu",
    "gpu",
    "device",
    "torch_version",
)
#: The columns :func:`deflate_rows` fills (the others stay as the run wrote them).
DEFLATION_COLUMNS: tuple[str, ...] = (
    "n_trials",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "deflated_sharpe",
)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Every catalogue column present with one dtype, so appends never change the schema."""
    frame = frame.copy()
    for column in CATALOGUE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    for column in _STRING:
        frame[column] = frame[column].astype("string")
    for column in _INTEGER:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in _FLOAT:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    extra = [c for c in frame.columns if c not in CATALOGUE_COLUMNS]
    return frame[[*CATALOGUE_COLUMNS, *extra]]


def read_catalogue(path: str | Path) -> pd.DataFrame:
    """The catalogue at ``path`` (an empty frame with every column when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return _typed(pd.DataFrame(columns=list(CATALOGUE_COLUMNS)))
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # a foreign or damaged file: name it and the way out
        raise ValueError(
            f"catalogue {path}: not a readable Parquet file ({type(err).__name__}: {err}) — "
            "pass another --catalogue path or move this file away"
        ) from None
    return _typed(frame)


def append_catalogue(path: str | Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Append ``rows`` to the catalogue at ``path`` atomically; return the whole catalogue."""
    path = Path(path)
    with exclusive(path):  # another sweep appending at the same moment waits its turn
        old = read_catalogue(path)
        new = _typed(pd.DataFrame(rows))
        frame = new if old.empty else pd.concat([old, new], ignore_index=True)
        _write(path, frame)
    return frame


def _write(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def deflate_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Deflated Sharpe of each row, the rows being the trials of one selection.

    A trial is a row with ``status == ok`` and a finite ``sharpe``, ``n_periods >= 2``,
    ``periods_per_year``, ``returns_skew`` and ``returns_kurtosis``; ``N`` is their number
    and ``V`` the variance (ddof=1; 0 for one trial) of their per-period Sharpe ratios
    ``sharpe / √periods_per_year``. Returns a frame on ``rows``' index with
    :data:`DEFLATION_COLUMNS`: ``n_trials`` (N), ``expected_max_sharpe`` (annualised
    E[max SR] of N skill-less trials), ``probabilistic_sharpe`` (P(true SR > 0)) and
    ``deflated_sharpe`` (P(true SR > E[max SR])), NaN on rows that are not trials.
    """
    out = pd.DataFrame(np.nan, index=rows.index, columns=list(DEFLATION_COLUMNS))
    needed = ["sharpe", "n_periods", "periods_per_year", "returns_skew", "returns_kurtosis"]
    if rows.empty or any(c not in rows.columns for c in needed):
        return out
    values = rows[needed].apply(pd.to_numeric, errors="coerce").astype("float64")
    trial = (
        rows["status"].eq("ok").fillna(False).to_numpy(dtype=bool)
        & np.isfinite(values.to_numpy()).all(axis=1)
        & (values["n_periods"] >= 2).to_numpy()
        & (values["returns_kurtosis"] > 0).to_numpy()
    )
    trials = values[trial]
    if trials.empty:
        return out
    root_ppy = np.sqrt(trials["periods_per_year"].to_numpy())
    figures = deflate_trials(
        trials["sharpe"].to_numpy() / root_ppy,  # annualised → per period
        trials["n_periods"].to_numpy(),
        trials["returns_skew"].to_numpy(),
        trials["returns_kurtosis"].to_numpy(),
    )
    figures["expected_max_sharpe"] = figures["expected_max_sharpe"] * root_ppy
    out.loc[trials.index, "n_trials"] = len(trials)
    for column, per_trial in figures.items():
        out.loc[trials.index, column] = per_trial
    return out


def deflate_catalogue(path: str | Path, sweep_id: str) -> pd.DataFrame:
    """Fill :data:`DEFLATION_COLUMNS` of ``sweep_id``'s rows over that sweep's trials.

    Rewrites the catalogue atomically (only those rows' deflation columns change) and
    returns the whole catalogue.
    """
    path = Path(path)
    with exclusive(path):
        frame = read_catalogue(path)
        mine = frame["sweep_id"].eq(sweep_id).fillna(False).to_numpy(dtype=bool)
        if not mine.any():
            raise ValueError(
                f"catalogue {path}: no rows with sweep_id {sweep_id!r} — check the id "
                "(the sweep_id column) or the --catalogue path"
            )
        figures = deflate_rows(frame[mine])
        for column in DEFLATION_COLUMNS:
            frame.loc[mine, column] = figures[column].to_numpy()
        frame = _typed(frame)
        _write(path, frame)
    return frame


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware() -> dict[str, str]:
    """CPU model, GPU name (empty without CUDA), the device training used, torch version."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical cores)",
        "gpu": gpu,
        "torch_version": torch.__version__,
    }


def dataset_stats(cfg: Config, model_info_path: Path) -> dict[str, Any]:
    """Database, symbols, bars, features and windows per split of a finished run."""
    info = json.loads(Path(model_info_path).read_text())
    series = summarise_series(cfg.data.sqlite_path)
    used = series[series["symbol"].isin(info["symbols"])]
    splits = info["splits"]
    return {
        "database": str(cfg.data.sqlite_path),
        "symbols": ",".join(info["symbols"]),
        "rows": int(used["rows"].sum()),
        "features": int(info["n_features"]),
        **{f"{name}_windows": int(splits[name]["windows"]) for name in ("train", "val", "test")},
    }


def run_metrics(cfg: Config, result: TrainResult) -> dict[str, float]:
    """Validation/test figures of a run, plus a backtest of its test predictions.

    ``sharpe``, ``roi`` (total return) and ``max_drawdown`` come from backtesting the
    held-out test predictions at ``evaluation.cost_bps`` (DESIGN.md convention);
    ``val_sharpe``/``test_sharpe`` are the training module's own (at ``training.cost_bps``).
    ``n_periods``, ``periods_per_year``, ``returns_skew`` and ``returns_kurtosis`` (Pearson)
    describe that backtest's returns, for the deflated Sharpe ratio.
    """
    m = result.metrics
    figures = {
        key: m.get(key, np.nan)
        for key in ("val_loss", "val_ic", "test_ic", "val_sharpe", "test_sharpe")
    }
    figures.update(sharpe=np.nan, roi=np.nan, max_drawdown=np.nan)
    figures["cost_bps"] = cfg.evaluation.cost_bps
    if result.test_predictions is not None:
        frame = pd.read_parquet(result.test_predictions)
        bt = backtest(frame, cost_bps=cfg.evaluation.cost_bps)
        m = bt.metrics
        figures.update(sharpe=m["sharpe"], roi=m["total_return"], max_drawdown=m["max_drawdown"])
        # the moments the deflated Sharpe ratio needs (deflate_rows, at the sweep's end)
        _, n, skew, kurt = return_moments(bt.returns.to_numpy())
        figures.update(
            n_periods=n,
            periods_per_year=m["periods_per_year"],
            returns_skew=skew,
            returns_kurtosis=kurt,
        )
    return figures


class RunTimer(L.Callback):
    """Times the training loop and counts the targets it trained on (windows, or the
    scored positions of sequences under ``training.supervision=all``).

    The clock runs from each training epoch's start to its last batch's end (data
    loading and optimiser steps; validation excluded). On CUDA the stream is
    synchronised before each reading: kernel launches are asynchronous.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self.parameters = 0
        self.device = "cpu"
        self._mark = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.device = str(pl_module.device)
        self.parameters = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = self._now(pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = self._now(pl_module)
        self.seconds += now - self._mark
        self._mark = now
        if isinstance(batch, dict) and "rows" in batch:  # sequences: their scored positions
            self.samples += int(batch["y_mask"][..., 0].sum())
            return
        inputs = batch["x"] if isinstance(batch, dict) else batch[0]  # (B, W, F) or (B, S, W, F)
        self.samples += int(inputs.shape[0])

    @property
    def samples_per_s(self) -> float:
        """Training targets per second of the training loop (NaN before any batch)."""
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    def figures(self) -> dict[str, Any]:
        return {
            "train_loop_s": self.seconds,
            "train_samples": self.samples,
            "samples_per_s": self.samples_per_s,
            "parameters": self.parameters,
            "device": self.device,
        }


def config_json(cfg: Config) -> str:
    """The resolved config as one JSON string (the catalogue's ``config`` column)."""
    return json.dumps(config_to_dict(cfg), sort_keys=True)
