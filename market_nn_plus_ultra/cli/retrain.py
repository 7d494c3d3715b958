"""``plus-ultra retrain``: the staged retrain pipeline, and ``retrain rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import SetOption, console, out, progress, user_errors, wrote

if TYPE_CHECKING:
    from ..orchestration.pipeline import RetrainResult, StageEvent

app = typer.Typer(no_args_is_help=False)  # the callback's docstring is the group's help

_STATUS = {"done": "green", "skipped": "yellow", "failed": "bold red", "running": "cyan"}


def _show(result: RetrainResult) -> None:
    table = Table(title=f"Retrain run {result.run_dir.name}", title_justify="left")
    for column in ("stage", "status", "seconds", "what happened"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for stage in result.stages:
        seconds = "" if stage.seconds is None else f"{stage.seconds:.1f}"
        colour = _STATUS.get(stage.status, "white")
        table.add_row(
            stage.name, f"[{colour}]{stage.status}[/]", seconds, stage.reason or stage.note or ""
        )
    out.print(table)
    if result.promoted:
        out.print(f"[green]promoted:[/] this run is the champion ({result.champion_json})")
    else:
        out.print(f"[yellow]no new champion:[/] {result.why_not}", highlight=False)
    if result.report is not None:
        wrote("report", result.report)
    wrote("manifest", result.manifest)
    wrote("run folder", result.run_dir)


@app.callback(invoke_without_command=True)
def retrain(
    ctx: typer.Context,
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="SQLite database to retrain on; replaces data.sqlite_path of the configs."
        ),
    ] = None,
    train_config: Annotated[
        Path | None, typer.Option(help="YAML config of the train, RL and evaluate stages.")
    ] = None,
    pretrain_config: Annotated[
        Path | None,
        typer.Option(help="YAML config of the pretrain stage (default: the training config)."),
    ] = None,
    overrides: SetOption = None,
    run_reinforcement: Annotated[
        bool | None,
        typer.Option(
            "--run-reinforcement",
            help="Fine-tune the trained model with PPO; the policy is then the candidate.",
        ),
    ] = None,
    warm_start: Annotated[
        str | None,
        typer.Option(
            help="Warm start of training: auto (the champion when it fits, else this run's "
            "pretrained backbone, else none), training (the champion's checkpoint), pretrain "
            "(this run's pretrained backbone) or scratch. Default auto.",
        ),
    ] = None,
    regenerate_regimes: Annotated[
        bool | None,
        typer.Option(
            "--regenerate-regimes",
            help="Rebuild the regime labels of data.regimes INTO the database (changes the "
            "file); without it the database is never modified.",
        ),
    ] = None,
    skip_pretraining: Annotated[
        bool | None, typer.Option("--skip-pretraining", help="Skip the pretrain stage.")
    ] = None,
    skip_training: Annotated[
        bool | None,
        typer.Option(
            "--skip-training",
            help="Skip the train stage (with --run-reinforcement the champion is fine-tuned).",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the runs (<UTC timestamp>/ each) and of champion.json. "
            "Default automation_runs."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue this run folder: finished stages whose inputs are unchanged are "
            "left alone; options given again replace the recorded ones."
        ),
    ] = None,
    from_stage: Annotated[
        str | None,
        typer.Option(
            help="With --resume, rerun this stage and every later one: validate, regimes, "
            "pretrain, train, rl_finetune, evaluate, report, promote, push."
        ),
    ] = None,
    push: Annotated[
        str | None,
        typer.Option(help="Copy the finished run folder to this fsspec URL (folder, s3://…)."),
    ] = None,
    watch: Annotated[
        Path | None,
        typer.Option(
            help="Watch this folder and run the pipeline on every new or changed SQLite dump "
            "landing in it (one run at a time; Ctrl-C stops)."
        ),
    ] = None,
) -> None:
    """Run validate → regimes → pretrain → train → RL fine-tune → evaluate → report →
    promote → push into OUTPUT_DIR/<UTC timestamp>/, one folder per stage, with a
    manifest.json of every stage's inputs (SHA-256), outputs, status and timings.

    The candidate is scored out of sample beside the baselines and the current champion
    on the same bars and costs; it becomes the champion (champion.json) only when the
    promotion rules pass. A killed run continues with --resume RUN_DIR.

    Example: plus-ultra retrain --dataset data/market.db --train-config
    configs/default_desktop.yaml --skip-pretraining

    Example: plus-ultra retrain --resume automation_runs/20250301T120000Z --from-stage evaluate
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..orchestration.pipeline import STAGES, run_retrain, watch_retrain

    given = {
        "dataset": dataset,
        "train_config": train_config,
        "pretrain_config": pretrain_config,
        "overrides": overrides,
        "run_reinforcement": run_reinforcement,
        "warm_start": warm_start,
        "regenerate_regimes": regenerate_regimes,
        "skip_pretraining": skip_pretraining,
        "skip_training": skip_training,
        "output_dir": output_dir,
        "push": push,
    }
    with user_errors():
        if watch is not None:
            console.print(f"watching {watch} for SQLite dumps (Ctrl-C stops)", highlight=False)
            watch_retrain(watch, given, on_result=_show)
            return
        with progress() as bar:
            task = bar.add_task("retrain", total=len(STAGES))

            def on_event(event: StageEvent) -> None:
                done = event.index + (event.status != "running")
                bar.update(task, description=f"{event.name}: {event.status}", completed=done)

            result = run_retrain(given, resume=resume, from_stage=from_stage, on_event=on_event)
    _show(result)


@app.command("rollback")
def rollback(
    output_dir: Annotated[
        Path, typer.Option(help="The retrain --output-dir holding champion.json.")
    ] = Path("automation_runs"),
) -> None:
    """Point champion.json back at the previous champion (the rolled-back one is kept).

    Example: plus-ultra retrain rollback --output-dir automation_runs
    """
    from ..orchestration.promotion import CHAMPION_FILE
    from ..orchestration.promotion import rollback as roll_back

    with user_errors():
        champion = roll_back(output_dir)
    out.print(f"champion is now {champion.run_dir} (checkpoint {champion.checkpoint})")
    wrote("champion file", output_dir / CHAMPION_FILE)
