"""Experiment loggers from the ``tracking`` section: CSV, TensorBoard, W&B, MLflow.

CSV is always available; TensorBoard is used when ``tensorboard`` (or ``tensorboardX``) is
installed and skipped with a log line otherwise; Weights & Biases and MLflow only when
switched on (``pip install market-nn-plus-ultra[tracking]``). W&B stays offline unless
``tracking.wandb_offline=false``; MLflow writes to a local file store unless given a URI.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from ..config import TrackingConfig

__all__ = ["TrackingError", "build_loggers"]

log = logging.getLogger(__name__)


class TrackingError(ValueError):
    """A requested logger cannot be used; the message names the option and the fix."""


def _missing_extra(option: str, package: str) -> TrackingError:
    return TrackingError(
        f"{option}=true needs the `{package}` package — install the tracking extra "
        f"(pip install 'market-nn-plus-ultra[tracking]') or set {option}=false"
    )


def build_loggers(cfg: TrackingConfig, log_dir: str | Path, default_name: str) -> list[Logger]:
    """The Lightning loggers ``cfg`` asks for, writing under ``log_dir``.

    ``default_name`` names the run when ``tracking.run_name`` is null.
    """
    log_dir = Path(log_dir)
    name = cfg.run_name or default_name
    loggers: list[Logger] = []
    if cfg.csv:
        loggers.append(CSVLogger(log_dir, name="csv", version=""))
    if cfg.tensorboard:
        if find_spec("tensorboard") is not None or find_spec("tensorboardX") is not None:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(log_dir, name="tensorboard", version=""))
        else:
            log.info("tracking: tensorboard is not installed; logging to CSV only")
    if cfg.wandb:
        if find_spec("wandb") is None:
            raise _missing_extra("tracking.wandb", "wandb")
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(
                name=name,
                project=cfg.wandb_project,
                entity=cfg.wandb_entity,
                save_dir=str(log_dir),
                offline=cfg.wandb_offline,
            )
        )
    if cfg.mlflow:
        if find_spec("mlflow") is None:
            raise _missing_extra("tracking.mlflow", "mlflow")
        from lightning.pytorch.loggers import MLFlowLogger

        uri = cfg.mlflow_tracking_uri or (log_dir / "mlruns").resolve().as_uri()
        loggers.append(
            MLFlowLogger(experiment_name=cfg.mlflow_experiment, run_name=name, tracking_uri=uri)
        )
    return loggers
