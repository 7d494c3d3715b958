"""Performance metrics on a returns stream, with the standard definitions.

Every metric matches empyrical / quantstats (tested to 1e-9 relative): simple periodic
returns in, annualisation by ``periods_per_year`` (252 for daily data; inferred from the
timestamps otherwise, see :func:`infer_periods_per_year`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_KEYS",
    "annual_return",
    "annual_volatility",
    "beta",
    "calmar_ratio",
    "compute_metrics",
    "cvar",
    "drawdown_series",
    "hit_rate",
    "infer_periods_per_year",
    "information_coefficient",
    "information_ratio",
    "max_drawdown",
    "sharpe_ratio",
    "sortino_ratio",
    "tail_ratio",
    "total_return",
    "tracking_error",
    "value_at_risk",
]

#: The keys of the metrics JSON (DESIGN.md "Backtest convention").
METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "hit_rate",
    "turnover",
    "cvar_95",
    "n_periods",
)


def _clean(returns: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64)
    return arr[~np.isnan(arr)]


def infer_periods_per_year(timestamps: pd.DatetimeIndex | Sequence) -> float:
    """Bars per year: 252 for daily-or-slower business data, else observed bars per year.

    Daily data (median spacing between 20 hours and 4 days) uses the 252-trading-day
    convention; weekly → 52; monthly → 12. Intraday data uses the observed number of
    bars per year over the sample, which is right for both session (equities) and
    24/7 (crypto) calendars.
    """
    idx = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(timestamps))).sort_values()
    if len(idx) < 2:
        return 252.0
    spacing = pd.Series(idx[1:] - idx[:-1]).median()
    hours = spacing / pd.Timedelta(hours=1)
    if 20 <= hours <= 96:
        return 252.0
    if 96 < hours <= 24 * 10:
        return 52.0
    if hours > 24 * 10:
        return 12.0
    years = (idx[-1] - idx[0]) / pd.Timedelta(days=365.25)
    return float((len(idx) - 1) / years)


def total_return(returns) -> float:
    r = _clean(returns)
    return float(np.prod(1.0 + r) - 1.0) if len(r) else math.nan


def annual_return(returns, periods_per_year: float = 252.0) -> float:
    """CAGR: (final wealth)^(1/years) − 1 with years = periods / periods_per_year."""
    r = _clean(returns)
    if not len(r):
        return math.nan
    years = len(r) / periods_per_year
    return float((1.0 + total_return(r)) ** (1.0 / years) - 1.0)


def annual_volatility(returns, periods_per_year: float = 252.0) -> float:
    r = _clean(returns)
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year)) if len(r) > 1 else math.nan


def sharpe_ratio(returns, periods_per_year: float = 252.0, risk_free: float = 0.0) -> float:
    """Annualised Sharpe: mean(r − rf) / std(r − rf, ddof=1) × √periods (NaN if flat)."""
    r = _clean(returns) - risk_free
    if len(r) < 2:
        return math.nan
    sd = np.std(r, ddof=1)
    return float(np.mean(r) / sd * math.sqrt(periods_per_year)) if sd > 0 else math.nan


def sortino_ratio(returns, periods_per_year: float = 252.0, required: float = 0.0) -> float:
    """Annualised Sortino: mean excess × periods / (downside deviation × √periods)."""
    r = _clean(returns) - required
    if len(r) < 2:
        return math.nan
    downside = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * math.sqrt(periods_per_year)
    if downside == 0:
        return math.inf if np.mean(r) > 0 else math.nan
    return float(np.mean(r) * periods_per_year / downside)


def drawdown_series(returns) -> np.ndarray:
    """Drawdown from the running peak of wealth (starting at 1 before the first period)."""
    r = _clean(returns)
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    peak = np.maximum.accumulate(wealth)
    return (wealth / peak - 1.0)[1:]


def max_drawdown(returns) -> float:
    """Largest peak-to-trough loss, as a negative fraction (empyrical's sign)."""
    dd = drawdown_series(returns)
    return float(dd.min()) if len(dd) else math.nan


def calmar_ratio(returns, periods_per_year: float = 252.0) -> float:
    mdd = max_drawdown(returns)
    if not mdd or math.isnan(mdd):
        return math.nan
    return annual_return(returns, periods_per_year) / abs(mdd)


def value_at_risk(returns, cutoff: float = 0.05) -> float:
    """Historical VaR: the ``cutoff`` percentile of returns (negative = loss)."""
    r = _clean(returns)
    return float(np.percentile(r, 100 * cutoff)) if len(r) else math.nan


def cvar(returns, cutoff: float = 0.05) -> float:
    """Conditional VaR (expected shortfall): mean of the worst ``cutoff`` share of returns."""
    r = _clean(returns)
    if not len(r):
        return math.nan
    k = int((len(r) - 1) * cutoff)
    return float(np.mean(np.partition(r, k)[: k + 1]))


def tail_ratio(returns) -> float:
    """|95th percentile| / |5th percentile|."""
    r = _clean(returns)
    if not len(r):
        return math.nan
    low = abs(np.percentile(r, 5))
    return float(abs(np.percentile(r, 95)) / low) if low > 0 else math.nan


def hit_rate(returns) -> float:
    """Share of periods with a non-zero return whose return is positive."""
    r = _clean(returns)
    active = r[r != 0]
    return float(np.mean(active > 0)) if len(active) else math.nan


def _aligned(returns, benchmark) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    if r.shape != b.shape:
        raise ValueError(f"returns ({r.shape}) and benchmark ({b.shape}) differ in length")
    ok = ~(np.isnan(r) | np.isnan(b))
    return r[ok], b[ok]


def tracking_error(returns, benchmark, periods_per_year: float = 252.0) -> float:
    r, b = _aligned(returns, benchmark)
    return float(np.std(r - b, ddof=1) * math.sqrt(periods_per_year)) if len(r) > 1 else math.nan


def information_ratio(returns, benchmark, periods_per_year: float = 252.0) -> float:
    """Annualised mean active return over its standard deviation (ddof=1)."""
    r, b = _aligned(returns, benchmark)
    if len(r) < 2:
        return math.nan
    active = r - b
    sd = np.std(active, ddof=1)
    return float(np.mean(active) / sd * math.sqrt(periods_per_year)) if sd > 0 else math.nan


def beta(returns, benchmark) -> float:
    """cov(r, b) / var(b) (population moments, as empyrical)."""
    r, b = _aligned(returns, benchmark)
    if len(r) < 2:
        return math.nan
    var = np.var(b)
    return float(np.mean((b - b.mean()) * r) / var) if var > 0 else math.nan


def information_coefficient(forecast, realised, method: str = "spearman") -> float:
    """Correlation between forecasts and realised returns (rank by default)."""
    f, r = _aligned(forecast, realised)
    if len(f) < 3 or np.std(f) == 0 or np.std(r) == 0:
        return math.nan
    if method == "spearman":
        f = pd.Series(f).rank().to_numpy()
        r = pd.Series(r).rank().to_numpy()
    elif method != "pearson":
        raise ValueError(
            f"information_coefficient: method must be spearman or pearson, got {method!r}"
        )
    return float(np.corrcoef(f, r)[0, 1])


def compute_metrics(
    returns,
    *,
    periods_per_year: float = 252.0,
    turnover: float = math.nan,
    benchmark=None,
) -> dict[str, float]:
    """The metrics JSON of DESIGN.md (plus VaR, tail ratio and benchmark-relative keys)."""
    r = _clean(returns)
    out = {
        "total_return": total_return(r),
        "cagr": annual_return(r, periods_per_year),
        "volatility": annual_volatility(r, periods_per_year),
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r, periods_per_year),
        "hit_rate": hit_rate(r),
        "turnover": float(turnover),
        "cvar_95": cvar(r, 0.05),
        "n_periods": len(r),
        "var_95": value_at_risk(r, 0.05),
        "tail_ratio": tail_ratio(r),
        "periods_per_year": float(periods_per_year),
    }
    if benchmark is not None:
        out["information_ratio"] = information_ratio(returns, benchmark, periods_per_year)
        out["tracking_error"] = tracking_error(returns, benchmark, periods_per_year)
        out["beta"] = beta(returns, benchmark)
    return out
