"""The ``plus-ultra`` Typer app: global options and the table of command groups."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from .. import __version__
from . import annotate as annotate_cmds
from . import bench as bench_cmds
from . import data as data_cmds
from . import features as features_cmds
from . import retrain as retrain_cmds
from ._common import setup_logging
from .audit import audit
from .backtest import backtest
from .demo import demo
from .predict import predict
from .pretrain import pretrain
from .report import report
from .rl_finetune import rl_finetune
from .serve import serve
from .train import train
from .walkforward import walkforward


def _escape_help(command: Any) -> None:
    """Escape rich markup in ``command``'s help texts, and its sub-commands', in place.

    Help is written as plain text and shown exactly as written: without this, rich reads
    ``[config: default 252]`` or ``--set data.symbols=[SPY,QQQ]`` as style tags and drops
    them. No help text uses rich markup on purpose.
    """
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if text:
            setattr(command, attr, escape(text))
    # duck-typed: typer ships its own copy of click, whose classes are not click's
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)  # type: ignore[attr-defined]
    for sub in (getattr(command, "commands", None) or {}).values():
        _escape_help(sub)


class _PlainHelpGroup(TyperGroup):
    """The root group: built once per run with every sub-command, whose help it escapes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _escape_help(self)


app = typer.Typer(
    cls=_PlainHelpGroup,
    name="plus-ultra",
    help="Market NN Plus Ultra: from one SQLite file of market data to validated features, "
    "trained sequence models and honest walk-forward reports.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmds.app, name="data")
app.add_typer(annotate_cmds.app, name="annotate")
app.command("audit")(audit)
app.command("backtest")(backtest)
app.add_typer(features_cmds.app, name="features")
app.command("demo")(demo)
app.add_typer(bench_cmds.app, name="bench")
app.command("report")(report)
app.add_typer(retrain_cmds.app, name="retrain")
app.command("pretrain")(pretrain)
app.command("predict")(predict)
app.command("rl-finetune")(rl_finetune)
app.command("serve")(serve)
app.command("train")(train)
app.command("walkforward")(walkforward)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plus-ultra {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    log_level: Annotated[
        str, typer.Option("--log-level", help="Logging level: DEBUG, INFO, WARNING, ERROR.")
    ] = "INFO",
    log_format: Annotated[
        str,
        typer.Option("--log-format", help="Log lines as human 'text' or one 'json' object each."),
    ] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be 'text' or 'json'")
    setup_logging(log_level, log_format)


def main() -> None:
    app()
