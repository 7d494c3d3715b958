"""Benchmark: the execution simulator on ``[B, T, S]`` scenario batches (CPU or GPU).

Times :func:`simulate_execution` on random targets and returns for two configs:

- ``convention``: commission only — fully vectorised, no loop over time;
- ``full``: commission, fixed cost, spread, square-root impact, participation-capped
  partial fills (the loop over T), two latency buckets, borrow and a gross cap.

    python benchmarks/execution.py --scenarios 1000 --bars 2520 --symbols 10 --repeats 3

Writes ``benchmarks/results/execution.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.simulation.execution import simulate_execution

HERE = Path(__file__).resolve().parent

CONFIGS = {
    "convention": SimulationConfig(cost_bps=5.0),
    "full": SimulationConfig(
        cost_bps=5.0,
        fixed_cost=1.0,
        half_spread_bps=2.0,
        impact_coef=0.5,
        participation_cap=0.1,
        latency_bars=[0, 1],
        latency_probs=[0.7, 0.3],
        borrow_bps=50.0,
        max_gross=0.8,
    ),
}


def _inputs(b: int, t: int, s: int, device: torch.device, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(b, t, s, generator=gen, dtype=dtype) * 2 - 1
    returns = torch.randn(b, t, s, generator=gen, dtype=dtype) / 100
    volume = torch.rand(b, t, s, generator=gen, dtype=dtype) * 1e7 + 1e6
    return {
        "targets": targets.to(device),
        "returns": returns.to(device),
        "volatility": torch.full_like(returns, 0.01).to(device),
        "dollar_volume": volume.to(device),
        "adv": volume.to(device),
    }


def _time(cfg: SimulationConfig, inputs: dict, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run warms allocators and kernels
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        simulate_execution(**inputs, cfg=cfg, generator=torch.Generator().manual_seed(1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "execution.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    inputs = _inputs(args.scenarios, args.bars, args.symbols, device, dtype)
    shape = f"{args.scenarios} × {args.bars} × {args.symbols}"
    lines = [
        "# Execution simulator (`benchmarks/execution.py`)",
        "",
        f"[B, T, S] = {shape}, {args.dtype}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.repeats} runs after one warm-up.",
        "",
        "| config | seconds | scenario-bars / s |",
        "|---|---:|---:|",
    ]
    for name, cfg in CONFIGS.items():
        seconds = _time(cfg, inputs, args.repeats, device)
        rate = args.scenarios * args.bars / seconds
        lines.append(f"| {name} | {seconds:.3f} | {rate:,.0f} |")
        print(f"{name}: {seconds:.3f} s ({rate:,.0f} scenario-bars/s)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
