"""Benchmark: the feature pipeline side by side with TA-Lib and ``ta``, in the same run.

For each ``--sizes`` entry (``SYMBOLSxROWS``) builds a panel of one-minute GBM bars (24/7,
so the calendar features run too) and times, as the median of ``--repeats`` runs:

- per indicator, the computation over every symbol's contiguous block: ours (the
  registered feature function) and TA-Lib (``RSI``, ``MACD``, ``BBANDS``, ``ATR``)
  interleaved repeat by repeat, so load on a shared machine hits both alike, and ``ta``
  (``RSIIndicator``, ``MACD``, ``BollingerBands``, ``AverageTrueRange``);
- our other rolling features (volume z-score, realised volatility, skewness, kurtosis);
- ``FeaturePipeline.transform_panel`` end to end (reorder to symbol-major, compute,
  scatter back, assemble the DataFrame) for each indicator, for the four TA-Lib
  indicators together, and for the whole default set.

The compiled kernels are warmed (compiled or loaded from numba's on-disk cache) before
anything is timed; the one-off compile and cache-load times are measured separately, in
fresh processes with an empty and then a filled cache directory.

    python benchmarks/features.py --sizes 10x200000,1x1000000 --repeats 41 [--threads N]

Prints markdown tables and writes ``benchmarks/results/features.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from market_nn_plus_ultra.features import REGISTRY, FeaturePipeline

HERE = Path(__file__).resolve().parent
# Feature groups TA-Lib also computes (RSI, MACD, BBANDS, ATR).
_GROUPS = ("rsi_14", "macd", "bb_width_20", "atr_14")
# Our other kernel-backed features (no TA-Lib counterpart with the same definition).
_OTHERS = ("volume_z_20", "realised_vol_20", "skew_20", "kurt_20", "fft_energy")
_INPUTS = ("high", "low", "close", "volume", "timestamp")


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
    """Each symbol's contiguous arrays (what both sides compute on); timestamps int64 ns."""
    blocks = []
    for _, g in panel.groupby(level="symbol", sort=True):
        block = {c: np.ascontiguousarray(g[c].to_numpy(np.float64)) for c in _INPUTS[:-1]}
        block["timestamp"] = g.index.get_level_values("timestamp").as_unit("ns").asi8
        blocks.append(block)
    return blocks


def _median_ms(fn: Callable[[], object], repeats: int, *, warm: bool = True) -> float:
    if warm:
        fn()  # warm caches and imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _paired_ms(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Medians (ms) of two warmed callables timed alternately, repeat by repeat, and the
    ratio of their fastest runs (the least disturbed by other load on the machine)."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(a), 1e3 * statistics.median(b), min(a) / min(b)


_COMPILE_PROBE = """
import time, numpy as np
t0 = time.perf_counter()
from market_nn_plus_ultra.features import REGISTRY
t1 = time.perf_counter()
x = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 500))
arrays = {"high": x + 1, "low": x - 1, "close": x, "volume": x,
          "timestamp": np.arange(500, dtype=np.int64) * 60_000_000_000}
for name in %r:
    spec = REGISTRY.get(name)
    spec.compute([arrays[c] for c in spec.inputs], spec.params)
print(t1 - t0, time.perf_counter() - t1)
"""


