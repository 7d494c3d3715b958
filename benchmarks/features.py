"""Benchmark: the feature pipeline side by side with TA-Lib and ``ta``, in the same run.

Builds a panel of ``--symbols`` × ``--rows`` one-minute GBM bars (24/7, so the calendar
features run too) and times, as the median of ``--repeats`` runs:

- per indicator, the computation over every symbol's contiguous block: ours (the
  registered feature function), TA-Lib (``RSI``, ``MACD``, ``BBANDS``, ``ATR``) and ``ta``
  (``RSIIndicator``, ``MACD``, ``BollingerBands``, ``AverageTrueRange``);
- ``FeaturePipeline.transform_panel`` end to end (reorder to symbol-major, compute,
  scatter back, assemble the DataFrame) for each indicator, for the four TA-Lib
  indicators together, and for the whole default set.

    python benchmarks/features.py --symbols 10 --rows 200000 --repeats 5 [--threads N]

Prints a markdown table and writes ``benchmarks/results/features.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from market_nn_plus_ultra.features import REGISTRY, FeaturePipeline

HERE = Path(__file__).resolve().parent
# Feature groups TA-Lib also computes (RSI, MACD, BBANDS, ATR).
_GROUPS = ("rsi_14", "macd", "bb_width_20", "atr_14")


def build_panel(n_symbols: int, n_rows: int, seed: int = 0) -> pd.DataFrame:
    """(timestamp, symbol)-sorted panel of GBM OHLCV bars, one-minute spacing."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2020-01-01", periods=n_rows, freq="min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (n_rows, n_symbols)), axis=0))
    opn = close * (1 + rng.normal(0, 2e-4, close.shape))
    high = np.maximum(opn, close) * (1 + rng.uniform(0, 1e-3, close.shape))
    low = np.minimum(opn, close) * (1 - rng.uniform(0, 1e-3, close.shape))
    volume = rng.integers(100, 10_000, close.shape).astype(float)
    index = pd.MultiIndex.from_product(
        [stamps, [f"SYM{i:02d}" for i in range(n_symbols)]], names=["timestamp", "symbol"]
    )
    columns = {"open": opn, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame({k: v.ravel() for k, v in columns.items()}, index=index)


def _blocks(panel: pd.DataFrame) -> list[dict[str, np.ndarray]]:
    """Each symbol's contiguous float64 arrays (what both sides compute on)."""
    return [
        {c: np.ascontiguousarray(g[c].to_numpy(np.float64)) for c in ("high", "low", "close")}
        for _, g in panel.groupby(level="symbol", sort=True)
    ]


def _median_ms(fn: Callable[[], object], repeats: int, *, warm: bool = True) -> float:
    if warm:
        fn()  # warm caches and imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _ours(group: str) -> Callable[[dict[str, np.ndarray]], object]:
    spec = REGISTRY.get(group)
    return lambda b: spec.compute([b[c] for c in spec.inputs], spec.params)


def _talib(group: str) -> Callable[[dict[str, np.ndarray]], object]:
    import talib

    calls = {
        "rsi_14": lambda b: talib.RSI(b["close"], 14),
        "macd": lambda b: talib.MACD(b["close"], 12, 26, 9),
        "bb_width_20": lambda b: talib.BBANDS(b["close"], 20, 2.0, 2.0, 0),
        "atr_14": lambda b: talib.ATR(b["high"], b["low"], b["close"], 14),
    }
    return calls[group]


def _ta(group: str) -> Callable[[dict[str, np.ndarray]], object]:
    from ta.momentum import RSIIndicator
    from ta.trend import MACD
    from ta.volatility import AverageTrueRange, BollingerBands

    def frame(b: dict[str, np.ndarray]) -> dict[str, pd.Series]:
        return {k: pd.Series(v) for k, v in b.items()}

    calls = {
        "rsi_14": lambda b: RSIIndicator(frame(b)["close"], 14).rsi(),
        "macd": lambda b: MACD(frame(b)["close"], 26, 12, 9).macd_diff(),
        "bb_width_20": lambda b: BollingerBands(frame(b)["close"], 20, 2).bollinger_wband(),
        "atr_14": lambda b: AverageTrueRange(**frame(b), window=14).average_true_range(),
    }
    return calls[group]


def _over_blocks(fn: Callable[[dict[str, np.ndarray]], object], blocks: list) -> Callable:
    return lambda: [fn(b) for b in blocks]


def machine_info() -> str:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import scipy
    import talib

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"CPU: {model}, {os.cpu_count()} cores (load average {load} at the end of the run); "
        f"Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, pandas {pd.__version__}, "
        f"TA-Lib {talib.__version__}"
    )


