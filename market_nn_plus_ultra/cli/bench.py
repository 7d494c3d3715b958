"""``plus-ultra bench``: how fast a backbone trains on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..config import ModelConfig
from ..models.profiling import (
    ProfileResult,
    measure_matmul_peak,
    profile_backbone,
    with_peak,
)
from ._common import ConfigOption, SetOption, console, load, out, user_errors, wrote

app = typer.Typer(help="Benchmarks: training-step speed, memory and MFU.", no_args_is_help=True)

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
    with user_errors():
        if dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"--dtype {dtype!r}: use bf16, fp32 or auto")
        cfg = load(
            config,
            overrides,
            **{
                "model.architecture": architecture,
                "model.d_model": d_model,
                "model.depth": depth,
                "model.activation_checkpointing": checkpointing,
            },
        )
        window = seq_len if seq_len is not None else cfg.windows.window
        console.print(
            f"profiling {cfg.model.architecture}: {steps} steps of {batch_size} × {window} × "
            f"{features} after {warmup} warm-up steps …"
        )
        result = profile_backbone(
            cfg.model,
            seq_len=window,
            batch_size=batch_size,
            n_features=features,
            steps=steps,
            warmup=warmup,
            device=device,
            dtype=dtype,  # type: ignore[arg-type]
            compile=compile,
            peak_tflops=peak_tflops,
        )
        if result.peak_tflops is None and measure_peak:
            console.print(f"measuring the {result.dtype} matmul peak on {result.device} …")
            peak = measure_matmul_peak(result.device, result.dtype)  # type: ignore[arg-type]
            result = with_peak(result, peak)
    out.print(_table(result, cfg.model))
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}", highlight=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        wrote("figures", json_out)


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
