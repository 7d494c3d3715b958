"""Paired Sharpe differences against several baselines, adjusted for multiple comparisons.

For each baseline ``j`` the statistic is ``d_j = Sharpe(model) − Sharpe(baseline_j)``
(annualised, ddof=1) on the bars that the model and *every* baseline share. Its
distribution comes from one paired stationary bootstrap (Politis & Romano 1994): each
resample draws one index set and applies it to the model and to all baselines, so the
common market exposure cancels in each difference and the dependence *between* the
differences is kept (which the Romano–Wolf stepdown needs).

* Interval: the percentile interval ``[q_{(1−level)/2}, q_{(1+level)/2}]`` of ``d*_j``.
* p-value of ``H0: d_j = 0`` (two-sided), from the bootstrap distribution centred on the
  estimate, which imposes the null (Davison & Hinkley 1997, §4.4):
  ``p_j = (1 + #{|d*_j − d_j| ≥ |d_j|}) / (1 + B)`` over the ``B`` valid resamples.
* Multiple baselines: Holm's (1979) step-down ``p_adjusted`` with Bonferroni-level
  percentile intervals (level ``1 − (1 − level)/m``), or the Romano–Wolf (2005) stepdown
  on the studentised differences ``t*_j = (d*_j − d_j)/se_j`` with max-|t| simultaneous
  intervals ``d_j ± c·se_j``, ``c`` the ``level`` quantile of ``max_j |t*_j|``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .bootstrap import _as_array, _index_chunks, _sharpe_rows, optimal_block
from .metrics import sharpe_ratio

__all__ = ["ADJUSTMENTS", "holm_adjust", "mean_sharpe_lift", "sharpe_differences"]

#: Multiple-comparison adjustments :func:`sharpe_differences` accepts.
ADJUSTMENTS = ("holm", "romano-wolf", "none")


def holm_adjust(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order (NaN left NaN).

    Sorted ascending, ``p_adj_(i) = max_{k ≤ i} min(1, (m − k + 1) · p_(k))`` with ``m`` the
    number of non-NaN p-values; equal to ``statsmodels``' ``multipletests(method="holm")``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def _romano_wolf(t_obs: np.ndarray, t_star: np.ndarray) -> np.ndarray:
    """Romano–Wolf stepdown p-values from observed |t| (k,) and centred resamples (B, k).

    Step ``i`` (hypotheses in decreasing |t|) compares ``|t_(i)|`` with the maximum of
    ``|t*|`` over the hypotheses not yet rejected; monotonicity is enforced as in Holm.
    """
    k = len(t_obs)
    out = np.full(k, np.nan)
    ok = np.flatnonzero(np.isfinite(t_obs))
    order = ok[np.argsort(-np.abs(t_obs[ok]), kind="stable")]
    running = 0.0
    for step, j in enumerate(order):
        rest = order[step:]
        block = np.abs(t_star[:, rest])
        valid = ~np.isnan(block).all(axis=1)
        biggest = np.nanmax(block[valid], axis=1) if valid.any() else np.array([])
        p = (1.0 + np.sum(biggest >= abs(t_obs[j]))) / (1.0 + len(biggest))
        running = max(running, p)
        out[j] = running
    return out


def _romano_wolf_adjust(
    estimate: np.ndarray, centred: np.ndarray, se: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Romano–Wolf p-values and max-|t| simultaneous intervals ``estimate ± c·se``.

    ``estimate`` (k,), ``centred`` = d* − d (reps, k), ``se`` (k,) bootstrap std of d*.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(se > 0, se, np.nan)
        # se = 0 (e.g. identical series): the difference is exact, t is 0 or infinite
        t_obs = np.where(se > 0, estimate / safe, np.where(estimate == 0, 0.0, np.inf))
        t_obs = np.where(np.isnan(estimate) | np.isnan(se), np.nan, t_obs)
        t_star = centred / safe  # (reps, k)
    t_star = np.where(np.isfinite(t_star), t_star, np.nan)
    p_adj = _romano_wolf(t_obs, t_star)
    rows = ~np.isnan(t_star).all(axis=1)  # resamples with at least one defined t*
    max_t = np.nanmax(np.abs(t_star[rows]), axis=1) if rows.any() else np.array([])
    c = float(np.quantile(max_t, level)) if len(max_t) else 0.0
    return p_adj, estimate - c * se, estimate + c * se


def _aligned(model: pd.Series, baselines: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Model and baselines as columns 0..k on the timestamps where all are known."""
    for name, s in {"model": model, **baselines}.items():
        if not isinstance(s, pd.Series):
            raise TypeError(
                f"sharpe_differences: {name} returns are a {type(s).__name__}; pass a "
                "pandas Series indexed by timestamp (e.g. BacktestResult.returns)"
            )
    columns = [model.rename(0), *(s.rename(i + 1) for i, s in enumerate(baselines.values()))]
    try:
        joined = pd.concat(columns, axis=1, join="inner")
    except Exception as err:  # duplicated timestamps make the join ambiguous
        raise ValueError(
            f"sharpe_differences: cannot align the return series ({type(err).__name__}: {err})"
            " — give one return per timestamp (e.g. BacktestResult.returns)"
        ) from None
    joined = joined.dropna()
    if len(joined) < 10:
        counts = {
            name: len(pd.concat([model, s], axis=1, join="inner").dropna())
            for name, s in baselines.items()
        }
        raise ValueError(
            f"sharpe_differences: the model and all baselines share {len(joined)} bars with "
            f"returns; at least 10 are needed. Bars shared with the model per baseline: "
            f"{counts} — drop the baseline with too few bars or lengthen the test period"
        )
    return joined


