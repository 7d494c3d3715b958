"""``plus-ultra demo``: the end-to-end demo that ``make demo`` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import console, out, progress, user_errors, wrote


def _databases_table(result) -> Table:
    table = Table(title="Demo databases", title_justify="left")
    for name in ("database", "symbols", "rows", "from", "to", "validation"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    for db in result.databases:
        report = db.validation
        verdict = (
            "[green]passed (strict)[/]"
            if report.passed(strict=True)
            else f"[red]{len(report.errors)} errors, {len(report.warnings)} warnings[/]"
        )
        table.add_row(
            db.path.name,
            ", ".join(db.series["symbol"]),
            f"{db.rows:,}",
            f"{db.series['start'].min():%Y-%m-%d %H:%M}",
            f"{db.series['end'].max():%Y-%m-%d %H:%M}",
            verdict,
        )
    return table


def _results_table(result) -> Table:
    """Out-of-sample walk-forward results: the model beside every baseline."""
    summary = result.walkforward.summary
    boot = summary.bootstrap
    beats = boot.prob_model_sharpe_exceeds if boot is not None else {}
    table = Table(
        title=f"Walk-forward, {summary.n_splits} folds out of sample "
        f"({summary.oos_start:%Y-%m-%d} .. {summary.oos_end:%Y-%m-%d}), "
        f"costs {summary.settings.cost_bps:g} bps",
        title_justify="left",
    )
    for name in ("strategy", "total return", "Sharpe", "max drawdown", "P(model Sharpe >)"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for name, stats in summary.strategies.items():
        m = stats.stitched
        table.add_row(
            name,
            f"{m['total_return']:+.1%}",
            f"{m['sharpe']:.2f}",
            f"{m['max_drawdown']:.1%}",
            "" if name not in beats else f"{beats[name]:.2f}",
        )
    sharpe = boot.model.get("sharpe") if boot is not None else None
    if sharpe is not None:
        table.caption = (
            f"model Sharpe {sharpe.estimate:.2f}, {boot.level:.0%} stationary-bootstrap "
            f"interval [{sharpe.low:.2f}, {sharpe.high:.2f}]"
        )
    return table


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for every demo output.")
    ] = Path("outputs/demo"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fixture and the model.")] = 7,
    max_epochs: Annotated[
        int | None,
        typer.Option("--max-epochs", min=1, help="Training epochs (default: the demo's 4)."),
    ] = None,
) -> None:
    """Run the whole product on real data, on CPU, in a few minutes: build a database from
    S&P 500 and NASDAQ daily bars shipped with a PyPI package (no network) and a
    synthetic fixture, validate both, pretrain a small backbone, train the model, predict
    the held-out years, walk forward against buy-and-hold, momentum, mean reversion,
    ridge and LightGBM baselines with bootstrap intervals, and write report.html and
    report.md.

    Example: plus-ultra demo --output outputs/demo
    """
    from ..orchestration.demo import DEMO_STEPS, run_demo

    with user_errors(), progress() as bar:
        task = bar.add_task("demo", total=len(DEMO_STEPS))

        def step(label: str) -> None:
            bar.update(task, completed=DEMO_STEPS.index(label), description=label)

        result = run_demo(output, seed=seed, max_epochs=max_epochs, step=step)
        bar.update(task, completed=len(DEMO_STEPS), description="done")
    out.print(_databases_table(result))
    for db in result.databases:
        out.print(f"  {db.path.name}: {db.description}", highlight=False)
        if not db.validation.passed(strict=True):
            console.print(db.validation.summary(), highlight=False)
    if not result.ok:
        raise typer.Exit(1)
    if result.train is not None:
        test = result.train.metrics
        out.print(
            f"model: test IC {test.get('test_ic', float('nan')):+.3f}, "
            f"directional accuracy {test.get('test_directional_accuracy', float('nan')):.1%} "
            f"({result.train.epochs} epochs, warm-started from the pretrained backbone)",
            highlight=False,
        )
    if result.walkforward is not None:
        out.print(_results_table(result))
    for label, path in result.artefacts().items():
        wrote(label, path)
