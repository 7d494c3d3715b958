"""The peer trading environments of ``benchmarks/rl.py``, timed in a Python of their own.

    PEERS/bin/python benchmarks/rl_peers.py --out DIR --seconds 3

``PEERS`` is a virtual environment with gym-anytrading 2.0, FinRL 0.3.7 and
stable-baselines3 (kept out of the project's venv: FinRL's dependencies pin other
versions of the project's packages). Writes ``DIR/googl.csv``, the 2,335 daily GOOGL bars
gym-anytrading ships (``gym_anytrading.datasets.STOCKS_GOOGL``), which ``rl.py``'s own
environments then trade, and ``DIR/peers.json``: env steps/s of

- gym-anytrading's ``StocksEnv`` (``gymnasium.make("stocks-v0")``: those bars, a 30-bar
  window of (close, diff), a 1% fee each way) in a plain Python loop, through
  stable-baselines3's ``DummyVecEnv`` and through a 16-env ``gymnasium.vector.SyncVectorEnv``;
- FinRL's ``StockTradingEnv`` on the same bars with FinRL's default indicators
  (``finrl.config.INDICATORS``, computed by its ``FeatureEngineer``) and its tutorials'
  settings (100 shares a trade at most, $1M, 0.1% costs, reward scale 1e-4), in a plain
  loop and through ``env.get_sb_env()`` (the ``DummyVecEnv`` FinRL's agents train on).

Only numpy and pandas are imported at the top: ``rl.py`` reuses :func:`rate` from the
project's venv.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROUNDS = 5


def rate(step: Callable[[int], None], envs: int, seconds: float) -> tuple[float, float, int]:
    """Env steps/s by wall clock and by process CPU time, each the best of 5 rounds, and the
    steps run. ``step(i)`` advances every one of ``envs`` environments once.

    The best round is the one least disturbed by other work on the machine (as ``timeit``
    reports the minimum); each round runs about ``seconds / 5``.
    """
    for i in range(3):  # warm-up
        step(i)
    per_round = 1
    w0 = time.perf_counter()
    while time.perf_counter() - w0 < seconds / 20:  # size a round
        for i in range(per_round):
            step(i)
        per_round *= 2
    per_round = max(1, per_round // 2 * 4)
    best_wall = best_cpu = 0.0
    n = 0
    for _ in range(ROUNDS):
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(per_round):
            step(n + i)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        n += per_round
        best_wall = max(best_wall, envs * per_round / wall)
        best_cpu = max(best_cpu, envs * per_round / max(cpu, 1e-9))
    return best_wall, best_cpu, n


def _row(peer: str, stepping: str, envs: int, measured: tuple[float, float, int]) -> dict:
    wall, cpu, steps = measured
    return {"peer": peer, "stepping": stepping, "envs": envs, "wall": wall, "cpu": cpu,
            "steps": steps}  # fmt: skip


def anytrading_rates(seconds: float) -> list[dict]:
    """StocksEnv (``stocks-v0``): a plain loop, SB3's DummyVecEnv, a 16-env SyncVectorEnv."""
    import gym_anytrading  # noqa: F401 - registers stocks-v0
    import gymnasium
    from stable_baselines3.common.vec_env import DummyVecEnv

    peer = f"gym-anytrading {version('gym-anytrading')} StocksEnv"
    actions = np.random.default_rng(0).integers(0, 2, 4096)
    env = gymnasium.make("stocks-v0")
    env.reset(seed=0)

    def loop(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(int(actions[i % 4096]))
        if terminated or truncated:
            env.reset()

    dummy = DummyVecEnv([lambda: gymnasium.make("stocks-v0")])
    dummy.reset()
    sync = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("stocks-v0")] * 16)
    sync.reset(seed=0)
    batch = np.random.default_rng(1).integers(0, 2, (64, 16))
    return [
        _row(peer, "gymnasium.make('stocks-v0'), Python loop", 1, rate(loop, 1, seconds)),
        _row(peer, "SB3 DummyVecEnv", 1,
             rate(lambda i: dummy.step(actions[i % 4096 : i % 4096 + 1]), 1, seconds)),
        _row(peer, "gymnasium SyncVectorEnv", 16,
             rate(lambda i: sync.step(batch[i % 64]), 16, seconds)),
    ]  # fmt: skip


