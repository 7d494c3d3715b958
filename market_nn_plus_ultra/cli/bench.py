"""``plus-ultra bench``: how fast a backbone trains on this machine, and the benchmark catalogue."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from .._io import write_json
from ..config import ModelConfig, PretrainingConfig, TrainingConfig
from ._common import (
    ConfigOption,
    SetOption,
    console,
    load,
    out,
    progress,
    user_errors,
    wrote,
)
from .bench_rl import rl_lift

if TYPE_CHECKING:
    from ..models.profiling import ProfileResult
    from ..orchestration.sweep import ComparisonResult, Scenario, SweepResult

# torch and Lightning load inside the commands, so `plus-ultra --help` stays fast.

app = typer.Typer(
    help="Benchmarks: training-step speed, memory and MFU; sweeps, the pretraining comparison "
    "and the RL lift.",
    no_args_is_help=True,
)

app.command("rl-lift")(rl_lift)

_MODEL = ModelConfig.model_fields


@app.command("profile")
def profile(
    architecture: Annotated[
        str | None, typer.Option("--architecture", help=_MODEL["architecture"].description)
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option("--seq-len", help="Steps per window (default: windows.window)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per step.")] = 32,
    d_model: Annotated[
        int | None, typer.Option("--d-model", help=_MODEL["d_model"].description)
    ] = None,
    depth: Annotated[int | None, typer.Option("--depth", help=_MODEL["depth"].description)] = None,
    features: Annotated[int, typer.Option("--features", help="Input features per step.")] = 64,
    steps: Annotated[int, typer.Option("--steps", help="Timed training steps.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first.")] = 3,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile", help="torch.compile the model (default: model.compile)."
        ),
    ] = None,
    checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--checkpointing/--no-checkpointing",
            help="Activation checkpointing (default: model.activation_checkpointing).",
        ),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option("--dtype", help="bf16 (autocast) or fp32; auto: bf16 on CUDA, fp32 on CPU."),
    ] = "auto",
    peak_tflops: Annotated[
        float | None,
        typer.Option("--peak-tflops", help="Peak TFLOP/s for MFU (default: measure a matmul)."),
    ] = None,
    measure_peak: Annotated[
        bool,
        typer.Option("--measure-peak/--no-measure-peak", help="Measure the matmul peak for MFU."),
    ] = True,
    json_out: Annotated[
        Path | None, typer.Option("--out", help="Also write the figures as JSON to this file.")
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Profile one training step (forward, backward, fused AdamW) of a backbone + head."""
    from ..models.profiling import profile_model

    with user_errors():
        flags = {
            "model.architecture": architecture,
            "model.d_model": d_model,
            "model.depth": depth,
            "model.activation_checkpointing": checkpointing,
        }
        cfg = load(config, overrides, **flags)
        result = profile_model(
            cfg.model,
            seq_len=seq_len if seq_len is not None else cfg.windows.window,
            batch_size=batch_size,
            n_features=features,
            steps=steps,
            warmup=warmup,
            device=device,
            dtype=dtype,
            compile=compile,
            peak_tflops=peak_tflops,
            measure_peak=measure_peak,
            on_stage=console.print,
        )
    out.print(_table(result, cfg.model))
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}", highlight=False)
    if json_out is not None:
        wrote("figures", write_json(json_out, result.as_dict()))


