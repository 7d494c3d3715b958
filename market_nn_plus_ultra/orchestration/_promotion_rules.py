"""Scoring and rules of the promotion decision (:func:`.promotion.decide` applies them).

Each rule compares the candidate's scorecard with the reference's (the champion, or the
first-run baseline) and returns a :class:`Rule`: passed, failed or skipped (``None``),
with one line in words saying why, naming the ``orchestration.promotion`` option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import Config, PromotionConfig
from ..evaluation.backtest import BacktestResult, require_columns
from ..evaluation.bootstrap import bootstrap_metrics
from ..evaluation.paired import sharpe_differences
from ..evaluation.sample import select_sample
from ..models.losses import direction_labels
from ..training.diagnostics import expected_calibration_error

__all__ = [
    "KEYS",
    "PROB_COLUMNS",
    "PromotionError",
    "Rule",
    "calibration",
    "calibration_rule",
    "drawdown_rule",
    "pair",
    "rows_info",
    "scorecard",
    "scored_rows",
    "sharpe_rule",
    "turnover_rule",
]

#: Class-probability columns of a predictions frame, in label order (0 down, 1 flat, 2 up).
PROB_COLUMNS = ("prob_down", "prob_flat", "prob_up")
KEYS = ["timestamp", "symbol"]
_SCORECARD = (
    "sharpe",
    "sortino",
    "total_return",
    "cagr",
    "volatility",
    "max_drawdown",
    "turnover",
    "hit_rate",
    "n_periods",
    "periods_per_year",
    "cost_bps",
)


class PromotionError(ValueError):
    """Bad promotion input or an unusable ``champion.json``; the message names the fix."""


@dataclass(frozen=True)
class Rule:
    """One rule's verdict: ``passed`` True/False, or None when skipped; ``detail`` holds
    ``value`` and ``threshold`` (and the two sides) for the decision's metrics."""

    name: str
    passed: bool | None  # None: skipped
    reason: str
    detail: dict[str, Any]


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def scored_rows(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The out-of-sample rows of a predictions frame, keys normalised to UTC."""
    if not isinstance(frame, pd.DataFrame):
        raise PromotionError(
            f"{what}: expected a predictions DataFrame, got {type(frame).__name__}"
        )
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    try:
        require_columns(frame, [*KEYS, "position", "realised_return"], what)
        frame, _ = select_sample(frame, what=what)
    except ValueError as err:
        raise PromotionError(str(err)) from None
    frame = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))
    dup = frame.duplicated(KEYS)
    if dup.any():
        first = frame.loc[dup, KEYS].iloc[0].tolist()
        raise PromotionError(
            f"{what}: {int(dup.sum())} duplicated (timestamp, symbol) rows (first {first}) — "
            "give one prediction per bar and symbol"
        )
    keep = [*KEYS, "position", "realised_return", *(c for c in PROB_COLUMNS if c in frame)]
    return frame[keep]


def pair(candidate: pd.DataFrame, champion: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames on the rows they share, checked to come from the same data."""
    tagged = {c: f"{c}__champion" for c in champion.columns if c not in KEYS}
    both = candidate.merge(champion.rename(columns=tagged), on=KEYS, how="inner")
    if both.empty:
        raise PromotionError(
            "candidate and champion predictions share no out-of-sample (timestamp, symbol) "
            f"row (candidate {len(candidate)} rows, champion {len(champion)}) — predict both "
            "models on the same bars"
        )
    a = both["realised_return"].to_numpy(dtype=np.float64)
    b = both["realised_return__champion"].to_numpy(dtype=np.float64)
    differ = ~np.isclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True)
    if differ.any():
        first = both.loc[differ, KEYS].iloc[0].tolist()
        raise PromotionError(
            f"candidate and champion predictions disagree on realised_return at "
            f"{int(differ.sum())} of {len(both)} shared rows (first {first}): they were not "
            "made from the same data — predict both on the same database"
        )
    cand = both[list(candidate.columns)]
    champ = both[[*KEYS, *tagged.values()]].rename(columns={v: k for k, v in tagged.items()})
    return cand.reset_index(drop=True), champ.reset_index(drop=True)


