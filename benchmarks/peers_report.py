"""The markdown report of ``benchmarks/peers.py``: machine, versions, settings, one table
per dataset (a row per model, then the ridge reference and, on the fixture, the oracle)."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from peers_runners import BATCH, ENCODER, HIDDEN, HORIZON, LEARNING_RATE

__all__ = ["hardware", "report", "versions"]

HERE = Path(__file__).resolve().parent


def versions() -> dict[str, str]:
    names = ["torch", "lightning", "pytorch-forecasting", "neuralforecast", "numpy", "pandas"]
    found = {"python": platform.python_version()}
    for name in [*names, "market-nn-plus-ultra"]:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    found["commit"] = commit.stdout.strip() or "unknown"
    return found


def hardware(threads: int, accelerator: str = "cpu") -> str:
    """CPU, cores, threads, RAM and (with ``accelerator=gpu``) the GPU; OS."""
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = "no GPU used"
    if accelerator == "gpu":
        import torch

        props = torch.cuda.get_device_properties(0)
        gpu = f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return (
        f"{cpu}, {psutil.cpu_count()} cores, "
        f"{threads} torch thread{'s' * (threads != 1)} per model, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}; "
        f"{platform.system()} {platform.release()}"
    )


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['label']} | failed: {r['error'][:160]} |" + " |" * 13
    wall = r["wall_s"] if r["wall_s"] > 0 else float("nan")
    e2e, targets = r["samples"] / wall, r["targets"] / wall
    cap = " (capped)" if r["capped"] else ""
    infer = r["predicted"] / r["predict_s"] if r["predict_s"] > 0 else float("nan")
    peak, grown = r["rss_peak_mib"], r["rss_peak_mib"] - r["rss_base_mib"]
    gpu = f"; GPU {r['gpu_peak_mib']:,.0f}" if r.get("gpu_peak_mib") else ""
    return (
        f"| {r['label']} | {r['parameters']:,} | {r['steps']}{cap} | {r['samples']:,} | "
        f"{r['setup_s']:.1f} | {r['train_s']:.1f} | {e2e:,.1f} | "
        f"{r['loop_samples_per_s']:,.1f} | {targets:,.0f} | {r['loop_targets_per_s']:,.0f} | "
        f"{infer:,.0f} | "
        f"{peak:,.0f} ({grown:+,.0f}){gpu} | {r.get('other_load_cores', float('nan')):.1f} | "
        f"{r.get('ic', float('nan')):.4f} | {r.get('mae_bps', float('nan')):.1f} |"
    )


def _dataset_section(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"### {s['dataset']}: {s['series']} series × {s['rows']:,} bars, {s['inputs']} inputs",
        "",
        f"Train window ends 127..{s['split']['train_last']} (about {s['train_windows']:,} "
        f"windows); test ends {s['split']['test_first']}..{s['split']['test_last']}, "
        f"scored on the {s['test_cells']:,} test cells every model predicted "
        f"(one standard error of an IC ≈ {1 / np.sqrt(max(s['test_cells'], 1)):.4f}).",
        "",
        "| model | parameters | steps | samples seen | setup s | train s | samples/s end to "
        "end | samples/s training loop | target windows/s end to end | target windows/s "
        "training loop | test windows/s | peak RSS MiB (Δ over start) | other jobs, cores "
        "| test IC | test MAE bps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(r) for r in s["models"]),
        f"| *ridge on the inputs at t (reference)* | | | | | | | | | | | | | "
        f"{s['ridge']['ic']:.4f} | {s['ridge']['mae_bps']:.1f} |",
    ]
    if "oracle_ic" in s:
        lines.append(
            f"| *oracle (the planted conditional mean)* | | | | | | | | | | | | | "
            f"{s['oracle_ic']:.4f} | |"
        )
        lines += [
            "",
            f"The last return alone ranks at an IC of {s['last_return_ic']:.4f} "
            "against the next (the planted lag-1 autocorrelation); the history of returns "
            "carries more, since each return loads on the persistent factor mix, which is "
            "what a returns-only model (PatchTST) can reach beyond it.",
        ]
    notes = [f"- {r['label']}: {r['note']}" for r in s["models"] if r.get("note")]
    return lines + (["", *notes] if notes else [])


def report(
    summaries: list[dict[str, Any]],
    args: Any,
    found: dict[str, str],
    warmup: int,
    date: str,
    machine: str,
) -> str:
    """The whole report: ``summaries`` from ``run_dataset``, ``args`` the parsed options,
    ``found`` the versions, ``machine`` the :func:`hardware` line."""
    versions = ", ".join(f"{k} {v}" for k, v in found.items())
    lines = [
        "# Peers: pytorch-forecasting and neuralforecast beside ours",
        "",
        f"Machine: {machine}. Date: {date}.",
        f"Versions: {versions}.",
        "",
        f"Every model: encoder {ENCODER} bars, horizon {HORIZON}, batch {BATCH}, hidden size "
        f"{HIDDEN}, 4 attention heads, dropout 0.1 (PatchTST: its own 0.2), MSE-type loss "
        f"(pytorch-forecasting: RMSE), learning rate {LEARNING_RATE:g}, gradient clip 1.0, "
        "our schedule warms up over 10% of the steps then decays (cosine), the peers keep "
        "their constant default; "
        f"{args.steps} optimiser steps of about {BATCH} target windows each (= "
        f"{args.steps * BATCH:,} target windows) or {args.max_seconds:g} s of wall clock, "
        "whichever comes first; data loading in the "
        "main process (no workers). pytorch-forecasting hidden_continuous_size = our "
        f"model.tft_variable_width = {args.variable_width}; neuralforecast's TFT embeds "
        f"each input at its hidden size ({HIDDEN}). hybrid_transformer: depth 2, ff × 4; "
        "PatchTST: 2 layers, patch 16, stride 8, returns only (it takes no exogenous inputs).",
        "A sample is one training window (a 128-bar input and its 5 targets) and supervises "
        "one target window; for the hybrid with every position supervised a sample is one "
        "sequence of training.sequence_length bars whose positions with "
        "training.min_context bars behind them are each a target window (a batch of 256 "
        "target windows is then round(256 / scored positions) sequences). End to end = from "
        "the frame "
        "handed to the library's loader to the last training step; the training-loop rate "
        f"leaves out the first {warmup} steps; test windows/s is the forecast of every test "
        "window (ours: the test epoch, best.ckpt reloaded). Peak RSS is the high-water mark "
        "of the model's own process up to the end of training (imports, data, model, "
        "training); Δ is its growth over the process after imports and the data frame. "
        "Other jobs share this machine: *other jobs, cores* is the CPU time the rest of "
        "the machine used while the model ran, in cores (0 = it had the machine to itself).",
    ]
    for s in summaries:
        lines += _dataset_section(s)
    return "\n".join(lines) + "\n"
