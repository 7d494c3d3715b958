"""Benchmark: memory and speed of zero-copy sliding windows over large market tensors.

Builds ``--symbols`` × ``--rows`` × ``--features`` float32 tensors (10 × 1,000,000 × 64 =
2.56 GB of inputs by default) and measures the process's resident memory (RSS) before and
after building a :class:`SlidingWindowDataset` over them and gathering ``--batches``
shuffled batches. The dataset must add less than 10% over the tensors, where a
materialised ``[N, W, F]`` copy of the windows would need ``W`` times the tensors.
Then the same tensors are written to the memory-mapped cache and streamed from disk:
there the process's anonymous memory (what it owns, as opposed to reclaimable page
cache) stays near the batch size.

    python benchmarks/windows_memory.py --symbols 10 --rows 1000000 --features 64

Writes ``benchmarks/results/windows_memory.md``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

from market_nn_plus_ultra.windows import MarketTensors, SlidingWindowDataset

HERE = Path(__file__).resolve().parent
MB = 1024**2


def _memory() -> dict[str, float]:
    """RSS, and its anonymous / file-backed parts where Linux reports them (MiB)."""
    out = {"rss": psutil.Process().memory_info().rss / MB}
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key[3:].lower()] = int(value.split()[0]) / 1024
    return out


def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM); False where unsupported.

    Linux resets it on ``echo 5 > /proc/self/clear_refs``, so the next VmHWM read is the
    exact peak since now — every transient batch buffer included, not only what a
    periodic RSS sample happened to catch.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _peak_rss() is not None


def _peak_rss() -> float | None:
    """VmHWM (MiB): the highest RSS since the process started or the last reset."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def make_tensors(n_rows: int, n_symbols: int, n_features: int, horizon: int) -> MarketTensors:
    """Random tensors filled in row chunks, so no float64 staging copy is ever made."""
    rng = np.random.default_rng(0)
    inputs = np.empty((n_rows, n_symbols, n_features), dtype=np.float32)
    targets = np.empty((n_rows, n_symbols, horizon), dtype=np.float32)
    chunk = 50_000
    for lo in range(0, n_rows, chunk):  # chunks of rows keep the generator's scratch small
        rng.standard_normal(out=inputs[lo : lo + chunk], dtype=np.float32)
        rng.standard_normal(out=targets[lo : lo + chunk], dtype=np.float32)
    targets *= 0.01
    target_mask = np.ones((n_rows, n_symbols, horizon), dtype=bool)
    target_mask[-horizon:] = False
    mask = np.ones((n_rows, n_symbols), dtype=bool)
    mask[:20] = False  # a feature warm-up
    return MarketTensors(
        inputs=inputs,
        targets=targets,
        mask=mask,
        target_mask=target_mask,
        present=np.ones((n_rows, n_symbols), dtype=bool),
        timestamps=pd.date_range("2000-01-01", periods=n_rows, freq="min", tz="UTC"),
        symbols=[f"S{i:03d}" for i in range(n_symbols)],
        feature_names=[f"f{i}" for i in range(n_features)],
    )


def iterate(ds: SlidingWindowDataset, n_batches: int, batch_size: int) -> dict[str, float]:
    """Gather shuffled batches; return the time and the highest memory seen meanwhile."""
    rng = np.random.default_rng(1)
    peak = _memory()
    start = time.perf_counter()
    checksum = 0.0
    for i in range(n_batches):
        batch = ds.batch(rng.integers(0, len(ds), batch_size))
        checksum += float(batch["x"][:, -1, 0].sum())  # touch the data
        if i % 50 == 0:
            now = _memory()
            peak = {k: max(peak.get(k, 0.0), v) for k, v in now.items()}
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "windows_per_s": n_batches * batch_size / seconds,
        **{f"peak_{k}": v for k, v in peak.items()},
        "checksum": checksum,
    }


