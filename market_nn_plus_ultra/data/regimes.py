"""Causal regime labels: volatility, liquidity and sector rotation, by quantile bands.

Each labeller turns the panel into one measure per (timestamp, symbol) and labels it by
where it falls among the symbol's OWN history of that measure up to and including ``t``
(expanding quantiles, or rolling over ``quantile_window`` bars). Nothing after ``t``
reaches the label at ``t``: recomputing on data truncated at any cut leaves every
earlier label unchanged (``plus-ultra audit`` checks exactly that).

Measures (per symbol, ``r`` = log close-to-close return):

- ``volatility``: rolling standard deviation of ``r`` over ``vol_window`` bars.
- ``liquidity``: rolling mean dollar volume (close × volume), or minus the Amihud (2002)
  illiquidity ``mean(|r| / dollar volume)``, so that "high" always means liquid.
- ``sector_rotation``: relative strength of the symbol's sector, i.e. the mean
  ``sector_window``-bar log return of the sector's symbols minus that of every symbol
  trading at ``t`` ("high" = the sector leads the cross-section).

With bands ``[0.33, 0.66]`` a value at or below the 33% quantile is ``low``, at or below
the 66% quantile ``mid``, above it ``high``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.typing import SeriesGroupBy

from ..config import RegimeConfig
from .store import format_timestamps, read_table

__all__ = [
    "REGIME_NAMES",
    "RegimeConfig",
    "band_labels",
    "label_by_quantiles",
    "read_regimes",
    "read_sectors",
    "regime_labels",
    "regime_measures",
    "regimes_table",
]

log = logging.getLogger(__name__)

REGIME_NAMES = ("volatility", "liquidity", "sector_rotation")


def band_labels(cfg: RegimeConfig) -> list[str]:
    """Label text per band, low to high (``len(cfg.bands) + 1`` of them)."""
    n = len(cfg.bands) + 1
    if cfg.labels is None:
        return ["low", "mid", "high"] if n == 3 else [f"band_{i}" for i in range(n)]
    if len(cfg.labels) != n:
        raise ValueError(
            f"data.regimes.labels has {len(cfg.labels)} entries but data.regimes.bands "
            f"{cfg.bands} make {n} bands — give {n} labels, low to high"
        )
    if len(set(cfg.labels)) != n:
        raise ValueError(f"data.regimes.labels {cfg.labels} repeats a label — make them distinct")
    return list(cfg.labels)


def _by_symbol(values: pd.Series) -> SeriesGroupBy:
    return values.groupby(level="symbol", sort=False)


def _rolling(values: pd.Series, window: int, how: str) -> pd.Series:
    """Per-symbol trailing ``how`` ("mean" / "std") over ``window`` rows, panel-aligned."""
    rolled = getattr(_by_symbol(values).rolling(window, min_periods=window), how)()
    return rolled.droplevel(0).reindex(values.index)


def _log_returns(panel: pd.DataFrame) -> pd.Series:
    close = panel["close"].where(panel["close"] > 0)
    return _by_symbol(np.log(close)).diff()


def _sector_strength(
    panel: pd.DataFrame, window: int, sectors: Mapping[str, str] | pd.Series
) -> pd.Series:
    """Sector mean minus cross-section mean of the ``window``-bar log return, at each t."""
    close = panel["close"].where(panel["close"] > 0)
    ret = _by_symbol(np.log(close)).diff(window)
    symbols = panel.index.get_level_values("symbol")
    sector = pd.Series(symbols.map(pd.Series(sectors, dtype=object)), index=panel.index)
    stamps = panel.index.get_level_values("timestamp")
    cross = ret.groupby(stamps).transform("mean")
    sector_mean = ret.groupby([stamps, sector.to_numpy()], dropna=False).transform("mean")
    return (sector_mean - cross).where(sector.notna())


def regime_measures(
    panel: pd.DataFrame,
    cfg: RegimeConfig,
    sectors: Mapping[str, str] | pd.Series | None = None,
) -> pd.DataFrame:
    """The raw measure behind each configured labeller.

    ``panel``: (timestamp, symbol)-indexed with ``close`` and ``volume``; ``sectors``:
    symbol → sector (needed for ``sector_rotation``). Returns a float frame with the
    panel's index and one column per labeller in ``cfg.labellers``.
    """
    missing = [c for c in ("close", "volume") if c not in panel.columns]
    if missing:
        raise ValueError(f"regime labels need panel columns {missing}; the panel has none")
    ret = _log_returns(panel)
    out: dict[str, pd.Series] = {}
    for name in dict.fromkeys(cfg.labellers):
        if name == "volatility":
            out[name] = _rolling(ret, cfg.vol_window, "std")
        elif name == "liquidity":
            dollar = (panel["close"] * panel["volume"]).astype("float64")
            if cfg.liquidity_measure == "dollar_volume":
                out[name] = _rolling(dollar, cfg.liquidity_window, "mean")
            else:
                # A bar without trading has no defined price impact: NaN, not infinity.
                impact = (ret.abs() / dollar.where(dollar > 0)).replace(np.inf, np.nan)
                out[name] = -_rolling(impact, cfg.liquidity_window, "mean")
        else:
            if sectors is None or pd.Series(sectors, dtype=object).dropna().empty:
                raise ValueError(
                    "data.regimes.labellers includes sector_rotation but assets.sector is empty "
                    "— fill assets.sector or drop sector_rotation from data.regimes.labellers"
                )
            out[name] = _sector_strength(panel, cfg.sector_window, sectors)
    return pd.DataFrame(out, index=panel.index, dtype="float64")


def label_by_quantiles(
    measure: pd.Series,
    bands: Sequence[float],
    labels: Sequence[str],
    *,
    window: int | None = None,
    min_history: int = 60,
) -> pd.Series:
    """Label each value by the band it falls in among its symbol's values up to t.

    ``measure``: (timestamp, symbol)-indexed floats. Thresholds at ``t`` are the
    ``bands`` quantiles (linear interpolation, as ``numpy.quantile``) of the symbol's
    non-NaN values at or before ``t`` — the last ``window`` rows when given, else all —
    once at least ``min_history`` of them exist. Returns object labels (NaN = unlabelled).
    """
    grouped = _by_symbol(measure)
    roll = (
        grouped.expanding(min_periods=min_history)
        if window is None
        else grouped.rolling(window, min_periods=min(min_history, window))
    )
    thresholds = np.column_stack(
        [roll.quantile(q).droplevel(0).reindex(measure.index).to_numpy() for q in bands]
    )  # (N, n_bands)
    values = measure.to_numpy()
    band = (values[:, None] > thresholds).sum(axis=1)
    known = ~np.isnan(values) & ~np.isnan(thresholds).any(axis=1)
    text = np.asarray(labels, dtype=object)[band]
    return pd.Series(np.where(known, text, None), index=measure.index, dtype=object)


def regime_labels(
    panel: pd.DataFrame,
    cfg: RegimeConfig,
    sectors: Mapping[str, str] | pd.Series | None = None,
) -> pd.DataFrame:
    """Causal labels, wide: the panel's index, one object column per labeller.

    See :func:`regime_measures` for the inputs and :func:`label_by_quantiles` for the
    banding; rows still in warm-up hold None.
    """
    labels = band_labels(cfg)
    measures = regime_measures(panel, cfg, sectors)
    return pd.DataFrame(
        {
            name: label_by_quantiles(
                measures[name],
                cfg.bands,
                labels,
                window=cfg.quantile_window,
                min_history=cfg.min_history,
            )
            for name in measures.columns
        },
        index=panel.index,
    )


def regimes_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Wide labels → rows of the ``regimes`` table (timestamp, symbol, name, value).

    Unlabelled cells are dropped; rows are ordered by (timestamp, symbol, name) and the
    timestamps are ISO-8601 UTC text, ready for :func:`~.store.update_database`.
    """
    long = labels.stack(future_stack=True).rename("value").dropna()
    long.index = long.index.set_names(["timestamp", "symbol", "name"])
    frame = long.reset_index().sort_values(["timestamp", "symbol", "name"], kind="stable")
    frame["timestamp"] = format_timestamps(frame["timestamp"])
    frame["value"] = frame["value"].astype(str)
    frame["symbol"] = frame["symbol"].astype(str)
    frame["name"] = frame["name"].astype(str)
    return frame.reset_index(drop=True)


def read_sectors(db: str | Path) -> pd.Series:
    """``assets.sector`` as a symbol → sector Series (missing sectors dropped)."""
    assets = read_table(db, "assets")
    sectors = assets.set_index("symbol")["sector"].dropna()
    return sectors[sectors.astype(str).str.strip() != ""].astype(str)


def read_regimes(db: str | Path, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``regimes`` table, wide: (timestamp, symbol)-indexed, one column per name.

    ``names`` selects labellers (all when None); an unknown name is an error that lists
    the ones present.
    """
    frame = read_table(db, "regimes")
    present = sorted(frame["name"].unique()) if len(frame) else []
    if names is not None:
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ValueError(
                f"regimes.name: no labels named {unknown} in {db}; present: {present or 'none'}"
                " — build them with `plus-ultra data build --regime-labels`"
            )
        frame = frame[frame["name"].isin(list(names))]
    frame = frame.assign(timestamp=pd.DatetimeIndex(frame["timestamp"]).as_unit("ns"))
    wide = frame.pivot(index=["timestamp", "symbol"], columns="name", values="value")
    wide.columns.name = None
    return wide.sort_index()
