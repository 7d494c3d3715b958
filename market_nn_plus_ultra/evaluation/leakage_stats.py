"""Statistics of the stored-data leakage check: pooled rank ICs, copy counts, rank ANOVA.

Everything here works on one column aligned to the panel's (timestamp, symbol) rows and
on per-symbol integer codes, so each statistic is computed within a symbol (a symbol's
own bars, its own ranks) and pooled across symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["CopyCount", "RankIC", "copy_count", "pooled_ic", "rank_anova"]

_COPY_RTOL = 2e-6  # float32 storage and text round trips agree to ~1e-7 relative


@dataclass(frozen=True)
class RankIC:
    """A pooled Spearman IC: ``ic`` (n-weighted mean of per-symbol ICs) over ``n`` pairs.

    Under no association each per-symbol IC has standard error ``1/sqrt(n_s - 1)``, so
    the pooled one has about ``1/sqrt(n)`` and ``z = ic * sqrt(n)`` is standard normal.
    """

    ic: float
    n: int

    @property
    def z(self) -> float:
        return self.ic * np.sqrt(self.n) if self.n else 0.0

    @property
    def p_value(self) -> float:
        """Two-sided p-value of ``z``."""
        return float(2 * stats.norm.sf(abs(self.z))) if self.n else 1.0


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the average ranks of ``x`` and ``y`` (NaN if one is constant)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    # elementwise sums, not np.dot: BLAS threads would fight over a shared machine's cores
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def pooled_ic(x: np.ndarray, y: np.ndarray, codes: np.ndarray) -> RankIC:
    """Spearman IC of ``x`` with ``y`` within each symbol (``codes``), pooled by size.

    ``x``, ``y``, ``codes``: ``(N,)``; rows where either value is not finite are left
    out; a symbol with fewer than 3 pairs or a constant column contributes nothing.
    """
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.argsort(codes[ok], kind="stable")]
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    ics, sizes = [], []
    for rows in np.split(order, bounds):
        if len(rows) >= 3:
            ic = _spearman(x[rows], y[rows])
            if np.isfinite(ic):
                ics.append(ic)
                sizes.append(len(rows))
    if not ics:
        return RankIC(float("nan"), 0)
    return RankIC(float(np.average(ics, weights=sizes)), int(sum(sizes)))


@dataclass(frozen=True)
class CopyCount:
    """Rows where a column equals ``scale`` × a return: ``copies`` of ``n`` rows tested,
    and ``placebo`` rows where it equals ``scale`` × the return two bars back instead."""

    copies: int
    placebo: int
    scale: float
    n: int

    @property
    def p_value(self) -> float:
        """One-sided sign test: under no copying a match is as likely with either return."""
        total = self.copies + self.placebo
        return float(stats.binom.sf(self.copies - 1, total, 0.5)) if total else 1.0


def _matches(x: np.ndarray, y: np.ndarray, scale: float) -> int:
    ok = np.isfinite(x) & np.isfinite(y) & (y != 0)
    return int(np.sum(np.abs(x[ok] - scale * y[ok]) <= _COPY_RTOL * np.abs(scale * y[ok])))


def copy_count(x: np.ndarray, ahead: np.ndarray, behind: np.ndarray) -> CopyCount:
    """How many rows of ``x`` are an exact multiple of ``ahead``, with the commonest multiple.

    ``x``, ``ahead`` (the return t→t+1), ``behind`` (the placebo, t-2→t-1): ``(N,)``.
    The ratio ``x / ahead`` is binned at a relative width of ``1e-6``; its commonest
    value is the scale of the copy (1 for a copied return, 100 for one in percent). A
    continuous column unrelated to the return almost never repeats a ratio, and a copy
    repeats it on every copied row.
    """
    ok = np.isfinite(x) & np.isfinite(ahead) & (x != 0) & (ahead != 0)
    n = int((np.isfinite(x) & np.isfinite(ahead)).sum())
    if not ok.any():
        return CopyCount(0, 0, float("nan"), n)
    ratio = x[ok] / ahead[ok]
    # sign in the lowest bit; log-magnitude binned at 1e-6 (a relative width)
    key = np.round(np.log(np.abs(ratio)) * 1e6).astype(np.int64) * 2 + (ratio < 0)
    values, counts = np.unique(key, return_counts=True)
    merged = counts.copy()
    # a copy straddling a bin edge splits over two neighbouring bins of the same sign
    neighbour = np.diff(values) == 2
    merged[:-1][neighbour] += counts[1:][neighbour]
    best = int(np.argmax(merged))
    scale = float(np.exp((values[best] // 2) / 1e6) * (-1 if values[best] % 2 else 1))
    if merged[best] < 2:  # no ratio repeats: nothing is copied
        return CopyCount(int(merged[best]), 0, scale, n)
    return CopyCount(_matches(x, ahead, scale), _matches(x, behind, scale), scale, n)


def rank_anova(labels: np.ndarray, y: np.ndarray, codes: np.ndarray) -> RankIC:
    """Kruskal–Wallis of ``y``'s ranks across ``labels``, within each symbol, pooled.

    For categorical columns (regime labels). Returns the effect size
    ``sqrt(ε²)`` with ``ε² = ΣH_s / Σ(n_s - 1)`` as ``ic`` (for two labels it is about
    the |rank correlation| of ``y`` with the label) and ``n``; ``z`` is the normal
    quantile of the pooled chi-square p-value (``ΣH_s`` on ``Σ(k_s - 1)`` degrees).
    """
    ok = pd.notna(labels) & np.isfinite(y)
    frame = pd.DataFrame({"label": labels[ok], "y": y[ok], "s": codes[ok]})
    h_total, df_total, n_total, n_minus = 0.0, 0, 0, 0
    for _, part in frame.groupby("s", sort=False):
        n = len(part)
        groups = part["label"].nunique()
        if n < 3 or groups < 2:
            continue
        rank = part["y"].rank().to_numpy()
        means = pd.Series(rank).groupby(part["label"].to_numpy()).agg(["mean", "size"])
        h = 12.0 / (n * (n + 1)) * float((means["size"] * (means["mean"] - (n + 1) / 2) ** 2).sum())
        h_total, df_total, n_total, n_minus = (
            h_total + h,
            df_total + groups - 1,
            n_total + n,
            n_minus + n - 1,
        )
    if not df_total:
        return RankIC(float("nan"), 0)
    effect = float(np.sqrt(h_total / n_minus))
    p = float(stats.chi2.sf(h_total, df_total))
    return _AnovaIC(effect, n_total, p)


@dataclass(frozen=True)
class _AnovaIC(RankIC):
    """A rank-ANOVA effect size with the chi-square p-value it came from."""

    p: float = 1.0

    @property
    def z(self) -> float:
        return float(stats.norm.isf(max(self.p, 1e-300) / 2))

    @property
    def p_value(self) -> float:
        return self.p