def run(args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, float]]], dict[str, float]]:
    phases: list[tuple[str, dict[str, float]]] = [("start (imports)", _memory())]
    t0 = time.perf_counter()
    tensors = make_tensors(args.rows, args.symbols, args.features, args.horizon)
    build_s = time.perf_counter() - t0
    gc.collect()
    phases.append(("tensors built", _memory()))
    exact = reset_peak()  # the peak below then covers only the dataset and its batches
    t0 = time.perf_counter()
    ds = SlidingWindowDataset(tensors, args.window, normalise="window_zscore")
    ds_s = time.perf_counter() - t0
    phases.append(("dataset built", _memory()))
    build_peak = (_peak_rss() if exact else None) or phases[-1][1]["rss"]
    exact = exact and reset_peak()  # separately: the peak while gathering batches
    stats = iterate(ds, args.batches, args.batch_size)
    phases.append((f"after {args.batches} batches", _memory()))
    base = phases[1][1]["rss"]
    iterate_peak = max(stats["peak_rss"], phases[-1][1]["rss"])
    if exact:
        iterate_peak = max(iterate_peak, _peak_rss() or 0.0)
    peak_rss = max(build_peak, iterate_peak)
    result = {
        "tensor_mb": tensors.nbytes / MB,
        "inputs_mb": tensors.inputs.nbytes / MB,
        "windows": len(ds),
        "index_mb": ds.nbytes / MB,
        "materialised_gb": len(ds) * args.window * args.features * 4 / 1024**3,
        "overhead_mb": peak_rss - base,
        "build_overhead_mb": build_peak - base,
        "iterate_overhead_mb": iterate_peak - base,
        "peak_exact": float(exact),
        "build_s": build_s,
        "dataset_s": ds_s,
        **{f"mem_{k}": v for k, v in stats.items()},
    }
    result["overhead_pct"] = 100 * result["overhead_mb"] / result["tensor_mb"]

    if args.memmap:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            t0 = time.perf_counter()
            mapped = tensors.to_memmap(Path(tmp) / "tensors")
            result["memmap_write_s"] = time.perf_counter() - t0
            del ds, tensors
            gc.collect()
            phases.append(("in-memory tensors freed, memmap opened", _memory()))
            ds = SlidingWindowDataset(mapped, args.window, normalise="window_zscore")
            phases.append(("memmap dataset built", _memory()))
            mm = iterate(ds, args.batches, args.batch_size)
            phases.append((f"memmap: after {args.batches} batches", _memory()))
            result.update({f"mm_{k}": v for k, v in mm.items()})
            del ds, mapped
            gc.collect()
    return phases, result


def report(args: argparse.Namespace, phases, result: dict[str, float]) -> str:
    ok = result["overhead_pct"] < 10.0
    peak_kind = (
        "kernel high-water mark VmHWM, reset after the tensors were built"
        if result["peak_exact"]
        else "RSS sampled every 50 batches"
    )
    cpu = platform.processor() or platform.machine()
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = [
        "# Sliding-window memory benchmark",
        "",
        f"Tensors: {args.symbols} symbols × {args.rows:,} rows × {args.features} features float32 "
        f"(inputs {result['inputs_mb'] / 1024:.2f} GiB; with targets H={args.horizon} and masks "
        f"{result['tensor_mb'] / 1024:.2f} GiB). Window W={args.window}, window z-score, "
        f"{args.batches:,} shuffled batches of {args.batch_size}.",
        f"Machine: {cpu}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.1f} GiB RAM, "
        f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| phase | RSS (MiB) | anonymous (MiB) | file-backed (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, mem in phases:
        lines.append(
            f"| {name} | {mem['rss']:,.0f} | {mem.get('anon', float('nan')):,.0f} | "
            f"{mem.get('file', float('nan')):,.0f} |"
        )
    lines += [
        "",
        f"- Windows: {result['windows']:,}; the dataset's index arrays: {result['index_mb']:,.1f} MiB "
        f"(a materialised [N, W, F] copy would need {result['materialised_gb']:,.0f} GiB).",
        f"- Memory the dataset adds over the tensors (peak RSS while building it and iterating "
        f"− RSS after the tensors; peak = {peak_kind}): "
        f"**{result['overhead_mb']:,.0f} MiB = {result['overhead_pct']:.1f}%** of the tensors "
        f"({'PASS' if ok else 'FAIL'}: limit 10%); building the index peaks at "
        f"{result['build_overhead_mb']:,.0f} MiB, gathering batches at "
        f"{result['iterate_overhead_mb']:,.0f} MiB.",
        f"- In memory: {result['mem_windows_per_s']:,.0f} windows/s "
        f"({result['mem_seconds']:.1f} s for {args.batches:,} batches); dataset built in "
        f"{result['dataset_s']:.2f} s.",
    ]
    if "mm_seconds" in result:
        lines += [
            f"- Memory-mapped (cache written in {result['memmap_write_s']:.1f} s): "
            f"{result['mm_windows_per_s']:,.0f} windows/s; peak anonymous memory while iterating "
            f"{result.get('mm_peak_anon', float('nan')):,.0f} MiB, peak file-backed "
            f"(reclaimable page cache mapped in) {result.get('mm_peak_file', float('nan')):,.0f} MiB.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-memmap", dest="memmap", action="store_false")
    parser.add_argument(
        "--tmp", default=None, help="Folder for the memmap cache (default: system temp)."
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "windows_memory.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, psutil.cpu_count() or 1)))
    phases, result = run(args)
    text = report(args, phases, result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    if result["overhead_pct"] >= 10.0:
        raise SystemExit("the dataset added more than 10% over the tensors")


if __name__ == "__main__":
    main()
