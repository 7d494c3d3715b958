"""Reports a portfolio manager can read: the inputs as plain data, and the writer.

:func:`build_report_data` computes everything a predictions frame alone gives (the
model's backtest, the benchmark from ``benchmark_return``, a buy-and-hold baseline of the
same symbols when no baselines are passed) and carries whatever else the caller has —
baselines, walk-forward splits, bootstrap intervals, guardrail breaches, regimes,
provenance, the resolved config. :func:`write_report` renders one self-contained HTML
file (plotly inlined, works offline) and a Markdown file with PNG charts beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_dir, atomic_write
from .backtest import BacktestResult, backtest, require_columns
from .metrics import compute_metrics
from .report_sample import (
    ReportSample,
    check_summary_cost,
    sample_from_predictions,
    sample_from_summary,
    splits_from_per_split,
    summary_headline,
    summary_regimes,
    test_rows,
)
from .report_summary import (
    as_summary,
    flatten_summary,
    listed_values,
    split_summary,
    summary_intervals,
    summary_view,
)
from .summary import SharpeDifference, WalkForwardSummary

__all__ = [
    "BENCHMARK_NAME",
    "MODEL_NAME",
    "ReportData",
    "ReportPaths",
    "ReportSample",
    "build_report_data",
    "flatten_summary",
    "split_summary",
    "summary_intervals",
    "summary_view",
    "write_report",
]

MODEL_NAME = "model"
BENCHMARK_NAME = "benchmark"
_INTERVAL_COLUMNS = ["metric", "strategy", "low", "point", "high", "level"]
_BREACH_COLUMNS = ["timestamp", "symbol", "rule", "before", "after", "detail"]


@dataclass
class ReportData:
    """Everything a report shows, as plain data (no rendering state).

    ``benchmark``: per-timestamp simple return of the benchmark over (t, t+1], aligned
    to ``model.returns``. ``walkforward``: one row per split. ``intervals``: columns
    ``metric, strategy, low, point, high, level`` (bootstrap). ``p_beat``: baseline name
    → P(model Sharpe > baseline Sharpe). ``breaches``: columns ``timestamp, symbol,
    rule, before, after, detail``. ``regimes``: a label per timestamp. ``positions``:
    the model's ``timestamp, symbol, position`` rows (for trade analytics).

    ``summary``: the walk-forward summary, typed, when one was given;
    ``walkforward_summary``: the values the report lists under "Walk-forward summary"
    (:func:`summary_view`). ``sample``: the bars every number covers. ``headline``:
    strategy → the walk-forward's stitched metrics (same bars as the intervals), when a
    summary was given. ``sharpe_difference``: baseline → the paired bootstrap's
    :class:`~.summary.SharpeDifference` of model minus baseline Sharpe.
    ``regime_metrics``: columns ``labeller, regime, strategy`` and metric keys;
    ``regime_note``: why there are no regime labels. ``missing_series``: strategy →
    why it is in the headline but not in the charts. ``warnings``: sentences the
    headline must carry (e.g. a summary that the predictions do not reproduce).
    """

    model: BacktestResult
    baselines: dict[str, BacktestResult] = field(default_factory=dict)
    benchmark: pd.Series | None = None
    walkforward: pd.DataFrame | None = None
    walkforward_summary: dict[str, Any] | None = None
    intervals: pd.DataFrame | None = None
    p_beat: dict[str, float] | None = None
    breaches: pd.DataFrame | None = None
    regimes: pd.Series | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    positions: pd.DataFrame | None = None
    cost_bps: float = 0.0
    periods_per_year: float = 252.0
    title: str = "Market NN Plus Ultra — backtest report"
    sample: ReportSample | None = None
    headline: dict[str, dict[str, float]] | None = None
    sharpe_difference: dict[str, SharpeDifference] | None = None
    regime_metrics: pd.DataFrame | None = None
    regime_note: str | None = None
    missing_series: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: WalkForwardSummary | None = None

    def strategies(self) -> dict[str, pd.Series]:
        """Net returns per strategy (model first, then baselines, then the benchmark)."""
        out = {MODEL_NAME: self.model.returns.dropna()}
        out.update({name: result.returns.dropna() for name, result in self.baselines.items()})
        if self.benchmark is not None:
            out[BENCHMARK_NAME] = self.benchmark.dropna()
        return out

    def metrics(self) -> dict[str, dict[str, float]]:
        """The metrics JSON per strategy (the benchmark's is gross, with no turnover).

        With a walk-forward summary, its stitched metrics of every strategy it ran come
        first (the bars its intervals were drawn from); baselines it did not run follow.
        """
        out = dict(self.headline) if self.headline else {MODEL_NAME: self.model.metrics}
        out.update({name: r.metrics for name, r in self.baselines.items() if name not in out})
        if self.benchmark is not None:
            bench = self.benchmark.dropna()
            out[BENCHMARK_NAME] = compute_metrics(
                bench.to_numpy(), periods_per_year=self.periods_per_year
            )
        return out


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the report."""

    html: Path
    markdown: Path
    images: Path


def _long(predictions: pd.DataFrame) -> pd.DataFrame:
    if isinstance(predictions.index, pd.MultiIndex):
        predictions = predictions.reset_index()
    require_columns(predictions, ["timestamp", "symbol", "position", "realised_return"])
    if predictions.empty:
        raise ValueError("predictions: the frame has no rows — nothing to report on.")
    frame = predictions.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def _benchmark(frame: pd.DataFrame, column: str, index: pd.Index) -> pd.Series | None:
    if column not in frame.columns:
        return None
    per_t = frame.groupby("timestamp")[column].mean()
    bench = per_t.reindex(index)
    bench.name = BENCHMARK_NAME
    return bench if bench.notna().any() else None


def _buy_and_hold(frame: pd.DataFrame, cost_bps: float, ppy: float) -> BacktestResult:
    """Long 1.0 in every symbol of the predictions, equal capital, paying entry costs."""
    held = frame[["timestamp", "symbol", "realised_return"]].assign(position=1.0)
    return backtest(held, cost_bps=cost_bps, benchmark_column=None, periods_per_year=ppy)


def _frame_or_none(
    value: pd.DataFrame | None, columns: list[str], what: str
) -> pd.DataFrame | None:
    if value is None:
        return None
    require_columns(value, columns, what=what)
    return value.reset_index(drop=True)


def _regime_series(regimes: pd.Series | None, index: pd.Index) -> pd.Series | None:
    if regimes is None:
        return None
    labels = regimes.copy()
    labels.index = pd.to_datetime(labels.index, utc=True)
    labels = labels[~labels.index.duplicated(keep="first")].reindex(index)
    if labels.isna().all():
        raise ValueError(
            "regimes: no label matches a prediction timestamp — pass a Series indexed by "
            "the predictions' timestamps (UTC) with one regime label per bar."
        )
    return labels.rename("regime")


def build_report_data(
    predictions: pd.DataFrame,
    *,
    cost_bps: float,
    baselines: Mapping[str, BacktestResult] | None = None,
    walkforward: pd.DataFrame | None = None,
    walkforward_summary: WalkForwardSummary | Mapping[str, Any] | None = None,
    intervals: pd.DataFrame | None = None,
    p_beat: Mapping[str, float] | None = None,
    breaches: pd.DataFrame | None = None,
    regimes: pd.Series | None = None,
    provenance: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    benchmark_column: str = "benchmark_return",
    periods_per_year: float | None = None,
    regime_metrics: pd.DataFrame | None = None,
    regime_note: str | None = None,
    missing_series: Mapping[str, str] | None = None,
    scored_sample: Mapping[str, Any] | None = None,
) -> ReportData:
    """Backtest the predictions and gather every section's inputs.

    ``predictions``: one row per (timestamp, symbol) with ``position`` and
    ``realised_return`` (DESIGN.md "Predictions file"). ``cost_bps``: cost per unit of
    position traded, in basis points, applied to the model and the inline baseline.
    Without ``baselines`` a buy-and-hold of the same symbols is computed here, so a
    report never shows the model alone.

    With a ``walkforward_summary`` (a :class:`~.summary.WalkForwardSummary`, or its
    ``summary.json`` mapping) that holds stitched metrics, every number comes from the walk-forward's test bars:
    the predictions are cut to the folds' test windows (``walkforward``'s
    ``test_start``/``test_end``, else ``oos_start .. oos_end``), the headline shows the
    summary's stitched metrics of every strategy it ran with the bootstrap intervals of
    the same bars, and ``cost_bps`` must equal the summary's. ``baselines`` should then
    be the walk-forward's per-bar backtests (see
    :func:`~.report_sample.walkforward_backtests`); a strategy of the summary without
    one is named in ``missing_series`` (with why) instead of the charts.
    ``scored_sample``: which rows of the file were kept (``scored``, ``start``, ``end``,
    ``n_bars``, ``n_left_out``, ``notice``, as the summary's ``sample`` block), for a
    report without a summary.
    """
    frame = _long(predictions)
    summary = as_summary(walkforward_summary)
    walked = sample_from_summary(summary) is not None
    if walked:
        check_summary_cost(summary, cost_bps)
        frame = test_rows(frame, splits_from_per_split(walkforward), summary)
    model = backtest(
        frame,
        cost_bps=cost_bps,
        benchmark_column=benchmark_column if benchmark_column in frame.columns else None,
        periods_per_year=periods_per_year,
    )
    ppy = float(model.metrics["periods_per_year"])
    valid_index = model.returns.dropna().index
    if baselines:
        chosen = dict(baselines)
    elif walked:
        chosen = {}
    else:
        chosen = {"buy_and_hold": _buy_and_hold(frame, cost_bps, ppy)}
    if MODEL_NAME in chosen or BENCHMARK_NAME in chosen:
        raise ValueError(
            f"baselines: the names {MODEL_NAME!r} and {BENCHMARK_NAME!r} are reserved for "
            "the model and the benchmark — rename that baseline."
        )
    info: dict[str, Any] = {
        "predictions": {
            "rows": len(frame),
            "symbols": int(frame["symbol"].nunique()),
            "first bar": frame["timestamp"].min(),
            "last bar": frame["timestamp"].max(),
            "periods with a realised return": len(valid_index),
            "periods per year": round(ppy, 2),
        }
    }
    info.update(dict(provenance or {}))
    headline, warnings, sample = (
        None,
        [],
        sample_from_predictions(frame, valid_index, scored_sample),
    )
    missing = dict(missing_series or {})
    if walked:
        headline, warnings = summary_headline(summary, model, chosen)
        sample = sample_from_summary(summary, valid_index)
        for name in headline:
            if name != MODEL_NAME and name not in chosen:
                missing.setdefault(name, "no per-bar returns were passed to the report")
    boot = summary.bootstrap if summary is not None else None
    difference = dict(boot.sharpe_difference) if boot is not None else {}
    if regime_metrics is None and walked:
        regime_metrics = summary_regimes(summary)
    return ReportData(
        model=model,
        baselines=chosen,
        benchmark=_benchmark(frame, benchmark_column, valid_index),
        walkforward=None if walkforward is None else walkforward.reset_index(drop=True),
        walkforward_summary=listed_values(walkforward_summary),
        intervals=_frame_or_none(intervals, _INTERVAL_COLUMNS, "intervals"),
        p_beat=None if p_beat is None else {k: float(v) for k, v in p_beat.items()},
        breaches=_frame_or_none(breaches, _BREACH_COLUMNS, "breaches"),
        regimes=_regime_series(regimes, valid_index),
        provenance=info,
        config=dict(config or {}),
        positions=frame[["timestamp", "symbol", "position"]].reset_index(drop=True),
        cost_bps=float(cost_bps),
        periods_per_year=ppy,
        title=ReportData.title + sample.title_suffix(),
        sample=sample,
        headline=headline,
        sharpe_difference=difference or None,
        regime_metrics=None if regime_metrics is None else regime_metrics.reset_index(drop=True),
        regime_note=regime_note,
        missing_series=missing,
        warnings=warnings,
        summary=summary,
    )


def write_report(
    data: ReportData,
    output: str | Path,
    *,
    rolling_window: int | None = None,
    log_scale: bool = False,
) -> ReportPaths:
    """Write ``output`` (.html), the ``.md`` beside it and ``<stem>_files/*.png``.

    The images are rendered into a temporary folder next to ``output`` and swapped in
    whole, then each file is written atomically (``atomic_write``: temporary file,
    fsync, rename), so a failed run never leaves a half-written file.
    ``rolling_window``: bars in the rolling Sharpe (default: about 3 months of bars).
    ``log_scale``: start the equity chart on a log axis (the HTML can toggle it).
    """
    from .report_html import render_html
    from .report_markdown import render_markdown

    html_path = Path(output)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(
            f"report output {html_path}: expected a .html path such as reports/latest.html "
            "(the Markdown report is written beside it)."
        )
    folder = html_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    md_path = html_path.with_suffix(".md")
    images = folder / f"{html_path.stem}_files"
    # The PNG folder is staged under a temporary name and swapped in whole; the Markdown
    # links name the folder, so they are pointed at its final name before writing.
    with atomic_dir(images) as staged:
        markdown = render_markdown(data, staged, rolling_window=rolling_window, log_scale=log_scale)
        markdown = markdown.replace(f"]({staged.name}/", f"]({images.name}/")
        html = render_html(data, rolling_window=rolling_window, log_scale=log_scale)
    atomic_write(md_path, markdown)
    atomic_write(html_path, html)
    return ReportPaths(html=html_path, markdown=md_path, images=images)