def finrl_frame(googl: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The GOOGL bars as FinRL's tutorials prepare a frame: one row per day and ticker, its
    default indicators from ``FeatureEngineer``, indexed by day number (``data_split``)."""
    from finrl.config import INDICATORS
    from finrl.meta.preprocessor.preprocessors import FeatureEngineer, data_split

    raw = pd.DataFrame({
        "date": googl.index.strftime("%Y-%m-%d"),
        "open": googl["Open"].to_numpy(), "high": googl["High"].to_numpy(),
        "low": googl["Low"].to_numpy(), "close": googl["Close"].to_numpy(),
        "volume": googl["Volume"].to_numpy(), "tic": "GOOGL",
    })  # fmt: skip
    engineer = FeatureEngineer(
        use_technical_indicator=True, tech_indicator_list=INDICATORS, use_vix=False,
        use_turbulence=False, user_defined_feature=False,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        frame = engineer.preprocess_data(raw).ffill().fillna(0)
    return data_split(frame, raw["date"].iloc[0], "9999-12-31"), list(INDICATORS)


def finrl_rates(googl: pd.DataFrame, seconds: float) -> list[dict]:
    """StockTradingEnv on one ticker: a plain loop and its own ``get_sb_env()`` DummyVecEnv."""
    from finrl.meta.env_stock_trading.env_stocktrading import StockTradingEnv

    frame, indicators = finrl_frame(googl)

    def make() -> Any:
        return StockTradingEnv(
            df=frame, stock_dim=1, hmax=100, initial_amount=1_000_000, num_stock_shares=[0],
            buy_cost_pct=[0.001], sell_cost_pct=[0.001], reward_scaling=1e-4,
            state_space=1 + 2 + len(indicators), action_space=1,
            tech_indicator_list=indicators,
        )  # fmt: skip

    peer = f"FinRL {version('finrl')} StockTradingEnv"
    actions = np.random.default_rng(0).uniform(-1, 1, (4096, 1)).astype(np.float32)
    env = make()
    env.reset()

    def loop(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[i % 4096])
        if terminated or truncated:
            env.reset()

    vec, _ = make().get_sb_env()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a summary after episodes
        rows = [
            _row(peer, "Python loop", 1, rate(loop, 1, seconds)),
            _row(peer, "get_sb_env() (SB3 DummyVecEnv)", 1,
                 rate(lambda i: vec.step(actions[i % 4096][None]), 1, seconds)),
        ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for googl.csv, peers.json.")
    parser.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per row.")
    args = parser.parse_args()
    from gym_anytrading import datasets

    args.out.mkdir(parents=True, exist_ok=True)
    googl = datasets.STOCKS_GOOGL.copy()
    googl.to_csv(args.out / "googl.csv")
    rows = anytrading_rates(args.seconds)
    notes = []
    try:
        rows += finrl_rates(googl, args.seconds)
    except ImportError as err:  # FinRL's package __init__ imports its data and broker clients
        notes.append(f"FinRL did not import: {type(err).__name__}: {err}")
    versions = {}
    for name in ("gym-anytrading", "finrl", "stable-baselines3", "gymnasium", "numpy", "pandas"):
        with contextlib.suppress(Exception):
            versions[name] = version(name)
    payload = {"rows": rows, "notes": notes, "versions": versions,
               "python": platform.python_version()}  # fmt: skip
    (args.out / "peers.json").write_text(json.dumps(payload, indent=2))
    for row in rows:
        print(f"{row['peer']}: {row['stepping']}: {row['wall']:,.0f} steps/s", flush=True)


if __name__ == "__main__":
    main()
