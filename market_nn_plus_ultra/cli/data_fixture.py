"""``plus-ultra data fixture``: a synthetic database with realistic panels and known ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperCommand

from ..data.fixture_config import FixtureConfig
from ..data.symbols import split_symbols
from ._common import console, progress, user_errors, wrote
from .data import app

_FIELDS = FixtureConfig.model_fields
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _spread_values(args: list[str], flag: str) -> list[str]:
    """``FLAG a b c`` → ``FLAG a FLAG b FLAG c``: several values after one flag.

    Values run until the next option, a ``--`` or a database path (so ``OUT.db`` may
    follow the symbols).
    """
    out: list[str] = []
    taking = pending = False  # pending: the flag was seen but no value followed yet
    for i, arg in enumerate(args):
        if arg == "--":
            return [*out, *([flag] if pending else []), *args[i:]]
        if arg == flag:
            out += [flag] if pending else []
            taking = pending = True
        elif taking and not arg.startswith("-") and not arg.lower().endswith(_DB_SUFFIXES):
            out += [flag, arg]
            pending = False
        else:
            out += [flag, arg] if pending else [arg]  # a bare flag: click reports it
            taking = pending = False
    return [*out, *([flag] if pending else [])]


class _SpreadSymbols(TyperCommand):
    """Accepts ``--symbols SPY QQQ BTC-USD`` besides repeated flags and comma lists."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _spread_values(list(args), "--symbols"))


@app.command("fixture", cls=_SpreadSymbols)
def fixture(
    out: Annotated[Path, typer.Argument(help="Database file to create, e.g. data/fixture.db.")],
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help=f"{_FIELDS['symbols'].description} Several after one flag "
            "(--symbols SPY QQQ BTC-USD), repeated, or comma-separated. "
            f"Default: {' '.join(_FIELDS['symbols'].get_default(call_default_factory=True))}.",
        ),
    ] = None,
    rows: Annotated[int, typer.Option(help=_FIELDS["rows"].description)] = _FIELDS["rows"].default,
    freq: Annotated[str, typer.Option(help=_FIELDS["freq"].description)] = _FIELDS["freq"].default,
    alt_features: Annotated[int, typer.Option(help=_FIELDS["alt_features"].description)] = _FIELDS[
        "alt_features"
    ].default,
    seed: Annotated[int, typer.Option(help=_FIELDS["seed"].description)] = _FIELDS["seed"].default,
    planted_signal: Annotated[
        float | None, typer.Option(help=_FIELDS["planted_signal"].description)
    ] = None,
    start: Annotated[str, typer.Option(help=_FIELDS["start"].description)] = _FIELDS[
        "start"
    ].default,
    regime_drift: Annotated[
        float, typer.Option(help=_FIELDS["regime_drift"].description)
    ] = _FIELDS["regime_drift"].default,
    autocorr: Annotated[float, typer.Option(help=_FIELDS["autocorr"].description)] = _FIELDS[
        "autocorr"
    ].default,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
) -> None:
    """Generate a synthetic market database: validated, written atomically, ground truth in
    `metadata` (see docs/fixtures.md)."""
    from ..data.fixtures import write_fixture  # the generator: numpy, pandas, scipy

    began = time.perf_counter()
    with user_errors(), progress() as bar:
        given = split_symbols(symbols)  # --symbols "," is an error, not the defaults
        names = given or list(_FIELDS["symbols"].get_default(call_default_factory=True))
        task = bar.add_task("generating, validating and writing the fixture", total=1)
        path = write_fixture(
            out,
            names,
            rows=rows,
            freq=freq,
            alt_features=alt_features,
            seed=seed,
            planted_signal=planted_signal,
            start=start,
            regime_drift=regime_drift,
            autocorr=autocorr,
            overwrite=overwrite,
        )
        bar.update(task, completed=1)
    signal = f", planted IC {planted_signal}" if planted_signal is not None else ""
    console.print(
        f"{len(names)} symbols × {rows} bars at {freq}, {alt_features} side tables"
        f"{signal} in {time.perf_counter() - began:.1f}s",
        highlight=False,
    )
    wrote("fixture database", path)
