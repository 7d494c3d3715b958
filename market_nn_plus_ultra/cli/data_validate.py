"""``plus-ultra data validate``: check a SQLite database and print what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import out, user_errors
from .data import app

if TYPE_CHECKING:
    from ..data.validation import ValidationReport

_STYLE = {"error": "bold red", "warning": "yellow"}


def _table(report: ValidationReport) -> Table:
    frame = report.to_frame()
    table = Table(title="Validation failures", show_lines=True, title_justify="left")
    table.add_column("severity", overflow="fold")
    # Names are what users grep for: never folded or cut, the fix column wraps instead.
    for name in ("table", "column", "check"):
        table.add_column(name, no_wrap=True, min_width=int(frame[name].str.len().max()))
    table.add_column("rows", justify="right")
    table.add_column("first offending keys", overflow="fold")
    table.add_column("suggested fix", overflow="fold", ratio=1)
    for _, row in frame.iterrows():
        table.add_row(
            f"[{_STYLE[row['severity']]}]{row['severity']}[/]",
            row["table"],
            row["column"],
            row["check"],
            f"{row['n_rows']:,}",
            row["first_keys"].replace("; ", "\n"),
            row["fix"],
        )
    return table


@app.command("validate")
def validate(
    db: Annotated[Path, typer.Argument(help="SQLite database file to check.", show_default=False)],
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on warnings (e.g. gaps) too, not only errors.")
    ] = False,
    gap_tolerance: Annotated[
        float,
        typer.Option(
            "--gap-tolerance",
            min=1.0,
            help="Warn about gaps longer than this many times a symbol's usual bar spacing "
            "(nights, weekends and holidays are recognised as closures).",
        ),
    ] = 5.0,
) -> None:
    """Check every table of DB: schema, types, nulls, NaN/inf, keys, time order and
    zones, OHLC consistency, prices, volumes, symbols, gaps.

    Prints one row per failing check (table, column, check, failing rows, first
    offending keys, suggested fix) and a summary. Exit code 0 when there is no error
    (warnings allowed unless --strict), 1 otherwise, 2 when DB cannot be opened.

    Example: plus-ultra data validate data/market.db --strict --gap-tolerance 8
    """
    from ..data.validation import validate_database

    with user_errors():
        report = validate_database(db, gap_tolerance=gap_tolerance)
    if report.failures:
        out.print(_table(report))
    passed = report.passed(strict=strict)
    mark = "[green]✓ passed[/]" if passed else "[bold red]✗ failed[/]"
    mode = " (strict: warnings fail too)" if strict else ""
    out.print(f"{mark} {db}: {report.summary()}{mode}", highlight=False)
    if not passed:
        raise typer.Exit(1)
