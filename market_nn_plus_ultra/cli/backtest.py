"""``plus-ultra backtest``: a predictions file → metrics table and metrics JSON (+ stress tests)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    ClipPositionsOption,
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


def _table(metrics: dict[str, float], keys: tuple[str, ...], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        table.add_row(key, _fmt(metrics.get(key, float("nan"))))
    costs = {k: v for k, v in metrics.items() if k.startswith("cost_") and k != "cost_bps"}
    for key, value in costs.items():
        table.add_row(key, _fmt(value))
    return table


def _scenario_table(summary: dict) -> Table:
    percentiles = summary["percentiles"]
    labels = list(next(iter(percentiles.values())))
    table = Table(title=f"Stress scenarios (n={summary['n']})", title_justify="left")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    for metric, row in percentiles.items():
        table.add_row(metric, *(_fmt(row[label]) for label in labels))
    return table


def backtest(
    predictions: Annotated[
        Path,
        typer.Option("--predictions", "-p", help="Predictions file (.parquet or .csv)."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Metrics JSON to write (atomically).")
    ] = Path("outputs/metrics.json"),
    cost_bps: Annotated[
        float | None,
        typer.Option(
            "--cost-bps",
            min=0,
            help="Cost per unit |Δposition| in bps (config: evaluation.cost_bps, or "
            "simulation.cost_bps with --simulator).",
        ),
    ] = None,
    simulator: Annotated[
        bool,
        typer.Option(
            "--simulator/--no-simulator",
            help="Run the execution simulator (spread, impact, fills, latency, funding, "
            "limits) (config: simulation.enabled).",
        ),
    ] = False,
    scenarios: Annotated[
        int | None,
        typer.Option(
            "--scenarios", min=0, help="Stress paths to simulate (config: simulation.scenarios)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of scenarios and latency draws.")
    ] = None,
    return_column: Annotated[
        str, typer.Option("--return-column", help="Column of realised returns t → t+1.")
    ] = "realised_return",
    include_in_sample: IncludeInSampleOption = False,
    clip_positions: ClipPositionsOption = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Backtest a predictions file under the backtest convention (or the execution
    simulator), print the metrics and write them as JSON; with --scenarios N, also stress
    test over N block-bootstrapped / shocked paths and report percentiles.

    Only the bars the model never trained or validated on are scored (the file's sample
    column, written by `plus-ultra predict`); --include-in-sample scores the rest too.

    Example: plus-ultra backtest -p predictions.parquet --simulator --scenarios 1000
    --set simulation.impact_coef=0.1 -o outputs/metrics.json"""
    from ..evaluation.backtest_io import backtest_file
    from ..evaluation.metrics import METRIC_KEYS

    flags: dict[str, object] = {"simulation.scenarios": scenarios, "simulation.seed": seed}
    if simulator:
        flags["simulation.enabled"] = True
    with user_errors():
        cfg = load(config, overrides, **flags)
        with progress() as bar:
            n = cfg.simulation.scenarios
            task = bar.add_task("stress scenarios" if n else "backtest", total=n or None)
            run = backtest_file(
                predictions,
                cfg.evaluation,
                cfg.simulation,
                cost_bps=cost_bps,
                include_in_sample=include_in_sample,
                clip_positions=clip_positions,
                return_column=return_column,
                on_chunk=lambda k: bar.advance(task, k),
            )
        print_sample(run.sample)
        out.print(_table(run.metrics, METRIC_KEYS, run.title))
        if run.stress is not None:
            out.print(_scenario_table(run.stress.summary))
        run.write(output)
    if run.metrics.get("n_periods", 0) == 0:
        console.print(f"[yellow]warning:[/] no bar of {predictions} has a known {return_column}")
    wrote("metrics", output)
