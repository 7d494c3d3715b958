"""Training layer: the DataModule, supervised LightningModule and ``train()``.

dm = MarketDataModule(cfg)          # database → purged train/val/test windows
result = train(cfg)                 # fit, checkpoint, evaluate on the test split
"""

from .data import MarketDataModule, ResumableBatchSampler

__all__ = ["MarketDataModule", "ResumableBatchSampler"]
