"""Windows layer: panel → market tensors, zero-copy sliding windows, memmap cache, purged splits.

tensors = build_tensors(panel, cfg.windows, source_version=...)   # [T, S, F] + targets
train, val, test = purged_splits(tensors.n_rows, cfg.windows.val_fraction,
                                 cfg.windows.test_fraction, window=..., horizon=...)
ds = SlidingWindowDataset.from_config(tensors, cfg.windows, split=train)
batch = ds.batch(np.arange(256))                                   # x: (256, W, F)
report = symbol_report(tensors, {"train": ds})                     # usable cells per symbol
"""

from .cache import build_tensors, tensor_cache_key
from .dataset import Normaliser, SlidingWindowDataset, fit_normaliser
from .report import SymbolReport, SymbolUsage, symbol_report
from .sequences import SequenceDataset
from .splits import Split, default_embargo, purged_splits, walk_forward_splits
from .tensors import MarketTensors, WindowsError

__all__ = [
    "MarketTensors",
    "Normaliser",
    "SequenceDataset",
    "SlidingWindowDataset",
    "Split",
    "SymbolReport",
    "SymbolUsage",
    "WindowsError",
    "build_tensors",
    "default_embargo",
    "fit_normaliser",
    "purged_splits",
    "symbol_report",
    "tensor_cache_key",
    "walk_forward_splits",
]
