"""Training layer: the DataModule, supervised LightningModule and ``train()``.

dm = MarketDataModule(cfg)          # database → purged train/val/test windows
result = train(cfg)                 # fit, checkpoint, evaluate on the test split
"""

from .data import MarketDataModule, ResumableBatchSampler
from .metrics import cross_section_ic, split_metrics
from .module import TradingModule, warmup_cosine
from .tracking import TrackingError, build_loggers
from .train import CheckpointError, TrainResult, resolve_precision, train

__all__ = [
    "CheckpointError",
    "MarketDataModule",
    "ResumableBatchSampler",
    "TrackingError",
    "TradingModule",
    "TrainResult",
    "build_loggers",
    "cross_section_ic",
    "resolve_precision",
    "split_metrics",
    "train",
    "warmup_cosine",
]
