"""Benchmark: VectorTradingEnv env steps/s beside gym-anytrading's StocksEnv on the same data.

Both environments trade the daily GOOGL closes that ship with gym-anytrading
(``gym_anytrading.datasets.STOCKS_GOOGL``, 2,335 bars) and observe the same 30-bar window
of ``(close, close diff)`` — StocksEnv's ``stocks-v0`` signal features. Ours runs every
execution friction at once (commission, fixed cost, spread with a volatility term,
square-root impact, participation-capped partial fills, two random latency buckets,
borrow, leverage financing, funding, position and gross caps) at 1, 64, 1,024 and 8,192
environments (and 65,536 on a GPU). StocksEnv (fee-only) is stepped the way its users
step it: ``gymnasium.make("stocks-v0")`` in a Python loop, through stable-baselines3's
``DummyVecEnv`` and through a 16-env ``gymnasium.vector.SyncVectorEnv``. A second table
runs ours on a wider synthetic panel (8 symbols, 32 features, 32-bar windows) where
building the observation dominates.

    python benchmarks/rl_env.py             # ~1 minute on 2 cores
    python benchmarks/rl_env.py --quick     # a smoke run

Writes ``benchmarks/results/rl_env.md``. Each rate is the best of 5 rounds; wall-clock and
process CPU-time rates are both reported with the load average: on a shared machine wall
time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rl_peers import rate as _rate

from market_nn_plus_ultra.config import SimulationConfig, WindowsConfig
from market_nn_plus_ultra.config.reinforcement import EnvConfig, RewardConfig
from market_nn_plus_ultra.rl import EnvMarket, VectorTradingEnv
from market_nn_plus_ultra.windows import MarketTensors

HERE = Path(__file__).resolve().parent

#: Every friction of the execution simulator switched on.
FULL = SimulationConfig(
    cost_bps=5.0,
    fixed_cost=1.0,
    capital=1e6,
    half_spread_bps=2.0,
    spread_vol_mult=0.1,
    impact_coef=0.5,
    participation_cap=0.1,
    latency_bars=[0, 1],
    latency_probs=[0.7, 0.3],
    borrow_bps=50.0,
    leverage_funding_bps=100.0,
    max_position=1.0,
    max_gross=1.0,
)


def _googl() -> tuple[pd.DataFrame, bool]:
    """The GOOGL frame gym-anytrading ships, or a random walk of the same length."""
    try:
        from gym_anytrading import datasets

        return datasets.STOCKS_GOOGL.copy(), True
    except ImportError:
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, 2335)))
        index = pd.date_range("2009-05-22", periods=2335, freq="B")
        return pd.DataFrame({"Close": close, "Volume": 3e6}, index=index), False


def _googl_market(frame: pd.DataFrame, window: int) -> tuple[EnvMarket, WindowsConfig]:
    close = frame["Close"].to_numpy(dtype=np.float64)
    stamps = pd.DatetimeIndex(pd.to_datetime(frame.index)).tz_localize("UTC")
    panel = pd.DataFrame(
        {"close": close, "diff": np.insert(np.diff(close), 0, 0.0)},
        index=pd.MultiIndex.from_arrays([stamps, ["GOOGL"] * len(close)], names=["timestamp", "symbol"]),
    )  # fmt: skip
    windows = WindowsConfig(
        window=window, horizon=1, normalise="none", val_fraction=0.0, test_fraction=0.0
    )
    tensors = MarketTensors.from_panel(panel, ["close", "diff"], horizon=1)
    volume = (close * frame["Volume"].to_numpy(dtype=np.float64)).reshape(-1, 1)
    funding = np.full_like(volume, 1e-5)
    return EnvMarket.from_tensors(tensors, windows, dollar_volume=volume, funding=funding), windows


def _wide_market(normalise: str, rows: int = 2520, symbols: int = 8, features: int = 32):
    rng = np.random.default_rng(1)
    stamps = pd.date_range("2015-01-01", periods=rows, freq="B", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (rows, symbols)), axis=0))
    targets = np.concatenate([close[1:] / close[:-1] - 1, np.full((1, symbols), np.nan)])
    tensors = MarketTensors(
        inputs=rng.normal(size=(rows, symbols, features)).astype(np.float32),
        targets=targets[..., None].astype(np.float32),
        mask=np.ones((rows, symbols), dtype=bool),
        target_mask=np.isfinite(targets)[..., None],
        present=np.ones((rows, symbols), dtype=bool),
        timestamps=stamps,
        symbols=[f"S{i}" for i in range(symbols)],
        feature_names=[f"f{i}" for i in range(features)],
    )
    windows = WindowsConfig(window=32, horizon=1, normalise=normalise)
    volume = rng.uniform(1e7, 1e8, (rows, symbols))
    funding = np.full((rows, symbols), 1e-5)
    return EnvMarket.from_tensors(tensors, windows, dollar_volume=volume, funding=funding), windows


def _ours(market, windows, envs: int, device: str, seconds: float) -> tuple[float, float, int]:
    env = VectorTradingEnv(
        market,
        num_envs=envs,
        env=EnvConfig(episode_length=256),
        reward=RewardConfig(),
        simulation=FULL,
        windows=windows,
        device=device,
    )
    env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    S = env.n_symbols
    pool = [(torch.rand(envs, S, generator=g) * 2 - 1).to(device) for _ in range(16)]

    def step(i: int) -> None:
        env.step(pool[i % 16])
        if device.startswith("cuda") and i % 64 == 63:
            torch.cuda.synchronize()

    out = _rate(step, envs, seconds)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


def _anytrading(seconds: float) -> dict[str, tuple[float, float, int]]:
    """StocksEnv rates: a plain loop, SB3's DummyVecEnv, a 16-env SyncVectorEnv."""
    import gym_anytrading  # noqa: F401 - registers stocks-v0
    import gymnasium

    out = {}
    env = gymnasium.make("stocks-v0")
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, 4096)

    def loop(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(int(actions[i % 4096]))
        if terminated or truncated:
            env.reset()

    out["gymnasium.make('stocks-v0'), Python loop"] = _rate(loop, 1, seconds)
    try:
        from stable_baselines3.common.vec_env import DummyVecEnv

        dummy = DummyVecEnv([lambda: gymnasium.make("stocks-v0")])
        dummy.reset()
        out["SB3 DummyVecEnv (1 env)"] = _rate(
            lambda i: dummy.step(actions[i % 4096 : i % 4096 + 1]), 1, seconds
        )
    except ImportError:
        pass
    sync = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("stocks-v0")] * 16)
    sync.reset(seed=0)
    batch = np.random.default_rng(1).integers(0, 2, (64, 16))
    out["gymnasium SyncVectorEnv (16 envs)"] = _rate(
        lambda i: sync.step(batch[i % 64]), 16, seconds
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per row.")
    parser.add_argument("--quick", action="store_true", help="0.3 s per row (a smoke run).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; one suits per-step ops of a few thousand elements.",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "rl_env.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seconds = 0.3 if args.quick else args.seconds
    sizes = [1, 64, 1024, 8192] + ([65536] if args.device.startswith("cuda") else [])
    load0 = os.getloadavg()[0]
    frame, real = _googl()
    market, windows = _googl_market(frame, window=30)
    lines = [
        "# Trading environment steps (`benchmarks/rl_env.py`)",
        "",
        f"Device {args.device}, torch {torch.__version__}, torch threads: {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"best of 5 rounds in about {seconds:g} s per row. Data: "
        + ("gym-anytrading's STOCKS_GOOGL" if real else "a random walk (gym-anytrading absent)")
        + f", {len(frame)} daily bars, window 30 × (close, diff).",
        "",
        "| environment | envs | env steps/s (wall) | env steps/s (CPU time) |",
        "|---|---:|---:|---:|",
    ]
    for envs in sizes:
        wall, cpu, _ = _ours(market, windows, envs, args.device, seconds)
        lines.append(f"| VectorTradingEnv, every friction | {envs:,} | {wall:,.0f} | {cpu:,.0f} |")
        print(lines[-1], flush=True)
    if real:
        for name, (wall, cpu, _) in _anytrading(seconds).items():
            envs = 16 if "16" in name else 1
            lines.append(
                f"| gym-anytrading StocksEnv: {name} | {envs} | {wall:,.0f} | {cpu:,.0f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "Wider panel: 8 symbols × 32 features, window 32 (an observation of 8,192 floats per "
        "env step), every friction; `window_zscore` normalises every gathered window, "
        "`train_zscore` gathers rows normalised once.",
        "",
        "| normalise | envs | env steps/s (wall) | env steps/s (CPU time) |",
        "|---|---:|---:|---:|",
    ]
    for normalise in ("window_zscore", "train_zscore"):
        wide, wide_windows = _wide_market(normalise)
        for envs in sizes[:3]:
            wall, cpu, _ = _ours(wide, wide_windows, envs, args.device, seconds)
            lines.append(f"| {normalise} | {envs:,} | {wall:,.0f} | {cpu:,.0f} |")
            print(lines[-1], flush=True)
    load1 = os.getloadavg()[0]
    lines += ["", f"Load average (1 min) at start / end: {load0:.1f} / {load1:.1f}."]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
