"""Benchmark: training-step speed, memory and MFU of every backbone beside a plain transformer.

Each registered backbone (with the ``regression`` head) and a reference
plain-PyTorch pre-norm ``nn.TransformerEncoder`` of the same width, depth, heads and
feed-forward multiple (causal SDPA attention, GELU MLP) run the same training step —
forward, loss, backward, fused AdamW — under bf16 autocast on a GPU, eager and with
``torch.compile``, in one run. Figures: parameters, GFLOPs per sample (3 × the forward
matmul FLOPs, the convention of :func:`market_nn_plus_ultra.models.estimate_flops`),
samples/s, achieved TFLOP/s, peak memory and MFU against a matmul peak measured on the
same device in the same dtype.

On a GPU the default is the default model config (d_model 512, depth 16, 8 heads) at
sequence length 512:

    python benchmarks/backbones.py --device cuda

On CPU the default is a small config (d_model 64, depth 2, sequence 128, batch 8, eager
only), and the report says so:

    python benchmarks/backbones.py --device cpu

Writes ``benchmarks/results/backbones.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import BACKBONES, build_model, count_parameters, estimate_flops
from market_nn_plus_ultra.models.profiling import (
    ProfileResult,
    measure_matmul_peak,
    model_loss,
    resolve_device,
    summarise,
    time_training_step,
)

HERE = Path(__file__).resolve().parent
REFERENCE = "reference_transformer"
_SMALL_CPU = {"d_model": 64, "depth": 2, "n_heads": 4, "seq_len": 128, "batch_size": 8}
_GPU = {"seq_len": 512, "batch_size": 32}


class ReferenceTransformer(nn.Module):
    """``Linear(F→D)`` → pre-norm ``nn.TransformerEncoder`` (causal) → norm → ``Linear(D→H)``.

    What a careful engineer would write with PyTorch's own layers: ``norm_first=True``,
    ``batch_first=True``, GELU feed-forward of ``ff_mult·D``, and ``is_causal=True`` so
    ``nn.MultiheadAttention`` hands the causal mask to ``scaled_dot_product_attention``
    as the flash-kernel hint instead of a dense mask.
    """

    def __init__(self, cfg: ModelConfig, n_features: int) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            dim_feedforward=cfg.ff_mult * cfg.d_model,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.horizon)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)  # (T, T)
        h = self.encoder(self.embed(x), mask=mask, is_causal=True)  # (B, T, D)
        return self.out(self.norm(h[:, -1]))  # (B, H)


def _reference_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(model(x).float() / 0.01, y / 0.01)  # in units of a 1% return


def _reference_flops(model: nn.Module, cfg: ModelConfig, seq_len: int) -> float:
    """The convention of ``estimate_flops``: 3 × forward matmul FLOPs (forward + backward).

    Forward: ``2 · matmul weights · T`` (every weight with two or more dimensions sees all
    T tokens) plus ``4 · D · T²`` per attention layer (scores and the weighted sum).
    """
    weights = sum(p.numel() for p in model.parameters() if p.ndim >= 2)
    forward = 2 * weights * seq_len + 4 * cfg.depth * cfg.d_model * seq_len * seq_len
    return float(3 * forward)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # fresh compile caches: one model's guards never hit another


def run_one(
    name: str, cfg: ModelConfig, args: argparse.Namespace, compiled: bool, peak: float
) -> ProfileResult:
    """Profile one model in one mode (eager or compiled)."""
    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, args.seq_len, args.features, generator=gen)  # (B, T, F)
    y = 0.01 * torch.randn(args.batch_size, cfg.horizon, generator=gen)  # (B, H)
    built: list[nn.Module] = []

    def build() -> nn.Module:
        torch.manual_seed(0)
        if name == REFERENCE:
            built.append(ReferenceTransformer(cfg, args.features))
        else:
            built.append(build_model(cfg.model_copy(update={"architecture": name}), args.features))
        return built[-1]

    _release(device)
    timing = time_training_step(
        build,
        _reference_loss if name == REFERENCE else model_loss,
        x,
        y,
        device=device,
        dtype=args.dtype,
        compile=compiled,
        steps=args.steps,
        warmup=args.warmup,
    )
    model = built[-1]
    if name == REFERENCE:
        flops = _reference_flops(model, cfg, args.seq_len)
    else:
        flops = estimate_flops(
            cfg.model_copy(update={"architecture": name}), args.features, args.seq_len
        )
    result = summarise(
        name,
        timing,
        parameters=count_parameters(model),
        flops_per_sample=flops,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        n_features=args.features,
        device=device,
        dtype=args.dtype,
        peak_tflops=peak,
    )
    built.clear()
    return result


def _hardware(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    text = (
        f"CPU: {cpu}, {psutil.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB RAM"
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += (
            f"; GPU: {props.name}, {props.total_memory / 1024**3:.0f} GiB, CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    return (
        f"{text}. Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}. Date: {time.strftime('%Y-%m-%d')}."
    )


def report(results: list[ProfileResult], cfg: ModelConfig, args, peak: float, small: bool) -> str:
    device = resolve_device(args.device)
    lines = [
        "# Backbone training-step benchmark",
        "",
        f"Config: d_model {cfg.d_model}, depth {cfg.depth}, {cfg.n_heads} heads, ff_mult "
        f"{cfg.ff_mult}, batch {args.batch_size} × sequence {args.seq_len} × {args.features} "
        f"features, {args.dtype}{' autocast' if args.dtype == 'bf16' else ''} on {device}; "
        f"{args.steps} timed steps after {args.warmup} warm-up; fused AdamW; regression head.",
        f"Machine: {_hardware(device)}",
        f"Measured {args.dtype} matmul peak: {peak:.3g} TFLOP/s (MFU is against this).",
        f"temporal_fusion's width is model.tft_hidden ({cfg.tft_hidden}), not d_model, as in "
        "the TFT paper; its per-variable GRNs make its size grow with the feature count.",
    ]
    if small:
        lines.append(
            "**CPU run with a small config** (no GPU here): the figures show the relative cost "
            "of the backbones, not their GPU throughput. Run on a GPU for the real numbers."
        )
    if device.type == "cpu":
        lines.append(
            "CPU peak memory is the process's resident-set high-water mark above its level "
            "before the model was built (weights, gradients, AdamW state, activations)."
        )
    lines += [
        "",
        "| model | mode | parameters | GFLOPs/sample | ms/step | samples/s | TFLOP/s | "
        "peak MiB | MFU | vs reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = {r.compiled: r.samples_per_s for r in results if r.architecture == REFERENCE}
    for r in results:
        ref = reference.get(r.compiled)
        mode = "compiled" if r.compiled else "eager"
        lines.append(
            f"| {r.architecture} | {mode} | {r.parameters:,} | {r.flops_per_sample / 1e9:,.2f} | "
            f"{r.seconds_per_step * 1e3:,.1f} | {r.samples_per_s:,.1f} | {r.achieved_tflops:.3g} | "
            f"{r.peak_memory_mb:,.0f} | {100 * (r.mfu or 0):.1f}% | "
            f"{f'{r.samples_per_s / ref:.2f}×' if ref else '-'} |"
        )
    notes = [f"- {r.architecture}: {r.note}" for r in results if r.note]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--n-heads", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    parser.add_argument(
        "--modes", default=None, help="eager,compiled (default) or one of them; CPU: eager."
    )
    parser.add_argument(
        "--models",
        default=",".join([*sorted(BACKBONES), REFERENCE]),
        help="Comma-separated backbones (and reference_transformer) to run.",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "backbones.md")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    device = resolve_device(args.device)
    args.device = str(device)
    on_cpu = device.type == "cpu"
    sizes = _SMALL_CPU if on_cpu else _GPU
    small = on_cpu and args.d_model is None and args.depth is None
    for key, value in sizes.items():
        if getattr(args, key, None) is None and (small or key in ("seq_len", "batch_size")):
            setattr(args, key, value)
    args.dtype = args.dtype or ("fp32" if on_cpu else "bf16")
    modes = (args.modes or ("eager" if on_cpu else "eager,compiled")).split(",")
    if set(modes) - {"eager", "compiled"}:
        raise SystemExit(f"--modes {args.modes!r}: use eager, compiled or eager,compiled")
    overrides = {k: getattr(args, k) for k in ("d_model", "depth", "n_heads") if getattr(args, k)}
    cfg = ModelConfig(head="regression", **overrides)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(BACKBONES) - {REFERENCE})
    if unknown:
        raise SystemExit(
            f"--models: unknown {unknown}; choose from {sorted(BACKBONES)} or {REFERENCE}"
        )
    if on_cpu:
        torch.set_num_threads(max(1, min(psutil.cpu_count() or 1, torch.get_num_threads())))
    peak = measure_matmul_peak(device, args.dtype)
    print(f"{args.dtype} matmul peak on {device}: {peak:.3f} TFLOP/s")
    results = []
    for mode in modes:
        for name in names:
            r = run_one(name, cfg, args, mode == "compiled", peak)
            print(
                f"{name:24s} {mode:8s} {r.samples_per_s:10.1f} samples/s "
                f"{r.peak_memory_mb:9.0f} MiB  MFU {100 * (r.mfu or 0):5.1f}%"
            )
            results.append(r)
    text = report(results, cfg, args, peak, small)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps([r.as_dict() for r in results], indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
