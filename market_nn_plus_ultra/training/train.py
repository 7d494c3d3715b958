"""``train(cfg)``: fit a TradingModule on the DataModule's windows, checkpoint, test.

Everything lands in ``training.checkpoint_dir``::

    config.yaml              the resolved config (reload with load_config)
    model_info.json          feature columns, n_features, symbols, window, horizon,
                             supervision (mode, sequence length, min context), splits,
                             per-symbol bars / usable cells / windows (symbol_usage)
    drift_reference.json     each input feature's training distribution (PSI bins and
                             quantiles) that a service measures drift against
    best.ckpt, last.ckpt     best by training.monitor; the latest epoch (or step)
    steps/step-000100.ckpt   every training.checkpoint_every_n_steps steps (for --resume)
    logs/csv/metrics.csv     per-step and per-epoch metrics (TensorBoard/W&B/MLflow beside)
    metrics.json             final val_* and test_* metrics
    diagnostics.parquet      gradient noise, spikes, throughput, calibration (docs/diagnostics.md)
    test_predictions.parquet the held-out test split: timestamp, symbol, position,
                             forecast, realised_return (the predictions-file contract)

Hardware, precision and distribution come from the ``training`` section and go straight
to the Lightning Trainer (DDP/FSDP included) through :func:`~.trainer.build_trainer`, the
same factory ``pretrain`` uses; nothing here is home-made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
)

from .._io import atomic_path, atomic_write
from ..config import Config, config_to_dict, save_config, supervision_of, training_model
from ..evaluation.metrics import infer_periods_per_year
from ..windows import SymbolReport
from .checks import check_config
from .curriculum import CurriculumCallback, CurriculumScheduler
from .data import MarketDataModule
from .diagnostics import TrainingDiagnosticsCallback
from .drift_reference import DRIFT_REFERENCE_FILE, fit_drift_reference, save_drift_reference
from .module import TradingModule
from .safe_load import CheckpointError, read_checkpoint
from .tracking import build_loggers
from .trainer import build_trainer, resolve_precision

__all__ = ["CheckpointError", "TrainResult", "resolve_precision", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a training run wrote its outputs and what it measured."""

    checkpoint_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    config_path: Path
    model_info_path: Path
    metrics_path: Path
    test_predictions: Path | None
    global_step: int
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)
    #: per symbol: bars, usable cells, windows per split (``SymbolReport.format()`` prints it)
    symbol_report: SymbolReport | None = None


def _check_resume(path: Path, n_features: int, cfg: Config) -> None:
    """Refuse a checkpoint whose model differs from the one ``cfg`` builds, naming why."""
    if not path.is_file():
        raise CheckpointError(
            f"--resume {path}: no such checkpoint — pass last.ckpt or a steps/step-*.ckpt "
            "file from the training.checkpoint_dir of the run to continue"
        )
    ckpt = read_checkpoint(path, "--resume ")  # weights_only: a pickle that runs code is refused
    hp = ckpt.get("hyper_parameters", {})
    if "model" not in hp or "n_features" not in hp:
        raise CheckpointError(
            f"--resume {path}: not a `plus-ultra train` checkpoint (no model hyper-parameters)"
            " — for a pretrained backbone use --pretrain-checkpoint instead"
        )
    diffs = []
    if hp["n_features"] != n_features:
        diffs.append(f"n_features: checkpoint {hp['n_features']}, data {n_features}")
    current = config_to_dict(training_model(cfg))  # as the run built it
    for key in sorted(set(current) | set(hp["model"])):
        free = key in ("compile", "activation_checkpointing", "dropout", "loss")
        if not free and hp["model"].get(key) != current.get(key):
            diffs.append(
                f"model.{key}: checkpoint {hp['model'].get(key)!r}, config {current.get(key)!r}"
            )
    if diffs:
        raise CheckpointError(
            f"--resume {path} was trained with a different model — "
            + "; ".join(diffs)
            + ". Resume with the run's own config.yaml, or start a new run."
        )


def _warm_start(module: TradingModule, path: Path, cfg: Config, columns: list[str]) -> None:
    if not path.exists():
        raise CheckpointError(
            f"--pretrain-checkpoint {path}: no such file — pass the backbone.pt or .ckpt "
            "written by `plus-ultra pretrain`"
        )
    from .warm_start import load_backbone

    report = load_backbone(module.model.backbone, path, cfg=cfg.model, feature_columns=columns)
    log.info(report.summary())


def _callbacks(cfg: Config, out: Path, has_val: bool) -> list[Callback]:
    t = cfg.training
    monitor, mode = (
        (t.monitor, "max" if t.monitor == "val_ic" else "min")
        if has_val
        else ("train_loss", "min")  # not None: last.ckpt's callback already has that key
    )
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=out,
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        ),
        # its own callback: Lightning's save_last only writes when a top-k save happened
        ModelCheckpoint(dirpath=out, filename="last", monitor=None, enable_version_counter=False),
    ]
    if t.checkpoint_every_n_steps:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out / "steps",
                filename="step-{step:06d}",
                every_n_train_steps=t.checkpoint_every_n_steps,
                save_top_k=-1,
                save_on_train_epoch_end=False,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    if t.early_stopping_patience and has_val:
        # judged after validation only: a run that max_steps ends mid-epoch has no val_* yet
        callbacks.append(
            EarlyStopping(
                monitor,
                patience=t.early_stopping_patience,
                mode=mode,
                check_on_train_epoch_end=False,
            )
        )
    if t.progress_bar and _has_rich():
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    if cfg.diagnostics.enabled:
        callbacks.append(
            TrainingDiagnosticsCallback(
                cfg.diagnostics,
                out / "diagnostics.parquet",
                quantile_levels=cfg.model.quantiles,
                flat_band=cfg.model.flat_band,
            )
        )
    if cfg.curriculum.enabled:
        scheduler = CurriculumScheduler(cfg.curriculum, cfg.windows.window, cfg.model.horizon)
        callbacks.append(CurriculumCallback(scheduler))
    return callbacks


