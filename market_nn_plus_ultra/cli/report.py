"""``plus-ultra report``: predictions (+ walk-forward results) → HTML and Markdown reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    ConfigOption,
    IncludeInSampleOption,
    SetOption,
    console,
    load,
    user_errors,
    wrote,
)

# Library modules are imported inside the command so `plus-ultra --help` stays fast.


def report(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions", "-p", help="Predictions file (.parquet or .csv), one row per bar."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="HTML report path; the .md and <stem>_files/ go beside it."
        ),
    ] = Path("reports/latest.html"),
    walkforward: Annotated[
        Path | None,
        typer.Option("--walkforward", help="Walk-forward per-split table (.parquet or .csv)."),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            help="Walk-forward summary JSON (its bootstrap block gives the intervals).",
        ),
    ] = None,
    benchmark_column: Annotated[
        str,
        typer.Option("--benchmark-column", help="Predictions column with the benchmark return."),
    ] = "benchmark_return",
    regime_column: Annotated[
        str | None,
        typer.Option("--regime-column", help="Predictions column with a regime label per bar."),
    ] = None,
    cost_bps: Annotated[
        float | None,
        typer.Option(
            "--cost-bps",
            min=0,
            help="Cost per unit traded, bps (default: the summary's, else evaluation.cost_bps).",
        ),
    ] = None,
    rolling_window: Annotated[
        int | None,
        typer.Option("--rolling-window", min=2, help="Rolling Sharpe window in bars."),
    ] = None,
    log_scale: Annotated[
        bool, typer.Option("--log-scale", help="Start the equity chart on a log axis.")
    ] = False,
    include_in_sample: IncludeInSampleOption = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Write a report a portfolio manager can read: headline metrics against baselines and
    the benchmark (costs stated), equity, drawdown, rolling Sharpe, monthly returns,
    return distribution, regimes, trades, guardrails, walk-forward splits, provenance and
    the run config. Writes OUTPUT (.html, self-contained) and the .md beside it.

    Every number comes from the walk-forward's out-of-sample test bars (the summary's
    sample); --include-in-sample also scores bars the model trained or was validated on,
    and the report's title then says so.

    Example: plus-ultra report -p outputs/predictions.parquet -o reports/latest.html"""
    from ..config import config_to_dict
    from ..evaluation.report import write_report
    from ..evaluation.report_files import report_data_from_files

    with user_errors():
        cfg = load(config, overrides)
        data = report_data_from_files(
            predictions,
            evaluation=cfg.evaluation,
            data=cfg.data,
            guardrails=cfg.guardrails,
            walkforward=walkforward,
            summary=summary,
            cost_bps=cost_bps,
            benchmark_column=benchmark_column,
            regime_column=regime_column,
            seed=cfg.seed,
            config=config_to_dict(cfg),
            include_in_sample=include_in_sample,
        )
        sample = data.sample.describe() if data.sample else "the predictions"
        console.print(f"reporting {sample} at {data.cost_bps:g} bps", highlight=False)
        for name, why in data.missing_series.items():
            console.print(f"[yellow]not in the charts[/] {name}: {why}", highlight=False)
        paths = write_report(data, output, rolling_window=rolling_window, log_scale=log_scale)
    wrote("HTML report", paths.html)
    wrote("Markdown report", paths.markdown)
    wrote("charts", paths.images)