def compile_seconds() -> tuple[float, float, float]:
    """(import s, first-call s with an empty numba cache, first-call s with a filled one)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        code = _COMPILE_PROBE % (_GROUPS + _OTHERS,)
        runs = []
        for _ in range(2):  # empty cache (compiles and writes it), then filled (loads it)
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            )
            runs.append([float(v) for v in out.stdout.split()])
    return runs[1][0], runs[0][1], runs[1][1]


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
        "atr_14": lambda b: AverageTrueRange(
            *(frame(b)[c] for c in ("high", "low", "close")), window=14
        ).average_true_range(),
    }
    return calls[group]


def _talib_on_panel(*groups: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """TA-Lib the way a pandas user runs it on a panel: per symbol, back onto the index.

    The same work the pipeline does around its kernels (split by symbol, compute, align
    to the panel's (timestamp, symbol) index), so the two end-to-end times compare.
    """
    fns = [_talib(group) for group in groups]

    def run(panel: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for _, g in panel.groupby(level="symbol", sort=False):
            block = {c: g[c].to_numpy(np.float64) for c in ("high", "low", "close")}
            columns: list[np.ndarray] = []
            for fn in fns:
                out = fn(block)
                columns.extend(out if isinstance(out, tuple) else (out,))
            parts.append(pd.DataFrame(dict(enumerate(columns)), index=g.index))
        return pd.concat(parts).reindex(panel.index)

    return run


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
    import numba
    import scipy
    import talib

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"CPU: {model}, {os.cpu_count()} cores (load average {load} at the end of the run); "
        f"Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, TA-Lib {talib.__version__}"
    )


def _pipeline_ms(panel: pd.DataFrame, names: list[str] | None, threads: int, repeats: int) -> float:
    pipeline = FeaturePipeline(names=names, threads=threads)
    return _median_ms(lambda: pipeline.transform_panel(panel), repeats)


def run(n_symbols: int, n_rows: int, repeats: int, ta_repeats: int, threads: int) -> str:
    """Time everything on one panel; returns its markdown section."""
    panel = build_panel(n_symbols, n_rows)
    blocks = _blocks(panel)
    pipe_repeats = max(3, repeats // 4)  # the pipeline adds DataFrame work on top
    rows = []
    for group in _GROUPS:
        ours, ref, best = _paired_ms(
            _over_blocks(_ours(group), blocks), _over_blocks(_talib(group), blocks), repeats
        )
        ta_ms = _median_ms(_over_blocks(_ta(group), blocks), ta_repeats, warm=False)
        pipe1 = _pipeline_ms(panel, [group], 1, pipe_repeats)
        pipe_n = _pipeline_ms(panel, [group], threads, pipe_repeats)
        on_panel = _talib_on_panel(group)
        ref_panel = _median_ms(lambda fn=on_panel: fn(panel), pipe_repeats)
        rows.append((group, ours, pipe1, pipe_n, ref, ta_ms, best, ref_panel))
    others = [(g, _median_ms(_over_blocks(_ours(g), blocks), repeats)) for g in _OTHERS]
    ours_total = sum(r[1] for r in rows)
    talib_total = sum(r[4] for r in rows)
    four_panel = _talib_on_panel(*_GROUPS)
    panel_total = _median_ms(lambda: four_panel(panel), pipe_repeats)
    four1 = _pipeline_ms(panel, list(_GROUPS), 1, pipe_repeats)
    four_n = _pipeline_ms(panel, list(_GROUPS), threads, pipe_repeats)
    everything1 = _pipeline_ms(panel, None, 1, max(1, pipe_repeats // 2))
    everything_n = _pipeline_ms(panel, None, threads, max(1, pipe_repeats // 2))
    default = FeaturePipeline(threads=1)
    default.transform_panel(panel)
    per_group = default.last_report.seconds

    lines = [
        f"## {n_symbols} symbols × {n_rows:,} rows",
        "",
        f"Median of {repeats} runs ({pipe_repeats} for the pipeline, {ta_repeats} for `ta`), "
        "milliseconds for all symbols. *kernel* = our registered function on each symbol's "
        "contiguous arrays, one thread, timed alternately with TA-Lib; *pipeline* = "
        "`FeaturePipeline.transform_panel` end to end (symbol-major reorder, compute, "
        f"scatter back, DataFrame assembly) on 1 and on {threads} threads; *TA-Lib on the "
        "panel* = TA-Lib run per symbol from the same panel and aligned back onto its index "
        "(the pipeline's end-to-end counterpart). TA-Lib and `ta` run on one thread.",
        "",
        "| indicator | ours (kernel) | TA-Lib | ta | kernel / TA-Lib | kernel / TA-Lib, "
        f"fastest runs | pipeline, 1 thread | pipeline, {threads} threads | TA-Lib on the panel "
        f"| pipeline ({threads}) / TA-Lib on the panel |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group, ours, pipe1, pipe_n, ref, ta_ms, best, ref_panel in rows:
        lines.append(
            f"| {group} | {ours:.2f} | {ref:.2f} | {ta_ms:.1f} | {ours / ref:.2f}× | {best:.2f}× "
            f"| {pipe1:.1f} | {pipe_n:.1f} | {ref_panel:.1f} | {pipe_n / ref_panel:.2f}× |"
        )
    lines += [
        f"| **4 indicators** | {ours_total:.2f} | {talib_total:.2f} | — "
        f"| {ours_total / talib_total:.2f}× | — | {four1:.1f} | {four_n:.1f} | {panel_total:.1f} "
        f"| {four_n / panel_total:.2f}× |",
        "",
        "Other kernel-backed features (kernel, one thread): "
        + ", ".join(f"`{g}` {ms:.1f} ms" for g, ms in others)
        + ".",
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


def _size(text: str) -> tuple[int, int]:
    symbols, _, rows = text.lower().partition("x")
    return int(symbols), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="10x200000,1x1000000", help="comma-separated SYMBOLSxROWS panels"
    )
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--ta-repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="pipeline threads (default: cores)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "features.md")
    args = parser.parse_args()
    import_s, compile_s, cached_s = compile_seconds()
    sections = [
        run(*_size(size), args.repeats, args.ta_repeats, args.threads)
        for size in args.sizes.split(",")
    ]
    report = "\n".join(
        [
            "# Feature kernels vs TA-Lib and `ta`",
            "",
            machine_info(),
            "",
            f"Compiled kernels: importing the feature package takes {import_s:.2f} s; the "
            f"first call of the {len(_GROUPS + _OTHERS)} kernel-backed features compiles them in "
            f"{compile_s:.1f} s "
            f"with an empty numba cache, and loads them from the on-disk cache in "
            f"{cached_s:.2f} s afterwards (fresh processes). Every timing below is taken "
            "after a warm-up call.",
            "",
            *sections,
        ]
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