def calibration(frame: pd.DataFrame, cfg: Config) -> dict[str, float] | None:
    """ECE and multi-class Brier score of ``prob_*`` against realised directions."""
    if not all(c in frame for c in PROB_COLUMNS):
        return None
    probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)  # (N, 3)
    realised = frame["realised_return"].to_numpy(dtype=np.float64)
    ok = np.isfinite(probs).all(axis=1) & np.isfinite(realised)
    if not ok.any():
        return None
    probs, realised = probs[ok], realised[ok]
    labels = direction_labels(torch.from_numpy(realised), cfg.model.flat_band).numpy()
    onehot = np.eye(len(PROB_COLUMNS))[labels]  # (N, 3)
    return {
        "ece": expected_calibration_error(probs, labels, cfg.diagnostics.calibration_bins),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "calibration_rows": int(ok.sum()),
    }


def scorecard(result: BacktestResult, calibration: dict[str, float] | None) -> dict[str, Any]:
    card = {key: result.metrics.get(key) for key in _SCORECARD}
    return {**card, **(calibration or {})}


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = "+.2f") -> str:
    return "undefined" if x is None or not math.isfinite(x) else format(x, spec)


def sharpe_rule(
    cand: BacktestResult, ref: BacktestResult | None, ref_name: str, rules: PromotionConfig
) -> Rule:
    ppy = float(cand.metrics["periods_per_year"])
    level = rules.confidence
    kw = {"level": level, "reps": rules.bootstrap_samples, "block_length": rules.block_length}
    if ref is None:  # cash: the candidate's own Sharpe interval against zero
        frame = bootstrap_metrics(
            cand.returns.dropna(), periods_per_year=ppy, seed=rules.seed, **kw
        )
        row = frame.loc["sharpe"]
        stats = {"estimate": float(row["estimate"]), "low": float(row["low"])}
        stats |= {"high": float(row["high"]), "level": level, "reps": rules.bootstrap_samples}
        stats["block_length"] = float(row["block_length"])
    else:
        paired = sharpe_differences(
            cand.returns,
            {ref_name: ref.returns},
            periods_per_year=ppy,
            seed=rules.seed,
            adjust="none",
            **kw,
        )
        stats = paired[ref_name]
    low, bar = stats["low"], rules.min_sharpe_diff_low
    interval = (
        f"difference {_fmt(stats['estimate'])}, {level:.0%} interval "
        f"[{_fmt(low)}, {_fmt(stats['high'])}]"
    )
    versus = f"candidate Sharpe {_fmt(cand.metrics['sharpe'], '.2f')} vs {ref_name} " + (
        "0 (cash)" if ref is None else _fmt(ref.metrics["sharpe"], ".2f")
    )
    detail = {"value": low, "threshold": bar, **stats}
    if not math.isfinite(low):
        reason = (
            f"sharpe: failed — {versus}: the Sharpe difference is undefined (a return "
            "stream is flat), so the candidate cannot be shown to be better"
        )
        return Rule("sharpe", False, reason, detail)
    passed = low > bar
    verdict = "passed" if passed else "failed"
    if passed:
        tail = f"its lower end {_fmt(low)} exceeds min_sharpe_diff_low {bar:+.2f}"
    else:
        tail = (
            f"its lower end {_fmt(low)} does not exceed orchestration.promotion."
            f"min_sharpe_diff_low = {bar:+.2f}, so the candidate is not better with "
            f"{level:.0%} confidence"
        )
    return Rule("sharpe", passed, f"sharpe: {verdict} — {versus} ({interval}); {tail}", detail)


