"""Pieces every command shares: config loading with overrides, logging, console, errors."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.exceptions import TyperException

from ..config import Config, load_config
from ._errors import BUG_EXIT_CODE, bug_report, user_message

if TYPE_CHECKING:
    from ..evaluation.sample import ScoredSample

console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (e.g. configs/default.yaml)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any config value, repeatable: --set data.sqlite_path=other.db",
    ),
]

IncludeInSampleOption = Annotated[
    bool,
    typer.Option(
        "--include-in-sample",
        help="Also score the bars the model trained or was validated on (the file's sample "
        "column says which); every output then says the numbers include in-sample bars.",
    ),
]
ClipPositionsOption = Annotated[
    bool,
    typer.Option(
        "--clip-positions",
        help="Clip positions outside [-1, 1] instead of refusing the file.",
    ),
]


def print_sample(sample: ScoredSample) -> None:
    """Say which bars are scored (stdout) and any notice about them (stderr)."""
    out.print(f"scored: {sample.describe()}", highlight=False)
    if sample.notice:
        console.print(f"[yellow]notice:[/] {sample.notice}", highlight=False)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the package logger: rich text on stderr, or one JSON object per line."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("lightning", "pytorch_lightning", "lightning.pytorch", "fsspec", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def load(config: Path | None, overrides: list[str] | None, **flags: object) -> Config:
    """Load the config, apply ``--set`` overrides, then named flags (those not None)."""
    extra = [f"{key}={json.dumps(_plain(v))}" for key, v in flags.items() if v is not None]
    return load_config(config, [*(overrides or []), *extra])


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clean error (no traceback) and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can fix become one message and exit 2; anything else is a bug.

    Known errors (see :mod:`._errors`): the library's own error types and the
    ``ValueError``/``KeyError`` it raises on purpose, OS errors (read-only folder, full
    disk, a path that is a folder) and SQLite's (locked, read-only, damaged database),
    each with the path and the fix. An unexpected exception prints the last frames of
    its traceback, says it is a bug to report, and exits 3.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, TyperException, click.exceptions.ClickException):
        raise  # typer's own exits and usage errors keep their codes
    except Exception as err:
        message = user_message(err)
        if message is not None:
            raise fail(message) from None
        console.print(f"[bold red]internal error:[/] {escape(bug_report(err))}", highlight=False)
        raise typer.Exit(BUG_EXIT_CODE) from None


def progress() -> Progress:
    """A rich progress bar for long work (hidden when stderr is not a terminal)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def wrote(label: str, path: Path | str) -> None:
    """Tell the user where an output went (the last line of every command)."""
    out.print(f"[green]✓[/] {label}: [bold]{path}[/]", highlight=False)
