"""Stationary block bootstrap confidence intervals and paired Sharpe comparisons.

Returns are serially dependent (volatility clusters), so resampling single bars
understates the uncertainty. The stationary bootstrap of Politis & Romano (1994, JASA
89:1303) resamples blocks of random, geometrically distributed length with mean ``b``;
``b`` defaults to the Politis–White (2004) optimal length (``arch.bootstrap
.optimal_block_length``), and the resampled indices come from
``arch.bootstrap.StationaryBootstrap``. Intervals are percentile intervals: the
``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the statistic over the resamples.

Paired comparison: the model's and a baseline's returns on the same bars are resampled
with the *same* indices, so their common market exposure cancels;
``P(model > baseline) = share of resamples where the model's Sharpe is higher``, ties
counted half (identical series give exactly 0.5).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from .metrics import annual_return, max_drawdown, sharpe_ratio

__all__ = [
    "BOOTSTRAP_METRICS",
    "bootstrap_metrics",
    "compare_sharpe",
    "optimal_block",
    "prob_sharpe_exceeds",
]

#: The statistics :func:`bootstrap_metrics` gives intervals for.
BOOTSTRAP_METRICS = ("sharpe", "cagr", "max_drawdown")

# Resampled index matrices are built in chunks of about this many cells (8 bytes each).
_CHUNK_CELLS = 2_000_000


def _as_array(returns, what: str = "returns") -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"bootstrap: {what} must be one series, got shape {r.shape}")
    r = r[~np.isnan(r)]
    if len(r) < 10:
        raise ValueError(
            f"bootstrap: {what} has {len(r)} non-NaN periods; at least 10 are needed "
            "for a meaningful interval — lengthen the test period"
        )
    return r


def optimal_block(*series: np.ndarray) -> float:
    """Politis–White optimal mean block length (the largest over ``series``), at least 1."""
    from arch.bootstrap import optimal_block_length

    lengths = []
    for values in series:
        if np.std(values) == 0:
            continue  # a flat series has no dependence to preserve
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            b = float(optimal_block_length(values)["stationary"].iloc[0])
        if math.isfinite(b):
            lengths.append(b)
    return max([1.0, *lengths])


def _index_chunks(n: int, reps: int, block: float, seed: int) -> Iterator[np.ndarray]:
    """Yield ``(chunk, n)`` int matrices of stationary-bootstrap indices, ``reps`` rows in all."""
    from arch.bootstrap import StationaryBootstrap

    sampler = StationaryBootstrap(block, np.zeros(n), seed=np.random.default_rng(seed))
    rows = max(1, _CHUNK_CELLS // n)
    done = 0
    while done < reps:
        take = min(rows, reps - done)
        # One vectorised draw per replication (arch), stacked so the statistics below run
        # over the whole (reps, n) matrix at once.
        yield np.stack([sampler.update_indices() for _ in range(take)])
        done += take


def _sharpe_rows(matrix: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Annualised Sharpe of each row of a (reps, n) return matrix (NaN where flat)."""
    sd = matrix.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, matrix.mean(axis=1) / sd * math.sqrt(periods_per_year), np.nan)


def _cagr_rows(matrix: np.ndarray, periods_per_year: float) -> np.ndarray:
    log_wealth = np.log1p(np.maximum(matrix, -1.0)).sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.exp(log_wealth * periods_per_year / matrix.shape[1]) - 1.0


def _max_drawdown_rows(matrix: np.ndarray) -> np.ndarray:
    wealth = np.cumprod(1.0 + matrix, axis=1)
    peak = np.maximum(np.maximum.accumulate(wealth, axis=1), 1.0)  # wealth starts at 1
    return (wealth / peak - 1.0).min(axis=1)


