"""The walk-forward summary as a report reads it: intervals, P(beat) and the listed values.

A report takes the walk-forward summary typed (:class:`~.summary.WalkForwardSummary`) or
as the ``summary.json`` mapping; :func:`split_summary` also reads hand-written JSON with
plain ``intervals`` (records of ``metric, strategy, low, point, high, level``) and
``p_beat`` (baseline → probability) keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .summary import BootstrapSummary, WalkForwardSummary, is_walkforward_summary

__all__ = [
    "as_summary",
    "flatten_summary",
    "listed_values",
    "split_summary",
    "summary_intervals",
    "summary_view",
]

MODEL_NAME = "model"


def as_summary(summary: WalkForwardSummary | Mapping[str, Any] | None) -> WalkForwardSummary | None:
    """The walk-forward summary as a typed result (None for anything that is not one)."""
    if isinstance(summary, WalkForwardSummary):
        return summary
    return WalkForwardSummary.from_dict(summary) if is_walkforward_summary(summary) else None


def listed_values(summary: WalkForwardSummary | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return summary_view(summary) if isinstance(summary, WalkForwardSummary) else dict(summary)


def _reduced(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with its ``bootstrap`` block cut to the scalars and the Sharpe differences
    (the intervals and P(beat) have tables of their own), moved last."""
    boot = summary.pop("bootstrap", None)
    if isinstance(boot, Mapping):
        summary["bootstrap"] = {
            k: v for k, v in boot.items() if not isinstance(v, Mapping) or k == "sharpe_difference"
        }
    return summary


def summary_view(summary: WalkForwardSummary) -> dict[str, Any]:
    """The values a report lists under "Walk-forward summary": the ``summary.json``
    structure with the bootstrap intervals and P(beat) left to their own tables."""
    return _reduced(summary.to_dict())


def _bootstrap_rows(boot: BootstrapSummary) -> list[dict[str, Any]]:
    level = float("nan") if boot.level is None else float(boot.level)
    return [
        {
            "metric": metric,
            "strategy": MODEL_NAME,
            "low": interval.low,
            "point": interval.estimate,
            "high": interval.high,
            "level": level,
        }
        for metric, interval in boot.model.items()
    ]


def _interval_frame(rows: list[dict[str, Any]]) -> pd.DataFrame | None:
    if not rows:
        return None
    return pd.DataFrame(rows).astype({"low": float, "point": float, "high": float})


def _beat(p_beat: Mapping[str, Any] | None) -> dict[str, float] | None:
    return {str(k): float(v) for k, v in p_beat.items() if v is not None} if p_beat else None


def summary_intervals(
    summary: WalkForwardSummary,
) -> tuple[pd.DataFrame | None, dict[str, float] | None]:
    """The model's bootstrap intervals (``metric, strategy, low, point, high, level``) and
    P(model Sharpe > baseline Sharpe) of a walk-forward summary (None, None without a
    bootstrap)."""
    boot = summary.bootstrap
    if boot is None:
        return None, None
    return _interval_frame(_bootstrap_rows(boot)), _beat(boot.prob_model_sharpe_exceeds)


def split_summary(
    raw: Mapping[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame | None, dict[str, float] | None]:
    """Split a walk-forward summary JSON into (summary, bootstrap intervals, P(beat)).

    Reads the ``bootstrap`` block the walk-forward writer emits (``level`` and
    ``model: {metric: {estimate, low, high}}`` plus ``prob_model_sharpe_exceeds``) and
    also plain ``intervals`` (records with metric, strategy, low, point, high, level)
    and ``p_beat`` (baseline → probability) keys; everything else is the summary.
    """
    summary = dict(raw)
    boot = summary.get("bootstrap")
    rows = list(summary.pop("intervals", None) or [])
    p_beat = summary.pop("p_beat", None)
    if isinstance(boot, Mapping):
        parsed = BootstrapSummary.from_dict(boot)
        rows += _bootstrap_rows(parsed)
        p_beat = p_beat or parsed.prob_model_sharpe_exceeds
    # The paired Sharpe differences stay: build_report_data reads them from here.
    return _reduced(summary), _interval_frame(rows), _beat(p_beat)


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys with scalar leaves: ``strategies.model.sharpe``."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_summary(value, f"{name}."))
        else:
            flat[name] = value
    return flat
