"""Database → feature panel → Parquet: what ``plus-ultra features compute`` runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..config import DataConfig, FeaturesConfig
from ..data.alternative import AlternativeDataConnector
from ..data.asset_flags import unknown_inputs
from ..data.panel import read_panel
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
    """
    pipeline = FeaturePipeline.from_config(features, registry)
    panel = read_panel(
        data.sqlite_path,
        data.symbols,
        data.start,
        data.end,
        include_indicators=data.include_indicators,
        cache=data.cache,
        cache_dir=data.cache_dir,
        threads=data.read_threads,
    )
    connector = AlternativeDataConnector(data.alternative_data)
    if connector.specs:
        panel = connector.join(panel, data.sqlite_path)
    # Close-only symbols (flat bars, volume 0) are marked in asset_flags by the importers.
    symbols = panel.index.get_level_values("symbol").unique()
    unknown = unknown_inputs(data.sqlite_path, symbols)
    frame = pipeline.transform_panel(panel, on_feature=on_feature, unknown_inputs=unknown)
    return frame, pipeline.last_report


def write_features(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a feature panel to Parquet atomically (temp file, then rename); returns the path.

    The (timestamp, symbol) index is stored as columns and restored by ``pd.read_parquet``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, engine="pyarrow")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
