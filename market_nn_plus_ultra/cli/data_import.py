"""``plus-ultra data import | samples | bootstrap``: real data into a SQLite database.

``--csv``, ``--parquet``, ``--sample`` and ``--tickers`` take several space-separated
values after one flag (``--tickers SPY QQQ IWM``): Click options take one value each, so
the commands accept extra arguments and hand them to the flag they follow by kind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import console, fail, out, user_errors, wrote
from .data import app

if TYPE_CHECKING:
    from ..data.importers import ImportResult

# Library modules are imported inside each command so `plus-ultra --help` stays fast.

_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt")

OutDb = Annotated[Path, typer.Argument(help="SQLite database to create (or extend with --append).")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Rebuild the database if it already exists.")
]
Adjust = Annotated[
    bool,
    typer.Option(
        "--adjust/--no-adjust",
        help="Scale open/high/low/close by adjusted close ÷ close when the source has one.",
    ),
]


def _mapping(items: list[str] | None) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        source, sep, target = item.rpartition("=")
        if not sep or not source or not target:
            raise fail(f"--map {item!r}: expected SOURCE=TARGET, e.g. --map 'Adj Close=close'")
        pairs[source] = target.strip().lower()
    return pairs


def _database_first(out_db: Path, extras: list[str], usage: str) -> None:
    """Refuse a command line whose database is not the first argument (it could be clobbered)."""
    stray = [a for a in extras if a.lower().endswith(_DB_SUFFIXES)]
    if stray or out_db.name.lower().endswith(_DATA_SUFFIXES):
        wrong = stray[0] if stray else out_db
        raise fail(
            f"{wrong} is in the database's place — put the database first: plus-ultra data {usage}"
        )


def _report(result: ImportResult) -> None:
    for note in result.warnings:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    out.print(f"Imported {result.summary()}", highlight=False)
    if result.new_symbols:
        out.print(f"New assets: {', '.join(result.new_symbols)}", highlight=False)
    wrote("database", result.path)


@app.command("import", context_settings={"allow_extra_args": True})
def import_command(
    ctx: typer.Context,
    out_db: OutDb,
    csv: Annotated[
        list[Path] | None, typer.Option("--csv", help="CSV file(s) of bars, plain or .gz.")
    ] = None,
    parquet: Annotated[
        list[Path] | None, typer.Option("--parquet", help="Parquet file(s) of bars.")
    ] = None,
    sample: Annotated[
        list[str] | None,
        typer.Option("--sample", help="Package-shipped dataset(s): see `plus-ultra data samples`."),
    ] = None,
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol", help="Symbol for files without a symbol/ticker column (default: file stem)."
        ),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="Name a source column, repeatable: --map Date=timestamp --map Last=close."
        ),
    ] = None,
    timezone: Annotated[
        str,
        typer.Option(
            "--timezone",
            help="Time zone of naive intraday times (e.g. America/New_York), stored as UTC; "
            "dates (daily bars) keep their session date at 00:00 UTC.",
        ),
    ] = "UTC",
    date_format: Annotated[
        str | None,
        typer.Option(
            "--date-format",
            help="strftime layout of the dates, e.g. '%d/%m/%Y'; default: ISO-8601, or the "
            "day/month order detected from a field above 12 (a file that cannot tell is refused).",
        ),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="long: one symbol per file or a symbol column; wide: a date column plus one "
            "close column per symbol (stored close-only).",
        ),
    ] = "long",
    asset_class: Annotated[
        str | None,
        typer.Option(
            "--asset-class",
            help="assets.asset_class of new symbols (equity, etf, index, fx, crypto, …); "
            "validation flags weekend bars of weekday markets.",
        ),
    ] = None,
    overwrite: Overwrite = False,
    append: Annotated[
        bool,
        typer.Option(
            "--append", help="Upsert into an existing database (re-importing changes nothing)."
        ),
    ] = False,
    adjust: Adjust = True,
) -> None:
    """Import CSV/Parquet bars or package-shipped real market data into a database.

    Example: plus-ultra data import data/market.db --csv AAPL.csv MSFT.csv --asset-class equity

    Example: plus-ultra data import data/market.db --sample sp500 nasdaq --append
    """
    from ..data.importers import import_frames
    from ..data.samples import import_samples

    _database_first(out_db, ctx.args, "import OUT.db --csv A.csv B.csv")
    files = [*(csv or []), *(parquet or [])]
    samples = list(sample or [])
    for extra in ctx.args:
        if samples and not files:
            samples.append(extra)
        elif files:
            files.append(Path(extra))
        else:
            raise fail(f"unexpected argument {extra!r} — put files after --csv/--parquet")
    if bool(files) == bool(samples):
        raise fail("give files (--csv/--parquet) or --sample names — one kind per command")
    with user_errors():
        if samples:
            result = import_samples(out_db, samples, append=append, overwrite=overwrite)
        else:
            result = import_frames(
                out_db,
                files,
                symbol=symbol,
                mapping=_mapping(mapping),
                timezone=timezone,
                date_format=date_format,
                layout=layout,
                asset_class=asset_class,
                append=append,
                overwrite=overwrite,
                adjust=adjust,
            )
    _report(result)


def _dates(start: object, end: object) -> str:
    if start is None or end is None or str(start) == "NaT":
        return "—"
    return f"{start:%Y-%m-%d} →\n{end:%Y-%m-%d}"


@app.command("samples")
def samples_command() -> None:
    """List the real datasets that ship inside installed packages (import with --sample)."""
    from ..data.samples import SAMPLES, describe_samples

    table = Table(title="Package-shipped market data: plus-ultra data import OUT.db --sample NAME")
    for column in ("name", "symbols", "rows", "dates", "package", "licence"):
        table.add_column(
            column,
            no_wrap=column in ("rows", "dates"),
            justify="right" if column == "rows" else "left",
            overflow="fold",
            max_width=24 if column == "symbols" else None,
        )
    table.add_column("quirks", ratio=1)
    for row in describe_samples().itertuples(index=False):
        missing = isinstance(row.rows, float) and math.isnan(row.rows)
        table.add_row(
            row.name,
            row.symbols,
            "—" if missing else f"{int(row.rows):,}",
            _dates(row.start, row.end),
            row.package,
            row.license,
            f"[red]{row.note}[/]"
            if missing
            else "\n".join(f"• {q}" for q in SAMPLES[row.name].quirks),
        )
    out.print(table)


@app.command("bootstrap", context_settings={"allow_extra_args": True})
def bootstrap_command(
    ctx: typer.Context,
    out_db: OutDb,
    tickers: Annotated[
        list[str],
        typer.Option(
            "--tickers", help="Yahoo symbols, space- or comma-separated: --tickers SPY QQQ ^GSPC."
        ),
    ],
    start: Annotated[
        str, typer.Option("--start", help="First date (inclusive), YYYY-MM-DD.")
    ] = "2000-01-01",
    end: Annotated[
        str | None, typer.Option("--end", help="Last date (exclusive), YYYY-MM-DD; default today.")
    ] = None,
    overwrite: Overwrite = False,
    interval: Annotated[
        str, typer.Option("--interval", help="Bar size: 1d, 1wk, 1mo, or intraday 1h, 15m, ….")
    ] = "1d",
    adjust: Adjust = True,
) -> None:
    """Download daily (or intraday) bars from Yahoo Finance; re-running upserts the same rows."""
    from ..data.yahoo import bootstrap

    _database_first(out_db, ctx.args, "bootstrap OUT.db --tickers SPY QQQ")
    symbols = [t for item in [*tickers, *ctx.args] for t in item.split(",") if t.strip()]
    with user_errors(), console.status(f"Downloading {len(symbols)} ticker(s) from Yahoo Finance"):
        result = bootstrap(
            out_db, symbols, start, end, overwrite=overwrite, interval=interval, adjust=adjust
        )
    _report(result)
