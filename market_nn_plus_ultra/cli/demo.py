"""``plus-ultra demo``: the end-to-end demo that ``make demo`` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..orchestration.demo import DemoResult, build_demo_databases
from ._common import console, out, progress, user_errors, wrote


def _summary_table(result: DemoResult) -> Table:
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


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for every demo output.")
    ] = Path("outputs/demo"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic fixture.")] = 7,
) -> None:
    """Run the demo: build a database from real market data that ships with a PyPI
    package (no network) plus a synthetic fixture with a planted signal, validate both
    strictly, and print a summary.

    Example: plus-ultra demo --output outputs/demo
    """
    steps = ["import", "validate", "fixture", "validate"]
    with user_errors(), progress() as bar:
        task = bar.add_task("demo", total=len(steps))

        def step(label: str) -> None:
            if bar.tasks[task].description != "demo":
                bar.advance(task)
            bar.update(task, description=label)

        result = build_demo_databases(output, seed=seed, step=step)
        bar.update(task, completed=len(steps), description="done")
    out.print(_summary_table(result))
    for db in result.databases:
        out.print(f"  {db.path.name}: {db.description}", highlight=False)
        if not db.validation.passed(strict=True):
            console.print(db.validation.summary(), highlight=False)
    for db in result.databases:
        wrote(db.path.stem, db.path)
    if not result.ok:
        raise typer.Exit(1)
