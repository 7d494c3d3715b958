"""``plus-ultra features …``: list the registered features, compute them, export their docs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.table import Table
from typer.core import TyperCommand

from ..data.symbols import split_symbols
from ._common import ConfigOption, SetOption, console, load, out, progress, user_errors, wrote

__all__ = ["app"]

app = typer.Typer(
    help="List, compute and document the feature set (see docs/features.md).",
    no_args_is_help=True,
)

_LIST_FLAGS = ("--symbols", "--features")
_PATH_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".parquet", ".yaml", ".yml")


def _spread(args: Sequence[str], flags: Sequence[str] = _LIST_FLAGS) -> list[str]:
    """``--symbols A B --features x y`` → ``--symbols A --symbols B --features x …``.

    Values run until the next option, a ``--`` or a file path (so the database may follow
    the list); a flag with no value is left for click to report.
    """
    spread: list[str] = []
    flag: str | None = None  # the list flag whose values are being read
    pending = False  # the flag was seen but no value followed yet
    for i, arg in enumerate(args):
        if arg == "--":
            return [*spread, *([flag] if pending and flag else []), *args[i:]]
        if arg in flags:
            spread += [flag] if pending and flag else []
            flag, pending = arg, True
        elif flag and not arg.startswith("-") and not arg.lower().endswith(_PATH_SUFFIXES):
            spread += [flag, arg]
            pending = False
        else:
            spread += [flag, arg] if pending and flag else [arg]
            flag, pending = None, False
    return [*spread, *([flag] if pending and flag else [])]


class _SpreadLists(TyperCommand):
    """Accepts several values after one ``--symbols`` / ``--features`` flag."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _spread(list(args)))


def _names(values: list[str] | None) -> list[str] | None:
    """Flatten repeated flags and comma lists; None when nothing was given."""
    names = [n.strip() for value in values or [] for n in value.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or None


@app.command("list")
def list_features(
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="Only features with this tag (repeatable), e.g. --tag momentum."
        ),
    ] = None,
) -> None:
    """Print every registered feature with its tags, dependencies and warm-up.

    One row per feature column: name, tags, dependencies (the panel columns it reads),
    warm-up (leading NaN bars per symbol) and parameters; opt-in features, outside the
    default set, are marked.

    Example: plus-ultra features list --tag volatility
    """
    from ..features import REGISTRY  # numba kernels: loaded when a command runs

    with user_errors():
        chosen = REGISTRY.select(tags=tag) if tag else None
    frame = REGISTRY.describe()
    if chosen is not None:
        frame = frame[frame["name"].isin([o for outs in chosen.values() for o in outs])]
    table = Table(title="Registered features", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("tags")
    table.add_column("dependencies")
    table.add_column("warm-up", justify="right")
    table.add_column("parameters")
    for row in frame.itertuples(index=False):
        mark = "" if row.default else " [dim](opt-in)[/]"
        table.add_row(
            f"{row.name}{mark}", row.tags, row.dependencies, str(row.warmup), row.parameters
        )
    out.print(table)
    out.print(
        f"{len(frame)} feature columns; without --features, `features compute` adds the "
        f"{int(frame['default'].sum())} not marked opt-in.",
        highlight=False,
    )


@app.command("compute", cls=_SpreadLists)
def compute(
    db: Annotated[Path, typer.Argument(help="SQLite market database.", show_default=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Parquet file to write (atomically).")
    ] = Path("features.parquet"),
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help="Symbols to compute (default: all in DB). Several after one flag "
            "(--symbols SPY QQQ), repeated, or comma-separated.",
        ),
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            help="Features by name or group (default: the default set; see `features list`). "
            "Several after one flag (--features rsi_14 macd), repeated, or comma-separated.",
        ),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Compute features for every symbol of DB and write them to Parquet.

    Reads DB's panel (joined with its alternative data), computes the selected features
    per symbol and writes OHLCV plus feature columns indexed by (timestamp, symbol).

    Example: plus-ultra features compute data/market.db -o features.parquet --symbols SPY QQQ

    Example: plus-ultra features compute data/market.db --features rsi_14 macd,atr_14
    """
    from ..features import compute_features, write_features

    began = time.perf_counter()
    with user_errors():
        cfg = load(
            config,
            overrides,
            **{
                "data.sqlite_path": db,
                "data.symbols": split_symbols(symbols),  # "," is an error, not "all"
                "features.names": _names(features),
            },
        )
        with progress() as bar:
            task = bar.add_task("reading the panel", total=None)

            def advance(group: str, done: int, total: int) -> None:
                bar.update(task, description=f"features: {group}", completed=done, total=total)

            frame, report = compute_features(cfg.data, cfg.features, on_feature=advance)
            bar.update(task, description="writing parquet")
            path = write_features(frame, output)
    n_symbols = frame.index.get_level_values("symbol").nunique()
    console.print(
        f"{len(report.computed)} feature columns for {n_symbols} symbols × {len(frame):,} rows "
        f"in {time.perf_counter() - began:.1f}s",
        highlight=False,
    )
    for name, reason in report.skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {reason}", highlight=False)
    wrote("features", path)


@app.command("docs")
def docs(
    output: Annotated[Path, typer.Option("--output", "-o", help="Markdown file to write.")] = Path(
        "docs/generated_features.md"
    ),
) -> None:
    """Write the markdown reference of every registered feature.

    Generated from the registry: name, tags, dependencies, warm-up, parameters and
    definition of each feature.

    Example: plus-ultra features docs --output docs/generated_features.md
    """
    from ..features import write_feature_docs

    with user_errors():
        path = write_feature_docs(output)
    wrote("feature reference", path)
