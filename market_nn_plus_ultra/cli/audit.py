"""``plus-ultra audit``: the look-ahead check on the user's own data (exit 1 on any leak)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import ConfigOption, SetOption, console, load, out, progress, user_errors
from ._plugins import PluginOption, load_plugins

if TYPE_CHECKING:
    import pandas as pd

# Library modules are imported inside the command so `plus-ultra --help` stays fast.


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _leak_table(leaks: pd.DataFrame) -> Table:
    import pandas as pd

    table = Table(title="Look-ahead leaks", title_justify="left")
    for column in (
        "kind",
        "column",
        "symbol",
        "first changed",
        "cut",
        "values",
        "full",
        "truncated",
    ):
        table.add_column(column, justify="right" if column == "values" else "left")
    for row in leaks.itertuples(index=False):
        cut = "" if pd.isna(row.cut) else str(row.cut)  # target checks have no cut
        table.add_row(
            row.kind,
            f"[bold red]{row.column}[/]",
            str(row.symbol),
            str(row.first_timestamp),
            cut,
            f"{row.n_changed:,}",
            _fmt(row.full_value),
            _fmt(row.truncated_value),
        )
    return table


def audit(
    db: Annotated[Path, typer.Argument(help="SQLite database to audit (data.sqlite_path).")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    cuts: Annotated[
        int, typer.Option("--cuts", min=1, help="Random cut points to truncate the data at.")
    ] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the cut-point draw.")] = 0,
    plugins: PluginOption = None,
) -> None:
    """Recompute features, regime labels, cross-asset and alternative-data columns on data
    truncated at random cuts; any value at or before a cut that changes is look-ahead.
    Also checks that targets are forward returns of the configured window and horizon.
    Features registered by --plugin files/modules are audited with the selection.
    Exits 1 when anything leaks, 0 when clean.

    Example: plus-ultra audit data/market.db --plugin my_features.py --cuts 8"""
    from ..evaluation.leakage import audit_leakage

    with user_errors():
        cfg = load(config, overrides, **{"data.sqlite_path": db})
        custom = load_plugins(plugins)
        if custom:
            console.print(f"plugin features: {', '.join(custom)}", highlight=False)
        with progress() as bar:
            task = bar.add_task("auditing cut points", total=cuts)
            report = audit_leakage(
                cfg.data,
                cfg.features,
                window=cfg.windows.window,
                horizon=cfg.windows.horizon,
                target=cfg.windows.target,
                calendar=cfg.windows.calendar,
                cuts=cuts,
                seed=seed,
                extra_features=custom,
                on_cut=lambda done, total: bar.update(task, completed=done, total=total),
            )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    checked = ", ".join(f"{len(v)} {k}" for k, v in report.checked.items() if v)
    out.print(
        f"Cuts: {', '.join(str(c) for c in report.cuts)}\nChecked: {checked or 'nothing'}",
        highlight=False,
    )
    if not report.ok:
        out.print(_leak_table(report.leaks))
        out.print(f"[bold red]✗[/] {report.summary()}", highlight=False)
        raise typer.Exit(1)
    out.print(f"[green]✓[/] {report.summary()}", highlight=False)
