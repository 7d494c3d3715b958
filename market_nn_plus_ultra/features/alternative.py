"""Alternative-data signals as registered features (tag ``alternative``).

The side tables reach the panel through
:class:`~market_nn_plus_ultra.data.alternative.AlternativeDataConnector` (a backward
as-of join with a staleness limit, so a value at ``t`` was observed at or before ``t``).
This module declares one feature per joined column of the default specs, named
``alt_<panel column>``: rates, scores and flags pass through unchanged, counts (news
volume, active addresses) are ``log1p``-compressed. They are not in the default selection
— a database may lack the side tables — so select them by tag::

    panel = join_alternative(read_panel(db), db)      # adds sentiment_score, macro_rate_10y, …
    REGISTRY.select(tags=["alternative"])             # alt_sentiment_score, alt_macro_rate_10y, …
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import AlternativeDataSpec
from ..data.alternative import AlternativeDataConnector, default_alternative_specs
from .registry import REGISTRY, FeatureRegistry

__all__ = ["ALT_FEATURES", "alternative_feature_names", "join_alternative", "register_alternative"]

#: Columns that are counts: heavy right tails, so the feature is log(1 + x).
_COUNTS = frozenset({"news_volume", "active_addresses"})
_DESCRIPTIONS = {
    "rate_10y": "10-year government yield (percent), latest macro release as of the bar",
    "cpi_surprise": "CPI print minus consensus (points), 0 between monthly releases; latest as of the bar",
    "event_flag": "1 on CPI and FOMC days (the latest macro row as of the bar), else 0",
    "funding_rate": "perpetual-swap funding rate per 8 h, latest as of the bar (crypto only)",
    "sentiment_score": "news/social sentiment score, latest as of the bar",
    "news_volume": "log(1 + number of news items) behind the latest sentiment score",
    "iv_30d": "30-day options-implied volatility (annualised, decimal), latest daily close",
    "iv_skew": "25-delta put minus call implied volatility, latest daily close",
    "active_addresses": "log(1 + active on-chain addresses), latest daily value (crypto only)",
    "exchange_netflow": "net coins moved onto exchanges, latest daily value (crypto only)",
}


def _passthrough(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).copy()


def _log1p(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    # A negative count is a data error; NaN keeps it out of training instead of log1p(-x).
    return np.log1p(np.where(values >= 0, values, np.nan))


def _panel_column(spec: AlternativeDataSpec, column: str) -> str:
    short = spec.name.removeprefix("alt_")
    return spec.feature_names.get(column, f"{short}_{column}")


def register_alternative(
    specs: Sequence[AlternativeDataSpec] | None = None,
    registry: FeatureRegistry = REGISTRY,
    *,
    replace: bool = False,
) -> list[str]:
    """Register one ``alt_<panel column>`` feature per column of ``specs`` into ``registry``.

    Only specs that list their ``columns`` can be registered (the names must be known
    without reading a database). Returns the feature names registered, in spec order.
    """
    names: list[str] = []
    for spec in default_alternative_specs() if specs is None else specs:
        if not spec.enabled or spec.columns is None:
            continue
        table = spec.name if spec.name.startswith("alt_") else f"alt_{spec.name}"
        for column in spec.columns:
            source = _panel_column(spec, column)
            name = f"alt_{source}"
            func = _log1p if column in _COUNTS else _passthrough
            detail = _DESCRIPTIONS.get(column, f"`{table}.{column}`, latest as of the bar")
            registry.register(
                name,
                inputs=(source,),
                warmup=0,
                tags=("alternative", spec.name.removeprefix("alt_")),
                description=f"{detail[0].upper()}{detail[1:]}. Source: `{table}.{column}` "
                f"(as-of join, stale after {spec.max_staleness}).",
                params={},
                tables=(table,),
                default=False,
                replace=replace,
            )(func)
            names.append(name)
    return names


def alternative_feature_names(registry: FeatureRegistry = REGISTRY) -> list[str]:
    """Every registered feature output tagged ``alternative``."""
    return [out for outs in registry.select(tags=["alternative"]).values() for out in outs]


def join_alternative(
    panel: pd.DataFrame,
    db_path: str | Path,
    specs: Sequence[AlternativeDataSpec] | None = None,
) -> pd.DataFrame:
    """``panel`` plus the side-table columns the ``alternative`` features read.

    A thin wrapper over :meth:`AlternativeDataConnector.join` (missing tables are
    skipped), so feature code need not reach into the data layer's classes.
    """
    return AlternativeDataConnector(specs).join(panel, db_path)


ALT_FEATURES: tuple[str, ...] = tuple(register_alternative())
"""The alternative-data features registered on import (from the default specs)."""
