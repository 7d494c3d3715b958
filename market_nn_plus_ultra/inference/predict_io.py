"""A trained run + a database → the predictions file (+ breaches, + backtest metrics).

:func:`predict_files` is what ``plus-ultra predict`` runs: restore the run
(:meth:`Agent.from_checkpoint`), predict every (timestamp, symbol) with a full window,
apply the guardrails when asked, backtest the out-of-sample bars under the convention, and
write each output atomically through :mod:`market_nn_plus_ultra._io`:

- the predictions: ``.parquet`` (keeps the split bounds in its metadata) or ``.csv``;
- the guardrail breaches: ``<output stem>_breaches.parquet`` beside the predictions;
- the metrics: ``.json`` (strict: NaN → null), ``.csv`` (``metric,value``; NaN → empty)
  or ``.md`` (a ``| metric | value |`` table, values to 4 significant digits).

It returns a frozen :class:`PredictionRun` the caller reads by attribute.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_path, atomic_write, json_ready, write_json
from ..config import EvaluationConfig, GuardrailsConfig
from ..evaluation.backtest import backtest
from ..evaluation.metrics import METRIC_KEYS
from ..evaluation.sample import ScoredSample, has_out_of_sample, select_sample
from .agent import Agent, _find_checkpoint, _read_run_file

__all__ = [
    "METRIC_SUFFIXES",
    "PREDICTION_SUFFIXES",
    "PredictionRun",
    "predict_files",
    "run_config_path",
    "write_metrics",
]

PREDICTION_SUFFIXES = (".parquet", ".pq", ".csv")
METRIC_SUFFIXES = (".json", ".csv", ".md")


@dataclass(frozen=True)
class PredictionRun:
    """What one ``predict`` produced.

    ``frame``: the predictions (one row per (timestamp, symbol)); ``device``: where the
    model ran; ``breaches``: guardrail breaches (``None`` without guardrails);
    ``metrics``: the backtest metrics of the scored bars (``METRIC_KEYS`` first, then
    ``cost_*``, then ``sample``: the scored bars in words), ``None`` when not scored;
    ``sample``/``cost_bps``: what was scored and at what cost; ``skipped``: why no
    metrics were computed when they were wanted; ``written``: ``{what: path}`` in order.
    """

    frame: pd.DataFrame
    device: str
    breaches: pd.DataFrame | None = None
    metrics: dict[str, Any] | None = None
    sample: ScoredSample | None = None
    cost_bps: float | None = None
    skipped: str | None = None
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """What the metrics are, for a table title."""
        label = self.sample.label if self.sample is not None else "not scored"
        return f"Backtest (convention, {self.cost_bps or 0:g} bps; {label})"

    @property
    def breach_counts(self) -> dict[str, int]:
        """Breaches per guardrail rule (empty without guardrails)."""
        if self.breaches is None:
            return {}
        return {str(k): int(v) for k, v in self.breaches.groupby("rule").size().items()}


def _check_suffix(path: Path, allowed: tuple[str, ...], option: str) -> None:
    if path.suffix.lower() not in allowed:
        raise ValueError(
            f"{option} {path}: unsupported extension {path.suffix!r}; use one of {allowed}"
        )


def run_config_path(checkpoint: str | Path) -> Path:
    """The ``config.yaml`` of the run that ``checkpoint`` (a run folder or a .ckpt) is in.

    Raises :class:`~market_nn_plus_ultra.training.CheckpointError` when the checkpoint or
    the run's config.yaml does not exist (the message says to copy the whole run folder).
    """
    ckpt, run = _find_checkpoint(Path(checkpoint))
    return _read_run_file(run, "config.yaml", ckpt)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write ``{metric: value}`` as .json, .csv or .md (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    _check_suffix(path, METRIC_SUFFIXES, "--metrics-output")
    if suffix == ".json":
        return write_json(path, metrics)
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["metric", "value"])
        writer.writerows([k, "" if json_ready(v) is None else v] for k, v in metrics.items())
        return atomic_write(path, buffer.getvalue())
    rows = [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    return atomic_write(path, "\n".join(["| metric | value |", "|---|---:|", *rows]) + "\n")


def _write_frame(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def _score(
    frame: pd.DataFrame, cost_bps: float, include_in_sample: bool, return_column: str
) -> tuple[dict[str, Any], ScoredSample]:
    scored, sample = select_sample(frame, include_in_sample=include_in_sample)
    result = backtest(scored, cost_bps=cost_bps, return_column=return_column)
    metrics: dict[str, Any] = {k: result.metrics[k] for k in METRIC_KEYS if k in result.metrics}
    metrics.update({k: v for k, v in result.metrics.items() if k not in metrics})
    metrics["sample"] = sample.describe()
    return metrics, sample


def _why_not_scored(evaluate: bool, known: bool, return_column: str) -> str:
    if not evaluate:
        return "--no-eval"
    if not known:
        return f"no known {return_column} in the predictions"
    return (
        "every predicted bar is one the run trained or validated on (train/val) — "
        "predict later bars, or pass --include-in-sample to score them anyway"
    )


def predict_files(
    checkpoint: str | Path,
    output: str | Path,
    db: str | Path,
    evaluation: EvaluationConfig,
    *,
    guardrails: GuardrailsConfig | None = None,
    symbols: Sequence[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    device: str = "auto",
    batch_size: int = 1024,
    benchmark: str | None = None,
    evaluate: bool = True,
    cost_bps: float | None = None,
    return_column: str = "realised_return",
    include_in_sample: bool = False,
    metrics_output: str | Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> PredictionRun:
    """Predict with the run at ``checkpoint`` on ``db`` and write the outputs.

    ``output``: the predictions file (.parquet/.pq or .csv); ``metrics_output``: also
    write the metrics (.json, .csv or .md). The out-of-sample bars (``test``/``unseen``;
    every bar with ``include_in_sample``) are backtested under the convention at
    ``cost_bps`` (default ``evaluation.cost_bps``) when ``evaluate`` and the realised
    returns are known; otherwise :attr:`PredictionRun.skipped` says why and no metrics
    file is written. Both suffixes are checked before the model is loaded.
    """
    output = Path(output)
    _check_suffix(output, PREDICTION_SUFFIXES, "--output")
    if metrics_output is not None:
        _check_suffix(Path(metrics_output), METRIC_SUFFIXES, "--metrics-output")
    agent = Agent.from_checkpoint(checkpoint, device=device)
    frame = agent.predict(
        db,
        symbols=symbols,
        start=start,
        end=end,
        batch_size=batch_size,
        benchmark=benchmark,
        on_batch=on_batch,
        guardrails=guardrails,
    )
    written = {"predictions": _write_frame(frame, output)}
    if agent.breaches is not None:
        breaches_path = output.with_name(f"{output.stem}_breaches.parquet")
        written["guardrail breaches"] = _write_frame(agent.breaches, breaches_path)
    known = return_column in frame.columns and bool(frame[return_column].notna().any())
    scorable = include_in_sample or has_out_of_sample(frame)
    metrics = sample = cost = skipped = None
    if evaluate and known and scorable:
        cost = evaluation.cost_bps if cost_bps is None else cost_bps
        metrics, sample = _score(frame, cost, include_in_sample, return_column)
        if metrics_output is not None:
            written["metrics"] = write_metrics(metrics, metrics_output)
    elif evaluate or metrics_output is not None:
        skipped = _why_not_scored(evaluate, known, return_column)
    return PredictionRun(
        frame=frame,
        device=str(agent.device),
        breaches=agent.breaches,
        metrics=metrics,
        sample=sample,
        cost_bps=cost,
        skipped=skipped,
        written=written,
    )
