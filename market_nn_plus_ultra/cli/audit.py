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

    from ..evaluation.leakage_report import AuditReport

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


def _print_stored(findings: pd.DataFrame) -> None:
    """One block per finding: table.column and the check, the evidence, the fix."""
    out.print("Stored inputs that know the next return:", highlight=False)
    for row in findings.itertuples(index=False):
        out.print(f"  [bold red]{row.table}.{row.column}[/] ({row.check})", highlight=False)
        out.print(f"    evidence: {row.evidence}", highlight=False)
        out.print(f"    fix: {row.fix}", highlight=False)


def _print_checked(report: AuditReport) -> None:
    checked = ", ".join(f"{len(v)} {k}" for k, v in report.checked.items() if v)
    lines = [
        f"Cuts: {', '.join(str(c) for c in report.cuts)}",
        f"Checked: {checked or 'nothing'}",
    ]
    if report.stored is not None:
        stored = ", ".join(f"{len(v)} {k}" for k, v in report.stored.checked.items() if v)
        lines.append(f"Stored inputs tested against the next return: {stored or 'none'}")
    if report.power is not None:
        lines.append(f"Power: {report.power.describe()}")
    out.print("\n".join(lines), highlight=False)


def audit(
    db: Annotated[Path, typer.Argument(help="SQLite database to audit (data.sqlite_path).")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    cuts: Annotated[
        int | None,
        typer.Option(
            "--cuts",
            min=1,
            help="Random cut points to truncate the data at; default 9, the fewest that catch "
            "a one-bar peek on 30% of bars with probability >= 95% (1 - 0.7^9 = 96%).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the cut-point draw.")] = 0,
    plugins: PluginOption = None,
) -> None:
    """Recompute features, regime labels, cross-asset and alternative-data columns on data
    truncated at random cuts; any value at or before a cut that changes is look-ahead.
    Also checks that targets are forward returns of the configured window and horizon,
    and tests every stored input (indicators, alt_* values, saved views and regime labels)
    against the next bar's return: copies of it, a strong IC that collapses under a one-bar
    lag, alternative-data rows stamped or known after the bar they join.
    Features registered by --plugin files/modules are audited with the selection.
    Exits 1 when anything leaks, 0 when clean.

    Example: plus-ultra audit data/market.db --plugin my_features.py --cuts 8"""
    from ..evaluation.leakage import audit_leakage, cuts_for_power

    with user_errors():
        cfg = load(config, overrides, **{"data.sqlite_path": db})
        custom = load_plugins(plugins)
        if custom:
            console.print(f"plugin features: {', '.join(custom)}", highlight=False)
        with progress() as bar:
            task = bar.add_task("auditing cut points", total=cuts or cuts_for_power())
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
    _print_checked(report)
    if not report.ok:
        if not report.leaks.empty:
            out.print(_leak_table(report.leaks))
        if report.stored is not None and not report.stored.findings.empty:
            _print_stored(report.stored.findings)
        out.print(f"[bold red]✗[/] {report.summary()}", highlight=False)
        raise typer.Exit(1)
    out.print(f"[green]✓[/] {report.summary()}", highlight=False)
