"""Training layer: the DataModule, supervised LightningModule and ``train()``.

dm = MarketDataModule(cfg)          # database → purged train/val/test windows
result = train(cfg)                 # fit, checkpoint, evaluate on the test split
"""

from .curriculum import CurriculumCallback, CurriculumDataset, CurriculumScheduler
from .data import MarketDataModule, ResumableBatchSampler
from .diagnostics import (
    TrainingDiagnosticsCallback,
    expected_calibration_error,
    noise_scale_terms,
    quantile_coverage,
)
from .metrics import cross_section_ic, split_metrics
from .module import TradingModule, warmup_cosine
from .tracking import TrackingError, build_loggers
from .train import CheckpointError, TrainResult, resolve_precision, train

__all__ = [
    "CheckpointError",
    "CurriculumCallback",
    "CurriculumDataset",
    "CurriculumScheduler",
    "MarketDataModule",
    "ResumableBatchSampler",
    "TrackingError",
    "TradingModule",
    "TrainResult",
    "TrainingDiagnosticsCallback",
    "build_loggers",
    "cross_section_ic",
    "expected_calibration_error",
    "noise_scale_terms",
    "quantile_coverage",
    "resolve_precision",
    "split_metrics",
    "train",
    "warmup_cosine",
]
