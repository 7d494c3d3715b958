"""``plus-ultra annotate add | list | export``: analyst feedback on served predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import ConfigOption, SetOption, console, load, out, user_errors, wrote

# Library modules are imported inside the commands so `plus-ultra --help` stays fast.

app = typer.Typer(
    help="Attach notes, anomaly flags and vetoes to served predictions or trades, list them, "
    "and export them with the served actions as an offline-RL dataset.",
    no_args_is_help=True,
)

DatabaseOption = Annotated[
    Path | None,
    typer.Option(
        "--database",
        help="SQLite file that holds the annotations (created when missing). [config: "
        "service.database, the service's own database]",
    ),
]
ServiceDbOption = Annotated[
    Path | None,
    typer.Option(
        "--service-db",
        help="The service's database, whose prediction log request ids and model versions "
        "refer to. [config: service.database]",
    ),
]
MarketDbOption = Annotated[
    Path | None,
    typer.Option(
        "--market-db",
        help="The market database (read only): trades for --trade-id, next closes for "
        "rewards. [config: data.sqlite_path]",
    ),
]
SymbolsOption = Annotated[
    list[str] | None, typer.Option("--symbol", help="Only this symbol (repeatable).")
]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Only bars at or after this ISO-8601 time.")
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Only bars at or before this ISO-8601 time.")
]


def add(
    kind: Annotated[str, typer.Option("--kind", help="note, anomaly or veto.")],
    text: Annotated[
        str | None,
        typer.Option("--text", help="What you saw (a veto's defaults to its rationale)."),
    ] = None,
    rationale: Annotated[
        str | None,
        typer.Option("--rationale", help="Why the action was wrong: required for a veto."),
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="request_id of a /predict response.")
    ] = None,
    timestamp: Annotated[
        str | None, typer.Option("--timestamp", help="The bar (ISO-8601; with --symbol).")
    ] = None,
    symbol: Annotated[
        str | None,
        typer.Option("--symbol", help="The symbol (with --timestamp, or one of a request's)."),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="The served model's version (with --timestamp)."),
    ] = None,
    trade_id: Annotated[
        int | None, typer.Option("--trade-id", help="trade_id of the market database's trades.")
    ] = None,
    author: Annotated[str | None, typer.Option("--author", help="Who wrote it.")] = None,
    database: DatabaseOption = None,
    service_db: ServiceDbOption = None,
    market_db: MarketDbOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Attach an annotation to a served prediction (--request-id, or --timestamp --symbol
    --model-version), a bar (--timestamp --symbol) or a trade (--trade-id). A veto needs a
    --rationale and a served prediction or trade; it then marks that action in
    `annotate export` for the off-policy update to avoid.

    Example: plus-ultra annotate add --request-id 3f2a... --symbol AAPL --kind veto
    --rationale "earnings after the close" --author ana"""
    from ..data.annotations import add_annotation

    with user_errors():
        cfg = load(config, overrides)
        saved = add_annotation(
            database or cfg.service.database,
            kind=kind,
            text=text,
            rationale=rationale,
            author=author,
            request_id=request_id,
            timestamp=timestamp,
            symbol=symbol,
            model_version=model_version,
            trade_id=trade_id,
            predictions_db=service_db or cfg.service.database,
            trades_db=market_db or cfg.data.sqlite_path,
        )
    about = f"request {saved.request_id}" if saved.request_id else "the bar"
    version = f", model {saved.model_version}" if saved.model_version else ""
    out.print(
        f"annotation {saved.annotation_id} ({saved.kind}) on {saved.symbol} {saved.timestamp}: "
        f"{about}{version}",
        highlight=False,
    )
    wrote("annotations", database or cfg.service.database)


_SHOWN = ("annotation_id", "kind", "timestamp", "symbol", "model_version", "request_id", "text",
          "rationale", "author")  # fmt: skip


def list_(
    symbols: SymbolsOption = None,
    kinds: Annotated[
        list[str] | None, typer.Option("--kind", help="Only this kind (repeatable).")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Only this request.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Only this model version.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest annotations shown.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON list instead of a table.")
    ] = False,
    database: DatabaseOption = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """List stored annotations, newest first (filters combine).

    Example: plus-ultra annotate list --kind veto --symbol AAPL --since 2024-01-01"""
    from ..data.annotations import read_annotations

    with user_errors():
        cfg = load(config, overrides)
        path = database or cfg.service.database
        frame = read_annotations(
            path,
            symbols=symbols,
            kinds=kinds,
            request_id=request_id,
            model_version=model_version,
            since=since,
            until=until,
            limit=limit,
        )
    records = json.loads(frame.to_json(orient="records"))
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table(title=f"{len(records)} annotations in {path}", header_style="bold")
    for column in _SHOWN:
        table.add_column(column, overflow="fold")
    for row in records:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in _SHOWN))
    out.print(table)


def _existing(path: Path) -> Path | None:
    """The configured market database when it is there (rewards then fall back to it)."""
    return path if Path(path).is_file() else None


def export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The Parquet file to write (atomically).")
    ],
    database: DatabaseOption = None,
    service_db: ServiceDbOption = None,
    market_db: MarketDbOption = None,
    cost_bps: Annotated[
        float | None,
        typer.Option(
            "--cost-bps",
            help="Cost per unit of |Δposition| taken from the reward. [config: evaluation.cost_bps]",
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Only this model version's predictions.")
    ] = None,
    symbols: SymbolsOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    annotated_only: Annotated[
        bool, typer.Option("--annotated-only", help="Only predictions that carry an annotation.")
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Write the offline-RL dataset: one row per served prediction with its observation by
    reference (bar, symbol, model version; the market database's path and SHA-256 in the
    file's metadata), the served action, the reward (position x realised return minus
    costs: the outcome the service recorded, else the market database's next close) and the
    annotations (veto + rationale, anomaly). `rl-finetune --set
    reinforcement.ppo.off_policy.dataset=FILE` seeds the replay buffer with it.

    Example: plus-ultra annotate export --output outputs/feedback.parquet --market-db
    data/market.db"""
    from ..rl.feedback import export_feedback

    with user_errors():
        cfg = load(config, overrides)
        result = export_feedback(
            output,
            service_db=service_db or cfg.service.database,
            annotations_db=database or service_db or cfg.service.database,
            market_db=market_db or _existing(cfg.data.sqlite_path),
            cost_bps=cfg.evaluation.cost_bps if cost_bps is None else cost_bps,
            model_version=model_version,
            symbols=symbols,
            since=since,
            until=until,
            annotated_only=annotated_only,
        )
    sources = ", ".join(f"{n} from {k}" for k, n in sorted(result.reward_sources.items()))
    out.print(
        f"{result.rows} rows ({result.vetoes} vetoed, {result.anomalies} anomalies, "
        f"{result.annotated} annotated); rewards: {sources or 'none'}",
        highlight=False,
    )
    left = {
        "rejected requests": result.rejected,
        "predictions without a next return": result.no_reward,
        "annotations matching no logged prediction": result.unmatched_annotations,
    }
    for what, n in left.items():
        if n:
            console.print(f"[yellow]left out:[/] {n} {what}", highlight=False)
    wrote("feedback dataset", result.path)


app.command("add")(add)
app.command("list")(list_)
app.command("export")(export)
