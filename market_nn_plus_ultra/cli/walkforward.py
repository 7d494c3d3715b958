"""``plus-ultra walkforward``: a predictions file → per-fold metrics, summary, baselines beside."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..config import EvaluationConfig, field_help
from ._common import (
    ClipPositionsOption,
    ConfigOption,
    IncludeInSampleOption,
    SetOption,
    console,
    load,
    out,
    progress,
    user_errors,
    wrote,
)

if TYPE_CHECKING:
    from ..evaluation.summary import WalkForwardSummary

__all__ = ["walkforward"]

# (summary key, column header): short headers keep the table within 80 columns.
_COLUMNS = (
    ("sharpe", "Sharpe"),
    ("cagr", "CAGR"),
    ("max_drawdown", "MaxDD"),
    ("turnover", "Turn"),
)


def _help(name: str) -> str:
    return field_help(EvaluationConfig, name)


def _fmt(value: Any, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in ("cagr", "max_drawdown", "hit_rate"):
        return f"{value:.1%}"
    return f"{value:.2f}"


def _names(values: list[str] | None) -> list[str] | None:
    names = [n.strip() for value in values or [] for n in value.split(",") if n.strip()]
    return list(dict.fromkeys(names)) if values is not None else None


def _table(summary: WalkForwardSummary) -> Table:
    settings = summary.settings
    scored = summary.sample.description if summary.sample else None
    table = Table(
        title=f"Walk-forward: {summary.n_splits} folds, train {settings.train_window} / "
        f"test {settings.test_window} bars, costs {settings.cost_bps:g} bps; "
        f"{scored or f'{summary.n_bars} bars'}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("strategy", no_wrap=True)
    table.caption = "Sharpe/fold: mean ± std over folds; P(beat): P(model Sharpe > row's)"
    for _, header in _COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("Sharpe/fold", justify="right", no_wrap=True)
    table.add_column("P(beat)", justify="right", no_wrap=True)
    beat = summary.bootstrap.prob_model_sharpe_exceeds if summary.bootstrap else {}
    for name, stats in summary.strategies.items():
        spread = f"{_fmt(stats.split_mean.get('sharpe'))} ± {_fmt(stats.split_std.get('sharpe'))}"
        table.add_row(
            f"[bold]{name}[/]" if name == "model" else name,
            *[_fmt(stats.stitched.get(k), k) for k, _ in _COLUMNS],
            spread,
            _fmt(beat.get(name)) if name != "model" else "",
        )
    return table


def _difference_table(summary: WalkForwardSummary) -> Table | None:
    """Model minus each baseline: Sharpe difference, paired interval, Holm p-values."""
    boot = summary.bootstrap
    if boot is None or not boot.sharpe_difference:
        return None
    table = Table(
        title=f"Model − baseline Sharpe, paired stationary bootstrap ({boot.level:.0%}), "
        f"p adjusted for {len(boot.sharpe_difference)} baselines (Holm)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.caption = "*: the difference is significant after the adjustment"
    for header in ("baseline", "ΔSharpe", "interval", "p", "p(Holm)"):
        table.add_column(header, justify="left" if header == "baseline" else "right")
    for name, d in boot.sharpe_difference.items():
        table.add_row(
            name,
            _fmt(d.estimate),
            f"[{_fmt(d.low)}, {_fmt(d.high)}]",
            _fmt(d.p_value),
            _fmt(d.p_adjusted) + ("*" if d.significant else ""),
        )
    return table


def _print(summary: WalkForwardSummary) -> None:
    """The scored sample, the strategies side by side, the paired tests and the notes."""
    if summary.sample is not None:
        out.print(f"scored: {summary.sample.description}", highlight=False)
        if summary.sample.notice:
            console.print(f"[yellow]notice:[/] {summary.sample.notice}", highlight=False)
    out.print(_table(summary))
    differences = _difference_table(summary)
    if differences is not None:
        out.print(differences)
    boot = summary.bootstrap
    sharpe = boot.model.get("sharpe") if boot is not None else None
    if sharpe is not None:
        out.print(
            f"model Sharpe {_fmt(sharpe.estimate)}, {boot.level:.0%} interval "
            f"[{_fmt(sharpe.low)}, {_fmt(sharpe.high)}] (stationary bootstrap, "
            f"{boot.reps} resamples, mean block {boot.block_length:.1f} bars)",
            highlight=False,
        )
    for name, reason in summary.skipped_baselines.items():
        console.print(f"[yellow]skipped[/] baseline {name}: {reason}", highlight=False)
    for rule, count in (summary.guardrail_breaches or {}).items():
        console.print(f"guardrail {rule}: {count} positions changed", highlight=False)


def walkforward(
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            "-p",
            help="Predictions file (.parquet or .csv); not with --retrain.",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="SQLite database with the symbols' OHLCV bars; needed by the ridge and "
            "lightgbm baselines (without it they are skipped).",
        ),
    ] = None,
    train_window: Annotated[
        int | None, typer.Option("--train-window", help=_help("train_window"))
    ] = None,
    test_window: Annotated[
        int | None, typer.Option("--test-window", help=_help("test_window"))
    ] = None,
    step: Annotated[int | None, typer.Option("--step", help=_help("step"))] = None,
    embargo: Annotated[int | None, typer.Option("--embargo", help=_help("embargo"))] = None,
    cost_bps: Annotated[float | None, typer.Option("--cost-bps", help=_help("cost_bps"))] = None,
    baselines: Annotated[
        list[str] | None,
        typer.Option("--baselines", help=_help("baselines") + " Comma-separated or repeated."),
    ] = None,
    regime_column: Annotated[
        str | None, typer.Option("--regime-column", help=_help("regime_column"))
    ] = None,
    bootstrap: Annotated[
        bool,
        typer.Option(
            "--bootstrap/--no-bootstrap",
            help="Add stationary-bootstrap intervals and P(model Sharpe > baseline).",
        ),
    ] = True,
    metrics_output: Annotated[
        Path, typer.Option("--metrics-output", help="Per-fold metrics Parquet (atomic).")
    ] = Path("outputs/walkforward/per_split.parquet"),
    summary_output: Annotated[
        Path, typer.Option("--summary-output", help="Summary JSON (atomic).")
    ] = Path("outputs/walkforward/summary.json"),
    regimes_output: Annotated[
        Path | None,
        typer.Option("--regimes-output", help="Per-regime metrics Parquet (when labelled)."),
    ] = None,
    guardrails: Annotated[
        bool,
        typer.Option(
            "--guardrails/--no-guardrails",
            help="Apply the config's guardrails section to the model's positions first.",
        ),
    ] = False,
    breaches_output: Annotated[
        Path | None,
        typer.Option("--breaches-output", help="Guardrail breaches Parquet (with --guardrails)."),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Train a fresh model per fold (the --config's model and training) on the "
            "fold's past only, predict its test bars, and score those predictions.",
        ),
    ] = False,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", help="With --retrain: one resumable run folder per fold (fold_k/)."
        ),
    ] = Path("outputs/walkforward"),
    include_in_sample: IncludeInSampleOption = False,
    clip_positions: ClipPositionsOption = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Walk-forward backtest of a predictions file with baselines on the same folds and costs.

    Cuts the predictions' bars into purged folds (train window, embargo, test window),
    scores the model's positions and every baseline on each test window, and prints the
    stitched out-of-sample metrics side by side. The model's positions are read from the
    file as they are; the ridge and lightgbm baselines are refitted on every fold's
    training bars. Only bars the model never trained or validated on are tested (the
    file's sample column, written by `plus-ultra predict`): the first fold's test window
    starts at the first out-of-sample bar, and earlier bars only train the baselines.
    --include-in-sample tests every bar, and the outputs then say so.

    With --retrain, a fresh model is trained per fold on that fold's past only (purged by
    the window, horizon and embargo), predicts the fold's test bars, and the stitched
    predictions are scored the same way; finished folds are skipped on a re-run.

    Example: plus-ultra walkforward --predictions predictions.parquet --db market.db
    --train-window 252 --test-window 63 --cost-bps 5

    Example: plus-ultra walkforward --retrain --config configs/default_desktop.yaml
    --train-window 504 --test-window 63 --output-dir outputs/walkforward
    """
    from ..orchestration.walkforward_run import WalkForwardOutputs, run_walkforward

    with user_errors():
        cfg = load(
            config,
            overrides,
            **{
                "data.sqlite_path": db,
                "evaluation.train_window": train_window,
                "evaluation.test_window": test_window,
                "evaluation.step": step,
                "evaluation.embargo": embargo,
                "evaluation.cost_bps": cost_bps,
                "evaluation.baselines": _names(baselines),
                "evaluation.regime_column": regime_column,
            },
        )
        with progress() as bar:
            task = bar.add_task(
                "walk-forward folds" if retrain else "reading predictions", total=None
            )
            run = run_walkforward(
                cfg,
                predictions=predictions,
                retrain=retrain,
                output_dir=output_dir,
                outputs=WalkForwardOutputs(
                    metrics_output, summary_output, regimes_output, breaches_output
                ),
                read_bars=db is not None,
                bootstrap=bootstrap,
                guardrails=guardrails,
                include_in_sample=include_in_sample,
                clip_positions=clip_positions,
                on_fold=lambda done, total, message: bar.update(
                    task, completed=done, total=total or None, description=message
                ),
                on_step=lambda message: bar.update(task, description=message),
            )
    _print(run.result.summary)
    for label, path in run.paths.items():
        wrote(label, path)
