"""Benchmark: walk-forward with every baseline, bootstrap intervals and guardrails.

Builds ``--symbols`` × ``--bars`` daily GBM OHLCV bars and a predictions frame (a noisy
one-bar-ahead forecast), then times, as the median of ``--repeats`` runs:

- ``WalkForwardBacktester.run`` with the five baselines (ridge and LightGBM refitted per
  fold) and without the bootstrap;
- ``bootstrap_metrics`` on the stitched model returns (``--reps`` resamples, optimal block)
  and ``compare_sharpe`` against every baseline;
- ``apply_guardrails`` with every rule on (the turnover cap steps bar by bar);
- ``backtest`` with costs on ``--backtest-rows`` rows (10 symbols, the predictions
  contract checked on every call), its first call and warm, beside vectorbt's
  ``Portfolio.from_orders`` (target-percent orders) and ``Portfolio.from_signals`` on the
  same positions, closes and fees in the same run (``pip install vectorbt==1.2.0``;
  skipped with a note when it is missing).

    python benchmarks/evaluation.py --symbols 50 --bars 2520 --reps 1000 --repeats 3

Prints a markdown table and writes ``benchmarks/results/evaluation.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from market_nn_plus_ultra.config import EvaluationConfig, GuardrailsConfig
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.bootstrap import bootstrap_metrics, compare_sharpe
from market_nn_plus_ultra.evaluation.guardrails import apply_guardrails
from market_nn_plus_ultra.evaluation.walkforward import MODEL, WalkForwardBacktester

HERE = Path(__file__).resolve().parent


def build(n_symbols: int, n_bars: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(panel, predictions): daily GBM bars and a forecast with IC ≈ 0.05."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2010-01-01", periods=n_bars, freq="B", tz="UTC")
    log_ret = rng.normal(0.0002, 0.01, (n_bars, n_symbols))
    close = 100 * np.exp(np.cumsum(log_ret, axis=0))
    opn = close * (1 + rng.normal(0, 2e-3, close.shape))
    index = pd.MultiIndex.from_product(
        [stamps, [f"S{i:03d}" for i in range(n_symbols)]], names=["timestamp", "symbol"]
    )
    panel = pd.DataFrame(
        {
            "open": opn.ravel(),
            "high": (np.maximum(opn, close) * 1.003).ravel(),
            "low": (np.minimum(opn, close) * 0.997).ravel(),
            "close": close.ravel(),
            "volume": rng.integers(1e5, 1e6, close.size).astype(float),
        },
        index=index,
    )
    nxt = np.vstack([close[1:] / close[:-1] - 1.0, np.full((1, n_symbols), np.nan)])
    forecast = 0.05 * np.nan_to_num(nxt) + rng.normal(0, 0.01, nxt.shape)
    predictions = pd.DataFrame(
        {
            "timestamp": np.repeat(stamps, n_symbols),
            "symbol": np.tile(index.levels[1], n_bars),
            "position": np.clip(forecast.ravel() / 0.01, -1, 1),
            "forecast": forecast.ravel(),
            "realised_return": nxt.ravel(),
        }
    )
    return panel, predictions


def _first_and_warm(func: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first call, median of ``repeats`` warm calls) in seconds."""
    began = time.perf_counter()
    func()
    first = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return first, statistics.median(times)