def _pipeline_ms(panel: pd.DataFrame, names: list[str] | None, threads: int, repeats: int) -> float:
    pipeline = FeaturePipeline(names=names, threads=threads)
    return _median_ms(lambda: pipeline.transform_panel(panel), repeats)


def run(n_symbols: int, n_rows: int, repeats: int, ta_repeats: int, threads: int) -> str:
    """Time everything on one panel; returns the markdown report."""
    panel = build_panel(n_symbols, n_rows)
    blocks = _blocks(panel)
    rows = []
    for group in _GROUPS:
        ours = _median_ms(_over_blocks(_ours(group), blocks), repeats)
        ref = _median_ms(_over_blocks(_talib(group), blocks), repeats)
        ta_ms = _median_ms(_over_blocks(_ta(group), blocks), ta_repeats, warm=False)
        pipe1 = _pipeline_ms(panel, [group], 1, repeats)
        pipe_n = _pipeline_ms(panel, [group], threads, repeats)
        rows.append((group, ours, pipe1, pipe_n, ref, ta_ms))
    ours_total = sum(r[1] for r in rows)
    talib_total = sum(r[4] for r in rows)
    four1 = _pipeline_ms(panel, list(_GROUPS), 1, repeats)
    four_n = _pipeline_ms(panel, list(_GROUPS), threads, repeats)
    everything1 = _pipeline_ms(panel, None, 1, max(1, repeats // 2))
    everything_n = _pipeline_ms(panel, None, threads, max(1, repeats // 2))
    default = FeaturePipeline(threads=1)
    default.transform_panel(panel)
    per_group = default.last_report.seconds

    lines = [
        f"# Feature pipeline vs TA-Lib and `ta` — {n_symbols} symbols × {n_rows:,} rows",
        "",
        machine_info(),
        "",
        f"Median of {repeats} runs ({ta_repeats} for `ta`), milliseconds for all symbols. "
        "*kernel* = our registered function on each symbol's contiguous arrays, one thread; "
        "*pipeline* = `FeaturePipeline.transform_panel` end to end (symbol-major reorder, "
        f"compute, scatter back, DataFrame assembly) on 1 and on {threads} threads. TA-Lib "
        "and `ta` run on one thread.",
        "",
        "| indicator | ours (kernel) | pipeline, 1 thread | pipeline, "
        f"{threads} threads | TA-Lib | ta | kernel / TA-Lib | pipeline ({threads}) / TA-Lib |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group, ours, pipe1, pipe_n, ref, ta_ms in rows:
        lines.append(
            f"| {group} | {ours:.1f} | {pipe1:.1f} | {pipe_n:.1f} | {ref:.1f} | {ta_ms:.1f} "
            f"| {ours / ref:.2f}× | {pipe_n / ref:.2f}× |"
        )
    lines += [
        f"| **4 indicators** | {ours_total:.1f} | {four1:.1f} | {four_n:.1f} | {talib_total:.1f} "
        f"| — | {ours_total / talib_total:.2f}× | {four_n / talib_total:.2f}× |",
        "",
        f"Whole default set ({len(default.output_names)} columns, calendar included) through "
        f"the pipeline: {everything1:.0f} ms on 1 thread, {everything_n:.0f} ms on {threads}. "
        "Per group (one run, 1 thread):",
        "",
        "| group | ms |",
        "|---|---:|",
        *[f"| {g} | {1e3 * s:.1f} |" for g, s in per_group.items()],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ta-repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="pipeline threads (default: cores)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "features.md")
    args = parser.parse_args()
    report = run(args.symbols, args.rows, args.repeats, args.ta_repeats, args.threads)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
