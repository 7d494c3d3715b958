"""Vectorised backtest of a predictions frame under the backtest convention (DESIGN.md).

For each symbol the net return earned over (t, t+1] is::

    position_t * realised_return_t - cost_bps / 1e4 * |position_t - position_{t-1}|

with ``position_{-1} = 0`` (the first trade pays its cost). The portfolio return at t is
the mean of the net returns of the symbols with a row at t (equal capital per symbol),
or a weighted mean when ``weights`` are given. Rows whose realised return is unknown
(the last bar) earn nothing and are left out of the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .metrics import compute_metrics, infer_periods_per_year
from .predictions import checked_keys

__all__ = ["BacktestResult", "backtest", "require_columns"]


@dataclass
class BacktestResult:
    """Per-period portfolio returns, their parts, and the metrics JSON."""

    returns: pd.Series  # net portfolio return per timestamp
    gross: pd.Series  # before costs
    costs: pd.Series  # cost per timestamp (positive = paid)
    turnover: pd.Series  # mean |Δposition| across symbols per timestamp
    net_by_row: np.ndarray  # net return of every input row (NaN where unknown)
    metrics: dict[str, float] = field(default_factory=dict)


def require_columns(frame: pd.DataFrame, columns: list[str], what: str = "predictions") -> None:
    """Raise a clear error naming missing columns and those present."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {missing}; columns present: {list(frame.columns)}. "
            "A predictions file needs timestamp, symbol, position and realised_return "
            "(pass --return-column if the returns are named differently)."
        )


def _long(predictions: pd.DataFrame) -> pd.DataFrame:
    if isinstance(predictions.index, pd.MultiIndex):
        predictions = predictions.reset_index()
    require_columns(predictions, ["timestamp", "symbol"])
    return predictions


def backtest(
    predictions: pd.DataFrame,
    *,
    cost_bps: float = 0.0,
    position_column: str = "position",
    return_column: str = "realised_return",
    benchmark_column: str | None = "benchmark_return",
    weights: pd.Series | None = None,
    periods_per_year: float | None = None,
    clip_positions: bool = False,
) -> BacktestResult:
    """Backtest target positions against realised returns with proportional costs.

    ``predictions``: one row per (timestamp, symbol) with ``position`` in [-1, 1] and
    ``realised_return`` (simple return from t to t+1); any row order. Positions outside
    [-1, 1], non-finite positions and duplicated keys are errors (see
    :func:`~.predictions.check_predictions`); ``clip_positions`` clips on purpose.
    ``weights``: optional capital weight per symbol (normalised over the symbols present
    at each t).
    """
    frame = _long(predictions)
    require_columns(frame, [position_column, return_column])
    if cost_bps < 0:
        raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
    frame, codes = checked_keys(
        frame, position_column=position_column, clip=clip_positions, require_sorted=False
    )
    ts_codes, sym_codes = codes.ts, codes.symbol
    ts_levels, sym_levels = codes.ts_levels, codes.symbol_levels
    pos = frame[position_column].to_numpy(dtype=np.float64)
    ret = pd.to_numeric(frame[return_column], errors="coerce").to_numpy(dtype=np.float64)

    # Previous position of the same symbol: visit rows in (symbol, time) order once. Rows
    # sorted by (timestamp, symbol) — the contract — need only a stable sort by symbol.
    if len(ts_codes) and (ts_codes[1:] >= ts_codes[:-1]).all():
        order = np.argsort(sym_codes, kind="stable")
    else:
        order = np.lexsort((ts_codes, sym_codes))
    sorted_pos = pos[order]
    same = np.zeros(len(order), dtype=bool)
    same[1:] = sym_codes[order][1:] == sym_codes[order][:-1]
    prev = np.empty_like(pos)
    prev[order] = np.where(same, np.concatenate([[0.0], sorted_pos[:-1]]), 0.0)

    trade = np.abs(pos - prev)
    gross = pos * ret
    cost = cost_bps / 1e4 * trade
    known = ~np.isnan(ret)
    net = np.where(known, gross - cost, np.nan)

    if weights is None:
        w = known.astype(np.float64)
    else:
        w = np.where(known, weights.reindex(sym_levels).fillna(0.0).to_numpy()[sym_codes], 0.0)
    n_t = len(ts_levels)
    denom = np.bincount(ts_codes, weights=w, minlength=n_t)

    def per_t(values: np.ndarray) -> np.ndarray:
        total = np.bincount(ts_codes, weights=np.where(known, values, 0.0) * w, minlength=n_t)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, total / denom, np.nan)

    index = pd.DatetimeIndex(ts_levels, name="timestamp")
    result = BacktestResult(
        returns=pd.Series(per_t(gross - cost), index=index, name="net_return"),
        gross=pd.Series(per_t(gross), index=index, name="gross_return"),
        costs=pd.Series(per_t(cost), index=index, name="cost"),
        turnover=pd.Series(per_t(trade), index=index, name="turnover"),
        net_by_row=net,
    )
    valid = result.returns.notna().to_numpy()
    ppy = periods_per_year or infer_periods_per_year(index[valid])
    bench = None
    if benchmark_column and benchmark_column in frame.columns:
        b = frame[benchmark_column].to_numpy(dtype=np.float64)
        ok = ~np.isnan(b)
        count = np.bincount(ts_codes, weights=ok, minlength=n_t)
        with np.errstate(invalid="ignore", divide="ignore"):
            bench_t = np.bincount(ts_codes, weights=np.where(ok, b, 0.0), minlength=n_t) / count
        bench = bench_t[valid]
    result.metrics = compute_metrics(
        result.returns.to_numpy()[valid],
        periods_per_year=ppy,
        turnover=float(result.turnover.to_numpy()[valid].mean()) if valid.any() else float("nan"),
        benchmark=bench,
    )
    result.metrics["cost_bps"] = float(cost_bps)
    return result
