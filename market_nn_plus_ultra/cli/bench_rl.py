"""``plus-ultra bench rl-lift``: PPO fine-tune vs the supervised policy, out of sample."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import ConfigOption, SetOption, console, load, out, progress, user_errors, wrote

if TYPE_CHECKING:
    from ..orchestration.rl_lift import RLLiftResult

_QUIET = ["training.progress_bar=false"]


def rl_lift(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="The supervised `plus-ultra train` run to fine-tune (its folder or a .ckpt).",
        ),
    ],
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="PPO fine-tunes per fold, each its own seed.")
    ] = 3,
    output: Annotated[
        Path, typer.Option("--output", help="Folder for the fold runs and the lift table.")
    ] = Path("outputs/rl_lift"),
    catalogue: Annotated[
        Path, typer.Option("--catalogue", help="Parquet catalogue the rows are appended to.")
    ] = Path("benchmarks/catalogue.parquet"),
    device: Annotated[
        str, typer.Option("--device", help="Device of the fine-tunes: cpu, cuda:0, …")
    ] = "cpu",
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Does PPO fine-tuning beat the supervised policy it starts from, on unseen bars?

    On the purged walk-forward folds of the database (evaluation.train_window /
    test_window / step), fine-tunes the supervised model on each fold's past only, then
    scores the supervised policy, each fine-tune and buy-and-hold on the fold's test bars
    with the same costs. Prints Sharpe(fine-tune) − Sharpe(supervised) with a paired
    stationary-bootstrap interval per seed and pooled over the seeds, and appends the
    rows to the catalogue. An interval that covers 0 is no evidence of a lift.

    Example: plus-ultra bench rl-lift --config configs/default_desktop.yaml --checkpoint
    outputs/desktop --seeds 3
    """
    from ..orchestration.rl_lift import run_rl_lift

    with user_errors():
        cfg = load(config, [*_QUIET, *(overrides or [])])
    console.print(f"RL lift on {cfg.data.sqlite_path} from {checkpoint} …")
    with progress() as bar:
        task = bar.add_task("rl-lift", total=None)
        with user_errors():
            result = run_rl_lift(
                cfg,
                checkpoint,
                output,
                seeds=seeds,
                catalogue=catalogue,
                device=device,
                on_step=lambda message: bar.update(task, description=message),
            )
    out.print(_table(result))
    pooled = result.pooled
    verdict = (
        "a lift"
        if pooled["delta_low"] > 0
        else "a loss"
        if pooled["delta_high"] < 0
        else "no evidence of a lift or a loss"
    )
    out.print(
        f"pooled Sharpe difference {pooled['delta_sharpe']:+.3f} "
        f"[{pooled['delta_low']:+.3f}, {pooled['delta_high']:+.3f}] at "
        f"{result.level:.0%}: {verdict} ({result.cost}; {int(pooled['n_bars'])} test bars "
        f"over {len(result.folds)} folds)"
    )
    wrote("lift table", result.output / "lift.parquet")
    wrote("fold runs", result.output)
    if result.catalogue_path is not None:
        wrote(f"catalogue (comparison {result.lift_id})", result.catalogue_path)


def _table(result: RLLiftResult) -> Table:
    table = Table(title="PPO fine-tune minus supervised, out of sample", show_header=True)
    headers = ("seed", "bars", "supervised", "fine-tune", "buy & hold", "Δ Sharpe", "interval")
    for name in headers:
        table.add_column(name, justify="left" if name == "seed" else "right")
    for row in result.table.to_dict(orient="records"):
        table.add_row(
            str(row["seed"]),
            f"{int(row['n_bars']):,}",
            f"{row['supervised_sharpe']:.3f}",
            f"{row['finetune_sharpe']:.3f}",
            f"{row['buy_and_hold_sharpe']:.3f}",
            f"{row['delta_sharpe']:+.3f}",
            f"[{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]",
        )
    return table