def drawdown_rule(cand: dict, ref: dict | None, ref_name: str, rules: PromotionConfig) -> Rule:
    tol = rules.max_drawdown_tolerance
    if tol is None:
        return Rule("max_drawdown", None, "max_drawdown: skipped — not checked (null)", {})
    if ref is None:
        reason = "max_drawdown: skipped — cash has no drawdown to compare with"
        return Rule("max_drawdown", None, reason, {})
    c, r = cand["max_drawdown"], ref["max_drawdown"]
    deeper = r - c  # drawdowns are negative: positive = the candidate's is deeper
    detail = {"value": deeper, "threshold": tol, "candidate": c, "reference": r}
    passed = bool(math.isfinite(deeper) and deeper <= tol + 1e-12)
    text = (
        f"candidate's max drawdown {_fmt(100 * c, '.1f')}% vs {ref_name}'s "
        f"{_fmt(100 * r, '.1f')}%: {_fmt(100 * abs(deeper), '.1f')} points "
        f"{'deeper' if deeper > 0 else 'shallower'}"
    )
    if passed:
        reason = f"max_drawdown: passed — {text} (tolerance {100 * tol:.1f} points)"
    else:
        reason = (
            f"max_drawdown: failed — {text}, more than orchestration.promotion."
            f"max_drawdown_tolerance = {tol:g} ({100 * tol:.1f} points)"
        )
    return Rule("max_drawdown", passed, reason, detail)


def turnover_rule(cand: dict, ref: dict | None, ref_name: str, rules: PromotionConfig) -> Rule:
    limit = rules.max_turnover_ratio
    if limit is None:
        return Rule("turnover", None, "turnover: skipped — not checked (null)", {})
    if ref is None or ref_name == "buy_and_hold":
        what = "cash never trades" if ref is None else "buy-and-hold trades only once"
        return Rule("turnover", None, f"turnover: skipped — {what}, no ratio to compare", {})
    c, r = float(cand["turnover"]), float(ref["turnover"])
    ratio = c / r if r > 0 else (1.0 if c == 0 else math.inf)
    detail = {"value": ratio, "threshold": limit, "candidate": c, "reference": r}
    passed = bool(ratio <= limit + 1e-12)
    text = (
        f"candidate turns over {c:.3f} per bar, {ratio:.2f}× the {ref_name}'s {r:.3f}"
        if r > 0
        else f"candidate turns over {c:.3f} per bar; the {ref_name} never trades"
    )
    if passed:
        return Rule("turnover", True, f"turnover: passed — {text} (limit {limit:g}×)", detail)
    reason = (
        f"turnover: failed — {text}, above orchestration.promotion.max_turnover_ratio = {limit:g}"
    )
    return Rule("turnover", False, reason, detail)


def calibration_rule(cand: dict, ref: dict | None, ref_name: str, rules: PromotionConfig) -> Rule:
    limit, metric = rules.max_calibration_worsening, rules.calibration_metric
    if limit is None:
        return Rule("calibration", None, "calibration: skipped — not checked (null)", {})
    missing = "/".join(PROB_COLUMNS)
    if metric not in cand:
        reason = f"calibration: skipped — the candidate has no {missing} probabilities"
        return Rule("calibration", None, reason, {})
    if ref is None or metric not in ref:
        reason = f"calibration: skipped — the {ref_name} has no {missing} probabilities"
        return Rule("calibration", None, reason, {})
    worse = cand[metric] - ref[metric]
    detail = {
        "value": worse,
        "threshold": limit,
        "candidate": cand[metric],
        "reference": ref[metric],
    }
    passed = bool(math.isfinite(worse) and worse <= limit + 1e-12)
    text = f"candidate {metric} {cand[metric]:.4f} vs {ref_name} {ref[metric]:.4f} ({worse:+.4f})"
    if passed:
        return Rule("calibration", True, f"calibration: passed — {text}, limit +{limit:g}", detail)
    reason = (
        f"calibration: failed — {text}, worse by more than orchestration.promotion."
        f"max_calibration_worsening = {limit:g}"
    )
    return Rule("calibration", False, reason, detail)


def rows_info(cand: pd.DataFrame, result: BacktestResult) -> dict[str, Any]:
    valid = result.returns.dropna().index
    return {
        "rows": len(cand),
        "bars": len(valid),
        "start": valid.min() if len(valid) else None,
        "end": valid.max() if len(valid) else None,
    }
