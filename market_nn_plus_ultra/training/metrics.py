"""Trading metrics of a split's forecasts: IC, directional accuracy, Sharpe after costs.

Validation and test steps collect, per window, its end row ``t_index``, ``symbol_index``,
the first-horizon ``forecast`` and ``position`` of the head and the realised *simple*
return from t to t+1 (the batch's ``realised``, whatever ``windows.target`` is).
:func:`split_metrics` turns them into:

* ``ic``: Spearman rank correlation of forecast and realised next return, either
  *pooled* (one correlation over every (bar, symbol) pair of the split) or
  *cross_section* (per bar across symbols, averaged over bars with >= 3 symbols and
  non-constant values) — ``training.ic_mode``.
* ``directional_accuracy``: share of windows where ``sign(forecast) == sign(return)``
  (zero returns left out).
* ``sharpe``: annualised Sharpe of the equal-weight portfolio holding each window's
  ``position`` over (t, t+1], net of ``cost_bps`` per unit of position change — the
  backtest convention of DESIGN.md, computed by :func:`evaluation.backtest.backtest`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..evaluation.backtest import backtest
from ..evaluation.metrics import information_coefficient

__all__ = ["cross_section_ic", "split_metrics"]


def cross_section_ic(t_index: np.ndarray, forecast: np.ndarray, realised: np.ndarray) -> float:
    """Mean over bars of the Spearman correlation across symbols (bars with >= 3 symbols)."""
    frame = pd.DataFrame({"t": t_index, "f": forecast, "r": realised})
    ranks = frame.groupby("t")[["f", "r"]].rank()  # (N, 2) ranks within each bar
    ranks["t"] = frame["t"]
    g = ranks.groupby("t")
    centred = ranks[["f", "r"]] - g[["f", "r"]].transform("mean")
    ranks["fr"] = centred["f"] * centred["r"]
    ranks["ff"] = centred["f"] ** 2
    ranks["rr"] = centred["r"] ** 2
    sums = ranks.groupby("t")[["fr", "ff", "rr"]].sum()
    counts = g.size()
    ok = (counts >= 3) & (sums["ff"] > 0) & (sums["rr"] > 0)
    if not ok.any():
        return math.nan
    ic = sums.loc[ok, "fr"] / np.sqrt(sums.loc[ok, "ff"] * sums.loc[ok, "rr"])
    return float(ic.mean())


def split_metrics(
    t_index: np.ndarray,
    symbol_index: np.ndarray,
    forecast: np.ndarray,
    position: np.ndarray,
    realised: np.ndarray,
    *,
    ic_mode: str = "pooled",
    cost_bps: float = 0.0,
    periods_per_year: float = 252.0,
) -> dict[str, float]:
    """``{"ic", "directional_accuracy", "sharpe", "n"}`` of one split (see module doc).

    Every argument is a 1-D array with one entry per window (``N``); ``forecast`` and
    ``realised`` are simple returns, ``position`` in [-1, 1].
    """
    n = len(t_index)
    if n == 0:
        return {"ic": math.nan, "directional_accuracy": math.nan, "sharpe": math.nan, "n": 0.0}
    if ic_mode == "pooled":
        ic = information_coefficient(forecast, realised)
    elif ic_mode == "cross_section":
        ic = cross_section_ic(t_index, forecast, realised)
    else:
        raise ValueError(f"training.ic_mode={ic_mode!r}: use 'pooled' or 'cross_section'")
    moved = realised != 0
    direction = (
        float(np.mean(np.sign(forecast[moved]) == np.sign(realised[moved])))
        if moved.any()
        else math.nan
    )
    frame = pd.DataFrame(
        {
            "timestamp": t_index,
            "symbol": symbol_index,
            "position": np.clip(position, -1.0, 1.0),
            "realised_return": realised,
        }
    )
    result = backtest(
        frame, cost_bps=cost_bps, benchmark_column=None, periods_per_year=periods_per_year
    )
    sharpe = float(result.metrics.get("sharpe", math.nan))
    return {"ic": ic, "directional_accuracy": direction, "sharpe": sharpe, "n": float(n)}