def _has_rich() -> bool:
    from importlib.util import find_spec

    return find_spec("rich") is not None


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    return atomic_write(path, json.dumps(payload, indent=2, default=str))


def _model_info(dm: MarketDataModule, cfg: Config, periods_per_year: float) -> dict[str, Any]:
    return {
        "feature_columns": dm.feature_columns,
        "n_features": dm.n_features,
        "symbols": dm.symbols,
        "window": cfg.windows.window,
        "horizon": cfg.model.horizon,
        "target": cfg.windows.target,
        "normalise": cfg.windows.normalise,
        "architecture": cfg.model.architecture,
        "head": cfg.model.head,
        "supervision": dataclasses.asdict(supervision_of(cfg)),
        "periods_per_year": periods_per_year,
        "splits": dm.split_info(),
        "symbol_usage": dm.symbol_report.to_dict() if dm.symbol_report else [],
        "data_end": dm.timestamps[-1].isoformat() if len(dm.timestamps) else None,
    }


def _simple(forecast: np.ndarray, target: str) -> np.ndarray:
    """Forecasts as simple returns, as the predictions file states, whatever the target."""
    return np.expm1(forecast) if target == "log_return" else forecast


def _test_predictions(module: TradingModule, dm: MarketDataModule, path: Path) -> Path | None:
    c = module.collected("test")
    if not len(c["t"]):
        return None
    frame = pd.DataFrame(
        {
            "timestamp": dm.timestamps[c["t"].astype("int64")],
            "symbol": pd.Categorical.from_codes(c["s"].astype("int64"), dm.symbols).astype(str),
            "position": c["position"].astype("float64"),
            "forecast": _simple(c["forecast"].astype("float64"), dm.cfg.windows.target),
            "realised_return": c["realised"].astype("float64"),
        }
    ).sort_values(["timestamp", "symbol"], ignore_index=True)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(("val_", "test_", "train_"))}


def train(
    cfg: Config,
    pretrain_checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    datamodule: MarketDataModule | None = None,
) -> TrainResult:
    """Train the model ``cfg.model`` describes on ``cfg.data``; evaluate on the test split.

    ``pretrain_checkpoint``: a pretrained backbone to warm-start from (shapes must match).
    ``resume``: a checkpoint of an interrupted run (``last.ckpt`` or ``steps/step-*.ckpt``)
    to continue exactly where it stopped: weights, optimiser, schedule, epoch, position in
    the epoch's data order and RNG states. ``callbacks`` are added to the Trainer's.
    """
    check_config(cfg)  # registry names and horizons, before any data is read
    t = cfg.training
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = datamodule or MarketDataModule(cfg)
    dm.setup()
    if cfg.model.horizon > cfg.windows.horizon:
        raise ValueError(
            f"model.horizon={cfg.model.horizon} exceeds windows.horizon={cfg.windows.horizon}: "
            "the windows hold fewer target steps than the head predicts — make them equal"
        )
    periods = infer_periods_per_year(dm.timestamps)
    module = TradingModule(training_model(cfg), t, dm.n_features, periods_per_year=periods)
    if resume is not None:
        _check_resume(Path(resume), dm.n_features, cfg)
    elif pretrain_checkpoint is not None:
        _warm_start(module, Path(pretrain_checkpoint), cfg, dm.feature_columns)

    out = Path(t.checkpoint_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_val = len(dm.datasets["val"]) > 0
    loggers = build_loggers(cfg.tracking, out / "logs", out.name)
    trainer = build_trainer(
        t,
        out,
        loggers=loggers,
        callbacks=[*_callbacks(cfg, out, has_val), *callbacks],
        validate=has_val,
    )
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml")
        _write_json(out / "model_info.json", _model_info(dm, cfg, periods))
        train_rows = dm.splits["train"].input_rows
        reference = fit_drift_reference(
            dm.tensors, train_rows, bins=cfg.service.psi_bins, quantiles=cfg.service.drift_quantiles
        )
        save_drift_reference(reference, out / DRIFT_REFERENCE_FILE)
    trainer.fit(
        module,
        datamodule=dm,
        ckpt_path=str(resume) if resume is not None else None,
        weights_only=True,  # Lightning's own load of the resumed file: no code runs either
    )
    metrics = _scalars(trainer.callback_metrics)

    best = out / "best.ckpt"
    best_path = best if best.exists() else None
    predictions = None
    if len(dm.datasets["test"]) > 0:
        tested = trainer.test(
            module,
            datamodule=dm,
            ckpt_path=str(best_path) if best_path else None,
            verbose=False,
            weights_only=True,
        )
        metrics.update(_scalars(tested[0] if tested else {}))
        if trainer.is_global_zero:
            predictions = _test_predictions(module, dm, out / "test_predictions.parquet")
    metrics_path = out / "metrics.json"
    if trainer.is_global_zero:
        _write_json(
            metrics_path,
            {
                "metrics": metrics,
                "global_step": trainer.global_step,
                "epochs": trainer.current_epoch,
            },
        )
    last = out / "last.ckpt"
    return TrainResult(
        checkpoint_dir=out,
        best_checkpoint=best_path,
        last_checkpoint=last if last.exists() else None,
        config_path=out / "config.yaml",
        model_info_path=out / "model_info.json",
        metrics_path=metrics_path,
        test_predictions=predictions,
        global_step=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        metrics=metrics,
        symbol_report=dm.symbol_report,
    )
