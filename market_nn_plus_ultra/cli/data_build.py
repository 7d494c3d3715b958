"""``plus-ultra data build``: regime labels and cross-asset views, written into the database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..config import CrossAssetConfig, DataConfig, field_help
from ._common import (
    ConfigOption,
    SetOption,
    console,
    fail,
    load,
    out,
    progress,
    user_errors,
    wrote,
)
from .data import app
from .data_validate import _table as validation_table

if TYPE_CHECKING:
    from ..data.build import BuildResult

# Library modules are imported inside the command so `plus-ultra --help` stays fast.


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise fail(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.33,0.66") from None


def _items(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _show(result: BuildResult) -> None:
    if result.validation.failures:
        console.print(
            f"[yellow]validation:[/] {result.validation.summary()} — "
            "see `plus-ultra data validate`",
            highlight=False,
        )
    if not result.label_counts.empty:
        table = Table(title="Regime labels written", title_justify="left")
        for column in ("labeller", "label", "rows"):
            table.add_column(column, justify="right" if column == "rows" else "left")
        for row in result.label_counts.itertuples(index=False):
            table.add_row(row.name, row.value, f"{row.rows:,}")
        out.print(table)
    if result.view is not None:
        stats = result.view.stats.groupby("name")[["bars", "exact", "filled", "missing"]].sum()
        table = Table(title=f"Cross-asset view {result.view.view!r}", title_justify="left")
        for column in ("column", "exact", "filled", "missing", "fill rate"):
            table.add_column(column, justify="left" if column == "column" else "right")
        for name, row in stats.iterrows():
            rate = row["filled"] / row["bars"] if row["bars"] else 0.0
            table.add_row(
                str(name),
                f"{row['exact']:,}",
                f"{row['filled']:,}",
                f"{row['missing']:,}",
                f"{rate:.1%}",
            )
        out.print(table)
        out.print(f"Bars dropped (a context value still missing): {result.view.dropped_rows:,}")
    out.print(f"Built {result.summary()}", highlight=False)


@app.command("build")
def build_command(
    db: Annotated[
        Path,
        typer.Argument(help="SQLite database to build from (updated in place unless --output)."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the result to this new database instead."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --output if it already exists.")
    ] = False,
    regime_labels: Annotated[
        bool,
        typer.Option(
            "--regime-labels", help="Write causal volatility/liquidity/sector-rotation labels."
        ),
    ] = False,
    regime_bands: Annotated[
        str | None,
        typer.Option(
            "--regime-bands",
            help="Quantile cut points, comma-separated: k cuts give k+1 labels "
            "(config data.regimes.bands, default 0.33,0.66).",
        ),
    ] = None,
    cross_asset: Annotated[
        bool,
        typer.Option("--cross-asset-view", help="Write the cross-asset context view."),
    ] = False,
    cross_asset_columns: Annotated[
        str | None,
        typer.Option(
            "--cross-asset-columns",
            help="Context columns, comma-separated SYMBOL:column, e.g. SPY:close,QQQ:close "
            "(config data.cross_asset.columns).",
        ),
    ] = None,
    fill_limit: Annotated[
        int | None,
        typer.Option(
            "--cross-asset-fill-limit", help=field_help(CrossAssetConfig, "fill_limit"), min=0
        ),
    ] = None,
    strict_validation: Annotated[
        bool | None,
        typer.Option(
            "--strict-validation/--no-strict-validation",
            help=field_help(DataConfig, "strict_validation"),
        ),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Validate DB, then write regime labels and/or a cross-asset view into it.

    Everything is written in one transaction and replaces what an earlier build wrote for
    the same labellers / view, so building twice gives identical tables. With --output
    the source is copied first and left untouched. With --strict-validation any
    validation failure halts before anything is written; otherwise failing bars are
    dropped and counted.

    Example: plus-ultra data build data/market.db --regime-labels --cross-asset-view
    --cross-asset-columns SPY:close,QQQ:close --output data/built.db
    """
    from ..data.build import BUILD_STEPS, build_database
    from ..data.validation_report import DataValidationError

    with user_errors():
        cfg = load(
            config,
            overrides,
            **{
                "data.sqlite_path": db,
                "data.regimes.bands": _floats(regime_bands, "--regime-bands"),
                "data.cross_asset.columns": _items(cross_asset_columns),
                "data.cross_asset.fill_limit": fill_limit,
                "data.strict_validation": strict_validation,
            },
        )
        try:
            with progress() as bar:
                task = bar.add_task("building", total=len(BUILD_STEPS))

                def on_step(description: str) -> None:
                    done = BUILD_STEPS.index(description)
                    bar.update(task, description=description, completed=done)

                result = build_database(
                    cfg.data,
                    regimes=regime_labels,
                    cross_asset=cross_asset,
                    output=output,
                    overwrite=overwrite,
                    on_step=on_step,
                )
                bar.update(task, description="built", completed=len(BUILD_STEPS))
        except DataValidationError as err:
            out.print(validation_table(err.report))
            raise fail(
                f"{db}: {err.report.summary()} — nothing was written. Fix the rows above, or "
                "drop --strict-validation to build from the rows that pass"
            ) from None
    _show(result)
    wrote("database", result.path)