def sharpe_differences(
    model: pd.Series,
    baselines: Mapping[str, pd.Series],
    *,
    periods_per_year: float = 252.0,
    level: float = 0.95,
    reps: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
    adjust: str = "holm",
) -> dict[str, dict]:
    """Sharpe(model) − Sharpe(baseline) for each baseline, paired-bootstrapped and adjusted.

    ``model`` and each baseline: per-timestamp periodic returns (``BacktestResult.returns``),
    inner-joined on their index over *all* series (the ``n`` shared bars, NaN dropped).
    ``block_length``: mean block length in bars (None: the Politis–White optimum, the
    largest over all series). ``adjust``: ``holm`` (default), ``romano-wolf`` or ``none``.

    Returns ``{baseline: {...}}`` with ``estimate`` (annualised Sharpe difference),
    ``low``/``high`` (percentile interval at ``level``), ``p_value`` (two-sided, centred
    bootstrap), ``p_adjusted``, ``low_adjusted``/``high_adjusted`` (simultaneous
    intervals), ``significant`` (``p_adjusted < 1 − level``), ``n``, ``prob_beat``
    (share of resamples with a positive difference, ties half) and the settings used
    (``level``, ``reps``, ``block_length``, ``adjust``). The same ``seed`` gives the
    same numbers.
    """
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"sharpe_differences: adjust={adjust!r}; use one of {ADJUSTMENTS}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"evaluation.bootstrap_level must lie in (0, 1), got {level}")
    if reps < 10:
        raise ValueError(f"evaluation.bootstrap_reps must be >= 10, got {reps}")
    if not baselines:
        return {}
    joined = _aligned(model, baselines)
    values = joined.to_numpy(dtype=np.float64)  # (n, 1 + k): model, then each baseline
    m = _as_array(values[:, 0], "model returns")
    others = values[:, 1:]
    n, k = others.shape
    block = optimal_block(*values.T) if block_length is None else float(block_length)

    chunks: list[np.ndarray] = []
    for idx in _index_chunks(n, reps, block, seed):  # one index matrix for every series
        model_sharpe = _sharpe_rows(m[idx], periods_per_year)  # (chunk,)
        diffs = [model_sharpe - _sharpe_rows(others[:, j][idx], periods_per_year) for j in range(k)]
        chunks.append(np.stack(diffs, axis=1))  # (chunk, k)
    star = np.concatenate(chunks)  # (reps, k), NaN where a resample is flat
    estimate = np.array(
        [
            sharpe_ratio(m, periods_per_year) - sharpe_ratio(others[:, j], periods_per_year)
            for j in range(k)
        ]
    )

    tail = (1.0 - level) / 2.0
    adj_tail = tail / k  # Bonferroni: each interval at level 1 − (1 − level)/k
    centred = star - estimate  # (reps, k): the null imposed by centring
    low, high, p_raw, prob_beat = (np.full(k, np.nan) for _ in range(4))
    low_adj, high_adj, se = (np.full(k, np.nan) for _ in range(3))
    for j in range(k):
        d = star[:, j][np.isfinite(star[:, j])]
        if not len(d) or not math.isfinite(estimate[j]):
            continue
        low[j], high[j] = np.quantile(d, [tail, 1.0 - tail])
        low_adj[j], high_adj[j] = np.quantile(d, [adj_tail, 1.0 - adj_tail])
        # the tolerance keeps exact ties (identical series: every |d* − d| is 0) counted
        extreme = np.abs(d - estimate[j]) >= abs(estimate[j]) - 1e-12
        p_raw[j] = (1.0 + extreme.sum()) / (1.0 + len(d))
        prob_beat[j] = (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / len(d)
        se[j] = np.std(d, ddof=1) if len(d) > 1 else np.nan

    if adjust == "holm":
        p_adj = holm_adjust(p_raw)
    elif adjust == "romano-wolf":
        p_adj, low_adj, high_adj = _romano_wolf_adjust(estimate, centred, se, level)
    else:
        p_adj, low_adj, high_adj = p_raw.copy(), low.copy(), high.copy()

    out: dict[str, dict] = {}
    for j, name in enumerate(baselines):
        out[name] = {
            "estimate": float(estimate[j]),
            "low": float(low[j]),
            "high": float(high[j]),
            "p_value": float(p_raw[j]),
            "p_adjusted": float(p_adj[j]),
            "low_adjusted": float(low_adj[j]),
            "high_adjusted": float(high_adj[j]),
            "significant": bool(p_adj[j] < 1.0 - level),
            "n": int(n),
            "prob_beat": float(prob_beat[j]),
            "level": float(level),
            "reps": int(reps),
            "block_length": float(block),
            "adjust": adjust,
        }
    return out


def mean_sharpe_lift(
    models: Sequence[pd.Series],
    baseline: pd.Series,
    *,
    periods_per_year: float = 252.0,
    level: float = 0.95,
    reps: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Mean over ``models`` of ``Sharpe(model_i) − Sharpe(baseline)``, paired-bootstrapped.

    ``models``: several runs of one procedure (e.g. seeds) on the same bars as
    ``baseline``; every series is inner-joined on the bars all share. Each resample draws
    one stationary-bootstrap index set and applies it to every model and to the baseline,
    so the dependence between the runs (they trade the same market) stays in the
    interval. Returns ``estimate``, ``low``/``high`` (percentile interval at ``level``),
    ``p_value`` (two-sided, centred bootstrap as in :func:`sharpe_differences`),
    ``prob_beat``, ``n``, ``runs`` and the settings used.
    """
    if not models:
        raise ValueError("mean_sharpe_lift: no model return series given")
    if not 0.0 < level < 1.0:
        raise ValueError(f"evaluation.bootstrap_level must lie in (0, 1), got {level}")
    if reps < 10:
        raise ValueError(f"evaluation.bootstrap_reps must be >= 10, got {reps}")
    named = {f"run {i}": s for i, s in enumerate(models)}
    joined = _aligned(baseline, named).to_numpy(dtype=np.float64)  # (n, 1 + k)
    base, runs = _as_array(joined[:, 0], "baseline returns"), joined[:, 1:]
    n, k = runs.shape
    block = optimal_block(*joined.T) if block_length is None else float(block_length)
    chunks = []
    for idx in _index_chunks(n, reps, block, seed):
        base_sharpe = _sharpe_rows(base[idx], periods_per_year)
        lifts = [_sharpe_rows(runs[:, j][idx], periods_per_year) - base_sharpe for j in range(k)]
        chunks.append(np.mean(lifts, axis=0))  # NaN where a resample is flat
    star = np.concatenate(chunks)
    star = star[np.isfinite(star)]
    base_obs = sharpe_ratio(base, periods_per_year)
    estimate = float(
        np.mean([sharpe_ratio(runs[:, j], periods_per_year) - base_obs for j in range(k)])
    )
    tail = (1.0 - level) / 2.0
    low = high = p_value = prob_beat = math.nan
    if len(star) and math.isfinite(estimate):
        low, high = (float(q) for q in np.quantile(star, [tail, 1.0 - tail]))
        extreme = np.abs(star - estimate) >= abs(estimate) - 1e-12
        p_value = float((1.0 + extreme.sum()) / (1.0 + len(star)))
        prob_beat = float((np.sum(star > 0) + 0.5 * np.sum(star == 0)) / len(star))
    return {
        "estimate": estimate,
        "low": low,
        "high": high,
        "p_value": p_value,
        "prob_beat": prob_beat,
        "n": int(n),
        "runs": int(k),
        "level": float(level),
        "reps": int(reps),
        "block_length": float(block),
    }