def backtest_rows(n_rows: int, repeats: int, cost_bps: float = 5.0) -> list[tuple[str, str]]:
    """Our convention backtest vs vectorbt on ``n_rows`` = 10 symbols × n_rows/10 bars.

    Ours runs on the long predictions frame (contract checks, costs, per-bar portfolio
    returns and every metric); vectorbt's figure is the portfolio simulation alone on
    ready wide arrays (no metric), so the comparison favours vectorbt.
    """
    n_sym = 10
    n_bars = n_rows // n_sym
    rng = np.random.default_rng(1)
    stamps = pd.date_range("2000-01-03", periods=n_bars, freq="min", tz="UTC")
    ret = rng.normal(0.0, 0.001, (n_bars, n_sym))
    close = 100 * np.cumprod(1 + ret, axis=0)
    pos = np.clip(np.round(rng.normal(0, 0.6, (n_bars, n_sym)), 1), -1, 1)
    nxt = np.vstack([close[1:] / close[:-1] - 1, np.full((1, n_sym), np.nan)])
    frame = pd.DataFrame(
        {
            "timestamp": np.repeat(stamps, n_sym),
            "symbol": np.tile([f"S{i}" for i in range(n_sym)], n_bars),
            "position": pos.ravel(),
            "realised_return": nxt.ravel(),
        }
    )
    first, warm = _first_and_warm(lambda: backtest(frame, cost_bps=cost_bps), repeats)
    rows = [
        (
            f"ours: backtest, {len(frame):,} rows, {cost_bps:g} bps",
            f"{warm:.3f} (first {first:.3f})",
        )
    ]
    try:
        import vectorbt as vbt
    except ImportError:
        rows.append(("vectorbt", "not installed: pip install vectorbt==1.2.0"))
        return rows
    prices = pd.DataFrame(close, index=stamps)
    target = pd.DataFrame(pos, index=stamps)
    fees = cost_bps / 1e4

    def orders() -> object:
        return vbt.Portfolio.from_orders(
            prices, size=target, size_type="targetpercent", fees=fees, freq="1min"
        )

    def signals() -> object:
        return vbt.Portfolio.from_signals(
            prices, entries=target > 0, exits=target <= 0, fees=fees, freq="1min"
        )

    for name, func in (("from_orders", orders), ("from_signals", signals)):
        v_first, v_warm = _first_and_warm(func, repeats)
        rows.append(
            (
                f"vectorbt {vbt.__version__} Portfolio.{name}, {n_bars:,} × {n_sym}",
                f"{v_warm:.3f} (first {v_first:.3f}); ours is {v_warm / warm:.1f}× faster warm, "
                f"{v_first / first:.0f}× on the first call",
            )
        )
    return rows


def _median(func: Callable[[], object], repeats: int) -> float:
    func()  # warm-up: imports and first-call compilation are not what is measured
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--train-window", type=int, default=504)
    parser.add_argument("--test-window", type=int, default=126)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backtest-rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "evaluation.md")
    args = parser.parse_args()

    panel, predictions = build(args.symbols, args.bars)
    cfg = EvaluationConfig(bootstrap_reps=args.reps)
    tester = WalkForwardBacktester(args.train_window, args.test_window, cost_bps=5.0)
    result = tester.run(predictions, panel=panel, config=cfg, bootstrap=False)
    model = result.returns[MODEL].dropna()
    others = {n: result.returns[n] for n in result.returns.columns if n != MODEL}
    guard = GuardrailsConfig(
        max_gross=0.8,
        max_net=0.4,
        max_turnover=0.3,
        max_sector_gross=0.3,
        factor_caps={"market_beta": 0.3},
        cvar_limit=0.02,
        drawdown_stop=0.15,
    )
    symbols = sorted(predictions["symbol"].unique())
    sectors = {s: f"sector{i % 5}" for i, s in enumerate(symbols)}
    rows = [
        (
            f"walk-forward, {len(result.splits)} folds, 5 baselines",
            _median(
                lambda: tester.run(predictions, panel=panel, config=cfg, bootstrap=False),
                args.repeats,
            ),
        ),
        (
            f"bootstrap_metrics, {args.reps} resamples × {len(model)} bars",
            _median(lambda: bootstrap_metrics(model, reps=args.reps), args.repeats),
        ),
        (
            f"compare_sharpe vs {len(others)} baselines",
            _median(lambda: compare_sharpe(model, others, reps=args.reps), args.repeats),
        ),
        (
            f"apply_guardrails, {len(predictions):,} rows, every rule",
            _median(lambda: apply_guardrails(predictions, guard, sectors), args.repeats),
        ),
    ]
    lines = [
        f"# Evaluation benchmark ({args.symbols} symbols × {args.bars} daily bars)",
        "",
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        f"median of {args.repeats} runs.",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {name} | {seconds:.3f} |" for name, seconds in rows],
        "",
        f"## Backtest with costs beside vectorbt (median of {args.repeats} warm runs)",
        "",
        "| what | seconds |",
        "|---|---|",
        *[f"| {name} | {text} |" for name, text in backtest_rows(args.backtest_rows, args.repeats)],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
