"""``plus-ultra predict``: a trained run + a database → predictions file (+ backtest metrics)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .._io import atomic_path
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

if TYPE_CHECKING:
    import pandas as pd

# Library modules are imported inside the command so `plus-ultra --help` stays fast.

_PREDICTION_SUFFIXES = (".parquet", ".pq", ".csv")
_METRIC_SUFFIXES = (".json", ".csv", ".md")


def _atomic(path: Path, write) -> None:
    """Write through a temporary file beside ``path``, then rename: never half a file."""
    with atomic_path(path) as tmp:
        write(tmp)


def _check_suffix(path: Path, allowed: tuple[str, ...], option: str) -> None:
    if path.suffix.lower() not in allowed:
        raise ValueError(
            f"{option} {path}: unsupported extension {path.suffix!r}; use one of {allowed}"
        )


def _write_predictions(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() == ".csv":
        _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _plain(value: object) -> object:
    """JSON has no NaN/inf: undefined metrics (e.g. Sharpe of a flat run) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_metrics(metrics: dict[str, object], path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2, allow_nan=False)
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["metric", "value"])
        writer.writerows([k, "" if _plain(v) is None else v] for k, v in metrics.items())
        text = buffer.getvalue()
    else:
        rows = [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        text = "\n".join(["| metric | value |", "|---|---:|", *rows])
    _atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


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
        typer.Option("--checkpoint", help="Run folder of `plus-ultra train` or a .ckpt in it."),
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
    from ..evaluation.backtest import backtest
    from ..evaluation.metrics import METRIC_KEYS
    from ..evaluation.sample import has_out_of_sample, select_sample
    from ..inference import Agent

    with user_errors():
        _check_suffix(output, _PREDICTION_SUFFIXES, "--output")
        if metrics_output is not None:
            _check_suffix(metrics_output, _METRIC_SUFFIXES, "--metrics-output")
        agent = Agent.from_checkpoint(checkpoint, device=device)
        folders = (agent.checkpoint.parent, agent.checkpoint.parent.parent)
        run_config = next(f / "config.yaml" for f in folders if (f / "config.yaml").exists())
        cfg = load(config or run_config, overrides)
        source = db or cfg.data.sqlite_path
        with progress() as bar:
            task = bar.add_task("predicting", total=None)
            frame = agent.predict(
                source,
                symbols=symbols,
                start=start,
                end=end,
                batch_size=batch_size,
                benchmark=benchmark,
                on_batch=lambda done, total: bar.update(task, completed=done, total=total),
                guardrails=cfg.guardrails if guardrails else None,
            )
        _write_predictions(frame, output)
        breaches_path = None
        if agent.breaches is not None:
            console.print(
                f"guardrails: {len(agent.breaches)} breaches "
                + str(agent.breaches.groupby("rule").size().to_dict()),
                highlight=False,
            )
            breaches_path = output.with_name(f"{output.stem}_breaches.parquet")
            _atomic(breaches_path, lambda tmp: agent.breaches.to_parquet(tmp, index=False))
        console.print(
            f"{len(frame)} predictions for {frame['symbol'].nunique()} symbols on {agent.device}",
            highlight=False,
        )
        known = return_column in frame.columns and frame[return_column].notna().any()
        scorable = include_in_sample or has_out_of_sample(frame)
        if not no_eval and known and scorable:
            cost = cfg.evaluation.cost_bps if cost_bps is None else cost_bps
            scored, sample = select_sample(frame, include_in_sample=include_in_sample)
            print_sample(sample)
            result = backtest(scored, cost_bps=cost, return_column=return_column)
            metrics: dict[str, object] = {
                k: result.metrics[k] for k in METRIC_KEYS if k in result.metrics
            }
            metrics.update({k: v for k, v in result.metrics.items() if k not in metrics})
            metrics["sample"] = sample.describe()
            out.print(_table(metrics, f"Backtest (convention, {cost:g} bps; {sample.label})"))
            if metrics_output is not None:
                _write_metrics(metrics, metrics_output)
        elif not no_eval or metrics_output is not None:
            if no_eval:
                why = "--no-eval"
            elif not known:
                why = f"no known {return_column} in the predictions"
            else:
                why = (
                    "every predicted bar is one the run trained or validated on (train/val) — "
                    "predict later bars, or pass --include-in-sample to score them anyway"
                )
            target = f" to {metrics_output}" if metrics_output is not None else ""
            console.print(f"[yellow]warning:[/] no metrics written{target}: {why}", highlight=False)
            metrics_output = None
    wrote("predictions", output)
    if breaches_path is not None:
        wrote("guardrail breaches", breaches_path)
    if metrics_output is not None:
        wrote("metrics", metrics_output)