def _table(r: ProfileResult, cfg: ModelConfig) -> Table:
    table = Table(title=f"{r.architecture} training step", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("device / dtype", f"{r.device} / {r.dtype}"),
        ("compiled / checkpointing", f"{r.compiled} / {r.activation_checkpointing}"),
        ("d_model × depth", f"{cfg.d_model} × {cfg.depth}"),
        ("batch × seq_len × features", f"{r.batch_size} × {r.seq_len} × {r.n_features}"),
        ("parameters", f"{r.parameters:,}"),
        ("GFLOPs / sample", f"{r.flops_per_sample / 1e9:,.3f}"),
        ("ms / step", f"{r.seconds_per_step * 1e3:,.1f}"),
        ("samples / s", f"{r.samples_per_s:,.1f}"),
        ("achieved TFLOP/s", f"{r.achieved_tflops:,.4f}"),
        ("peak memory (MiB)", f"{r.peak_memory_mb:,.1f}"),
        ("peak TFLOP/s", "-" if r.peak_tflops is None else f"{r.peak_tflops:,.3f}"),
        ("MFU", "-" if r.mfu is None else f"{100 * r.mfu:.1f}%"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


# ------------------------------------------------------------------------------------------
# The benchmark catalogue: sweeps and the pretraining comparison (docs/benchmarks.md)
# ------------------------------------------------------------------------------------------

_TRAIN = TrainingConfig.model_fields
_LIST = "Comma list, or repeat the option."
CatalogueOption = Annotated[
    Path,
    typer.Option("--catalogue", help="Parquet catalogue the rows are appended to."),
]
LimitOption = Annotated[
    str | None,
    typer.Option("--limit-train-batches", help=_TRAIN["limit_train_batches"].description),
]
EpochsOption = Annotated[
    int | None, typer.Option("--max-epochs", help=_TRAIN["max_epochs"].description)
]
# nested progress bars clash: the sweep shows one bar over runs, Lightning none per run
_QUIET = ["training.progress_bar=false", "pretraining.progress_bar=false"]


def _budget(limit: str | None, max_epochs: int | None) -> dict[str, object]:
    from ..orchestration.sweep import parse_values

    return {
        "training.limit_train_batches": parse_values(limit)[0] if limit else None,
        "training.max_epochs": max_epochs,
    }


def _fmt(value: object, spec: str = ",.4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, int | float) else str(value)


_RAY = "With --engine ray only."


@app.command("sweep")
def sweep(
    architectures: Annotated[
        list[str] | None,
        typer.Option("--architectures", help=f"Backbones to train. {_LIST}"),
    ] = None,
    model_dims: Annotated[
        list[str] | None, typer.Option("--model-dims", help=f"model.d_model values. {_LIST}")
    ] = None,
    depths: Annotated[
        list[str] | None, typer.Option("--depths", help=f"model.depth values. {_LIST}")
    ] = None,
    horizons: Annotated[
        list[str] | None,
        typer.Option("--horizons", help=f"Horizons (model.horizon = windows.horizon). {_LIST}"),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="Any other config key to sweep, repeatable: KEY=V1,V2,…"),
    ] = None,
    limit_train_batches: LimitOption = None,
    max_epochs: EpochsOption = None,
    output: Annotated[
        Path, typer.Option("--output", help="Folder for each scenario's run.")
    ] = Path("outputs/sweeps"),
    catalogue: CatalogueOption = Path("benchmarks/catalogue.parquet"),
    engine: Annotated[
        Literal["sequential", "ray"],
        typer.Option(
            "--engine",
            help="sequential: one scenario after another in this process. ray: each scenario "
            "a Ray Tune trial, several at once, on this machine or a Ray cluster (pip install "
            "'market-nn-plus-ultra[distributed]'). Same catalogue rows either way.",
        ),
    ] = "sequential",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to join: auto (the one this machine is a node of, after `ray "
            f"start`) or the head's host:port; default: start a local Ray. {_RAY}",
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent",
            help=f"Trials at once (default: as many as the resources allow). {_RAY}",
        ),
    ] = None,
    cpus_per_trial: Annotated[
        float | None,
        typer.Option("--cpus-per-trial", help=f"CPUs each trial reserves [default: 1]. {_RAY}"),
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-trial",
            help=f"GPUs each trial reserves, fractions allowed [default: 0: CPU]. {_RAY}",
        ),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Train every combination of the swept values; append one catalogue row each.

    --engine sequential (the default) trains the scenarios one after another in this
    process. --engine ray runs each scenario as a Ray Tune trial, --max-concurrent at a
    time, each reserving --cpus-per-trial/--gpus-per-trial, on a local Ray or a cluster
    (--ray-address auto); this process appends each row as its trial ends. Both engines
    write the same rows and end with the deflated Sharpe ratio over the sweep.
    """
    from ..orchestration.sweep import expand_scenarios, parse_values

    ray_flags = {
        "--ray-address": ray_address,
        "--max-concurrent": max_concurrent,
        "--cpus-per-trial": cpus_per_trial,
        "--gpus-per-trial": gpus_per_trial,
    }
    with user_errors():
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if engine == "sequential" and given:
            raise ValueError(f"{', '.join(given)}: only for --engine ray — add --engine ray")
        runner = _sweep_runner(engine, ray_address, max_concurrent, cpus_per_trial, gpus_per_trial)
        cfg = load(
            config, [*_QUIET, *(overrides or [])], **_budget(limit_train_batches, max_epochs)
        )
        axes: dict[str, list] = {
            "architecture": parse_values(architectures),
            "d_model": parse_values(model_dims),
            "depth": parse_values(depths),
            "horizon": parse_values(horizons),
        }
        for item in grid or []:
            key, sep, values = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--grid {item!r}: expected KEY=V1,V2, e.g. training.seed=1,2")
            axes[key.strip()] = parse_values(values)
        scenarios = expand_scenarios(axes)
    where = "" if engine == "sequential" else f" with Ray ({ray_address or 'local'})"
    console.print(f"sweeping {len(scenarios)} scenario(s) on {cfg.data.sqlite_path}{where} …")
    with progress() as bar:
        task = bar.add_task("sweep", total=len(scenarios))
        running: dict[int, str] = {}  # the Ray engine runs several at once

        def started(i: int, scenario: Scenario) -> None:
            running[i] = scenario.slug
            bar.update(task, description=", ".join(running.values()))

        def done(i: int, scenario: Scenario, row: dict) -> None:
            running.pop(i, None)
            bar.update(task, advance=1, description=", ".join(running.values()) or "sweep")
            if row["status"] != "ok":
                console.print(f"[yellow]{scenario.slug} failed:[/] {row['error']}", highlight=False)

        with user_errors():
            result = runner(cfg, scenarios, output, catalogue, on_start=started, on_done=done)
    out.print(_sweep_table(result.rows))
    if result.failed:
        console.print(f"[yellow]{len(result.failed)} of {len(result.rows)} scenario(s) failed[/]")
    wrote("runs", result.output)
    wrote(f"catalogue ({len(result.rows)} row(s) appended)", result.catalogue_path)
    if len(result.failed) == len(result.rows):
        raise typer.Exit(1)


def _sweep_runner(
    engine: str,
    address: str | None,
    max_concurrent: int | None,
    cpus: float | None,
    gpus: float | None,
) -> Callable[..., SweepResult]:
    """``run_sweep``, or ``run_sweep_ray`` with its options (Ray imported only here)."""
    if engine == "sequential":
        from ..orchestration.sweep import run_sweep

        return run_sweep
    from ..orchestration.sweep_ray import RayOptions, run_sweep_ray

    options = RayOptions(
        address=address,
        max_concurrent=max_concurrent,
        cpus_per_trial=1.0 if cpus is None else cpus,
        gpus_per_trial=0.0 if gpus is None else gpus,
    )
    return functools.partial(run_sweep_ray, options=options)


def _sweep_table(rows: list[dict]) -> Table:
    trials = max((r["n_trials"] for r in rows if r.get("n_trials") is not None), default=0)
    table = Table(
        title=f"sweep — deflated Sharpe (DSR) over {trials} trial(s)",
        caption="DSR: P(true Sharpe > best expected from the trials by chance); PSR: P(> 0)",
        show_header=True,
    )
    columns = ("scenario", "status", "params", "samples/s", "val loss", "val IC", "test IC")
    for name in (*columns, "Sharpe", "PSR", "DSR", "trials", "ROI", "max DD", "s"):
        table.add_column(name, justify="left" if name in ("scenario", "status") else "right")
    for r in rows:
        table.add_row(
            r["scenario_id"].rsplit("/", 1)[-1],
            r["status"],
            _fmt(r.get("parameters"), ","),
            _fmt(r.get("samples_per_s"), ",.1f"),
            *(_fmt(r.get(k)) for k in ("val_loss", "val_ic", "test_ic", "sharpe")),
            *(_fmt(r.get(k), ".3f") for k in ("probabilistic_sharpe", "deflated_sharpe")),
            _fmt(r.get("n_trials"), ","),
            *(_fmt(r.get(k), ".2%") for k in ("roi", "max_drawdown")),
            _fmt(r.get("runtime_s"), ",.1f"),
        )
    return table


@app.command("pretraining-comparison")
def pretraining_comparison(
    objective: Annotated[
        str | None,
        typer.Option("--objective", help=PretrainingConfig.model_fields["objective"].description),
    ] = None,
    pretrain_epochs: Annotated[
        int | None,
        typer.Option(
            "--pretrain-epochs", help=PretrainingConfig.model_fields["max_epochs"].description
        ),
    ] = None,
    limit_train_batches: LimitOption = None,
    max_epochs: EpochsOption = None,
    output: Annotated[
        Path, typer.Option("--output", help="Folder for the pretraining and both runs.")
    ] = Path("outputs/sweeps"),
    catalogue: CatalogueOption = Path("benchmarks/catalogue.parquet"),
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Train from scratch and warm-started from a pretraining run (same seed, data, budget)."""
    from ..orchestration.sweep import run_pretraining_comparison

    with user_errors():
        flags = {
            **_budget(limit_train_batches, max_epochs),
            "pretraining.objective": objective,
            "pretraining.max_epochs": pretrain_epochs,
        }
        cfg = load(config, [*_QUIET, *(overrides or [])], **flags)
    console.print(f"comparing {cfg.pretraining.objective} pretraining on {cfg.data.sqlite_path} …")
    with progress() as bar:
        task = bar.add_task("compare", total=3)

        stage = iter(range(3))

        def step(label: str) -> None:
            if next(stage):  # each stage after the first closes the one before
                bar.advance(task)
            bar.update(task, description=label)

        with user_errors():
            result = run_pretraining_comparison(cfg, output, catalogue, step=step)
        bar.advance(task)
    out.print(_comparison_table(result))
    for row in (result.scratch, result.warm_start):
        if row["status"] != "ok":
            console.print(f"[yellow]{row['kind']} failed:[/] {row['error']}", highlight=False)
    wrote("runs", result.output)
    wrote(f"catalogue (comparison {result.comparison_id})", result.catalogue_path)
    if not result.ok:
        raise typer.Exit(1)


def _comparison_table(result: ComparisonResult) -> Table:
    from ..orchestration.sweep import COMPARED_METRICS

    table = Table(title="warm-started minus scratch", show_header=True)
    for name in ("figure", "scratch", "warm-started", "delta"):
        table.add_column(name, justify="left" if name == "figure" else "right")
    labels = {
        "val_loss": "val loss",
        "val_ic": "val IC",
        "test_ic": "test IC",
        "sharpe": "Sharpe (test backtest)",
        "runtime_s": "training time (s)",
    }
    for key in COMPARED_METRICS:
        a, b = result.scratch.get(key), result.warm_start.get(key)
        table.add_row(labels.get(key, key), _fmt(a), _fmt(b), _fmt(result.deltas[key], "+,.4f"))
    table.add_row("pretraining time (s)", "", _fmt(result.warm_start.get("pretrain_s")), "")
    return table


# ------------------------------------------------------------------------------------------
# Loss landscape of a trained run (docs/diagnostics.md, "Loss landscape")
# ------------------------------------------------------------------------------------------


@app.command("landscape")
def landscape(
    run: Annotated[Path, typer.Argument(help="Run folder of `plus-ultra train` (or a .ckpt).")],
    points: Annotated[
        int, typer.Option("--points", help="Points on the 1-D line, α ∈ [-1, 1].")
    ] = 21,
    plane_points: Annotated[
        int,
        typer.Option("--plane-points", help="Points per side of the 2-D plane (0: no plane)."),
    ] = 11,
    batches: Annotated[
        int, typer.Option("--batches", help="Validation batches the loss averages over.")
    ] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the two random directions.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda:0.")] = "cpu",
) -> None:
    """Validation loss on a line and a plane through the trained weights (Li et al., 2018)."""
    from ..training.landscape import loss_landscape

    total = points + plane_points * plane_points
    with progress() as bar:
        task = bar.add_task("landscape", total=total)
        with user_errors():
            result = loss_landscape(
                run,
                points=points,
                plane_points=plane_points,
                batches=batches,
                seed=seed,
                device=device,
                on_point=lambda done, _: bar.update(task, completed=done),
            )
    console.print(
        f"loss at θ {result.center_loss:.6g} over {result.windows} validation windows "
        f"({result.batches} batch(es)); line {result.line_min:.6g}..{result.line_max:.6g}, "
        f"plane {result.plane_min:.6g}..{result.plane_max:.6g}",
        highlight=False,
    )
    wrote("grid", result.parquet_path)
    wrote("figure", result.html_path)
