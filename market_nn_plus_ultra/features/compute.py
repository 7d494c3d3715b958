"""Database → feature panel → Parquet: what ``plus-ultra features compute`` runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .._io import atomic_path
from ..config import DataConfig, FeaturesConfig
from ..data.alternative import AlternativeDataConnector
from ..data.asset_flags import unknown_inputs
from ..data.validation_entry import read_checked_panel
from .pipeline import FeaturePipeline, FeatureReport
from .registry import FeatureRegistry

__all__ = ["compute_features", "write_features"]


def compute_features(
    data: DataConfig,
    features: FeaturesConfig,
    *,
    registry: FeatureRegistry | None = None,
    on_feature: Callable[[str, int, int], None] | None = None,
) -> tuple[pd.DataFrame, FeatureReport]:
    """Read the panel that ``data`` describes, join its alternative data, add features.

    Returns the feature panel (indexed by ``timestamp``, ``symbol``: OHLCV, indicators,
    joined ``alt_*`` columns, then the feature columns) and the pipeline's report.
    Features that need a column a close-only symbol lacks (``asset_flags``) are skipped.
    The bars are validated as they are read
    (:func:`~market_nn_plus_ultra.data.validation_entry.read_checked_panel`): failing rows
    are dropped and logged, or raise ``EntryValidationError`` with
    ``data.strict_validation``.
    """
    pipeline = FeaturePipeline.from_config(features, registry)
    # Validated where it enters: failing bars are dropped with a warning, or halt the
    # run with the validation table under data.strict_validation.
    panel = read_checked_panel(data)
    connector = AlternativeDataConnector(data.alternative_data)
    if connector.specs:
        panel = connector.join(panel, data.sqlite_path)
    # Close-only symbols (flat bars, volume 0) are marked in asset_flags by the importers.
    symbols = panel.index.get_level_values("symbol").unique()
    unknown = unknown_inputs(data.sqlite_path, symbols)
    frame = pipeline.transform_panel(panel, on_feature=on_feature, unknown_inputs=unknown)
    return frame, pipeline.last_report


def write_features(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a feature panel to Parquet atomically (``atomic_path``: temp file, fsync, rename); returns the path.

    The (timestamp, symbol) index is stored as columns and restored by ``pd.read_parquet``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow")
    return path
