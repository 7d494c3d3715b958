"""``plus-ultra predict``: a trained run + a database → predictions file (+ backtest metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    ConfigOption,
    IncludeInSampleOption,
    SetOption,
    console,
    load,
    out,
    print_sample,
    progress,
    user_errors,
    wrote,
)

# Library modules are imported inside the command so `plus-ultra --help` stays fast.


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _table(metrics: dict[str, object], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, _fmt(value))
    return table


def predict(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="Run folder of `plus-ultra train` (or a .ckpt in it), or of `plus-ultra "
            "rl-finetune` (the policy's positions, plus the critic's value column).",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Predictions file to write: .parquet or .csv.")
    ] = Path("outputs/predictions.parquet"),
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Database to predict on [config: data.sqlite_path]."),
    ] = None,
    symbols: Annotated[
        list[str] | None,
        typer.Option("--symbols", help="Symbols to predict, repeatable; default: the run's."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="First prediction timestamp (ISO-8601).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="Last prediction timestamp (ISO-8601).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda:0, … or auto (a GPU when visible).")
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Windows per forward pass.")
    ] = 1024,
    benchmark: Annotated[
        str | None,
        typer.Option(
            "--benchmark",
            help="Series of the benchmarks table for benchmark_return; default equal_weight.",
        ),
    ] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the backtest metrics.")] = False,
    return_column: Annotated[
        str, typer.Option("--return-column", help="Column of realised returns t → t+1.")
    ] = "realised_return",
    cost_bps: Annotated[
        float | None,
        typer.Option("--cost-bps", min=0, help="Cost per unit |Δposition| [evaluation.cost_bps]."),
    ] = None,
    metrics_output: Annotated[
        Path | None,
        typer.Option("--metrics-output", help="Also write the metrics: .json, .csv or .md."),
    ] = None,
    guardrails: Annotated[
        bool,
        typer.Option(
            "--guardrails",
            help="Apply the guardrails section of the config to the positions (exposure, "
            "turnover, CVaR, drawdown, sector caps); breaches go to <output>_breaches.parquet.",
        ),
    ] = False,
    include_in_sample: IncludeInSampleOption = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Predict with a trained run on a database: one row per (timestamp, symbol) with a
    full window — position, forecast (+ probabilities/quantiles), realised and benchmark
    returns, and the sample of each bar (train, val, test or unseen: the run's splits) —
    then backtest the out-of-sample bars (test and unseen) under the convention and print
    the metrics; --include-in-sample scores every bar.

    The model, features and windows always come from the run's own config.yaml; --config
    (default: that file) and --set supply the database and the evaluation settings.

    Example: plus-ultra predict --checkpoint outputs/run --start 2024-01-01
    --cost-bps 5 -o outputs/predictions.parquet --metrics-output outputs/metrics.md"""
    from ..inference.predict_io import predict_files, run_config_path

    with user_errors():
        cfg = load(config or run_config_path(checkpoint), overrides)
        with progress() as bar:
            task = bar.add_task("predicting", total=None)
            run = predict_files(
                checkpoint,
                output,
                db or cfg.data.sqlite_path,
                cfg.evaluation,
                guardrails=cfg.guardrails if guardrails else None,
                symbols=symbols,
                start=start,
                end=end,
                device=device,
                batch_size=batch_size,
                benchmark=benchmark,
                evaluate=not no_eval,
                cost_bps=cost_bps,
                return_column=return_column,
                include_in_sample=include_in_sample,
                metrics_output=metrics_output,
                on_batch=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if run.breaches is not None:
        counts = f"guardrails: {len(run.breaches)} breaches {run.breach_counts}"
        console.print(counts, highlight=False)
    n_symbols = run.frame["symbol"].nunique()
    done = f"{len(run.frame)} predictions for {n_symbols} symbols on {run.device}"
    console.print(done, highlight=False)
    if run.metrics is not None and run.sample is not None:
        print_sample(run.sample)
        out.print(_table(run.metrics, run.title))
    if run.skipped is not None:
        target = f" to {metrics_output}" if metrics_output is not None else ""
        why = f"no metrics written{target}: {run.skipped}"
        console.print(f"[yellow]warning:[/] {why}", highlight=False)
    for label, path in run.written.items():
        wrote(label, path)