def bootstrap_metrics(
    returns,
    *,
    periods_per_year: float = 252.0,
    level: float = 0.95,
    reps: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile confidence intervals for Sharpe, CAGR and max drawdown of ``returns``.

    ``returns``: simple periodic returns (NaN dropped), at least 10. Returns a frame indexed
    by metric (``sharpe``, ``cagr``, ``max_drawdown``) with columns ``estimate`` (on the
    original series, as :mod:`.metrics` computes it), ``low``, ``high``, ``level``,
    ``block_length`` and ``reps``. The same ``seed`` gives the same interval.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"evaluation.bootstrap_level must lie in (0, 1), got {level}")
    if reps < 10:
        raise ValueError(f"evaluation.bootstrap_reps must be >= 10, got {reps}")
    r = _as_array(returns)
    block = optimal_block(r) if block_length is None else float(block_length)
    stats: dict[str, list[np.ndarray]] = {name: [] for name in BOOTSTRAP_METRICS}
    for idx in _index_chunks(len(r), reps, block, seed):
        sample = r[idx]  # (chunk, n)
        stats["sharpe"].append(_sharpe_rows(sample, periods_per_year))
        stats["cagr"].append(_cagr_rows(sample, periods_per_year))
        stats["max_drawdown"].append(_max_drawdown_rows(sample))
    estimate = {
        "sharpe": sharpe_ratio(r, periods_per_year),
        "cagr": annual_return(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
    }
    tail = 100.0 * (1.0 - level) / 2.0
    rows = []
    for name in BOOTSTRAP_METRICS:
        values = np.concatenate(stats[name])
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if len(values) else (np.nan,) * 2
        rows.append((name, estimate[name], float(low), float(high)))
    frame = pd.DataFrame(rows, columns=["metric", "estimate", "low", "high"]).set_index("metric")
    frame["level"] = level
    frame["block_length"] = block
    frame["reps"] = reps
    return frame


def prob_sharpe_exceeds(
    model,
    baseline,
    *,
    periods_per_year: float = 252.0,
    reps: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
) -> float:
    """P(Sharpe of ``model`` > Sharpe of ``baseline``) under a paired stationary bootstrap.

    Both series must cover the same bars (same length, aligned); each resample draws one
    index set and applies it to both. Ties count half; resamples where either Sharpe is
    undefined (a flat resample) are left out.
    """
    m = np.asarray(model, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if m.shape != b.shape:
        raise ValueError(
            f"paired bootstrap: model ({m.shape}) and baseline ({b.shape}) returns differ in "
            "length — align them on the same timestamps first"
        )
    ok = ~(np.isnan(m) | np.isnan(b))
    m, b = _as_array(m[ok], "model returns"), _as_array(b[ok], "baseline returns")
    block = optimal_block(m, b) if block_length is None else float(block_length)
    wins, counted = 0.0, 0
    for idx in _index_chunks(len(m), reps, block, seed):
        sm, sb = _sharpe_rows(m[idx], periods_per_year), _sharpe_rows(b[idx], periods_per_year)
        valid = np.isfinite(sm) & np.isfinite(sb)
        wins += float(np.sum(sm[valid] > sb[valid]) + 0.5 * np.sum(sm[valid] == sb[valid]))
        counted += int(valid.sum())
    return wins / counted if counted else math.nan


def compare_sharpe(
    model: pd.Series,
    baselines: Mapping[str, pd.Series],
    *,
    periods_per_year: float = 252.0,
    reps: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """``{baseline: P(model Sharpe > baseline Sharpe)}`` on the timestamps both series share.

    ``model`` and each baseline are per-timestamp return Series (e.g.
    ``BacktestResult.returns``); they are inner-joined on their index before resampling.
    """
    out: dict[str, float] = {}
    for name, series in baselines.items():
        joined = pd.concat([model.rename("m"), series.rename("b")], axis=1, join="inner").dropna()
        out[name] = prob_sharpe_exceeds(
            joined["m"].to_numpy(),
            joined["b"].to_numpy(),
            periods_per_year=periods_per_year,
            reps=reps,
            block_length=block_length,
            seed=seed,
        )
    return out
