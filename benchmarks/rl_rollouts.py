"""Benchmark: PPO rollouts in this process beside Ray rollouts on 2 workers.

The same config (a synthetic two-symbol daily panel, a ``state_space`` policy, 64-bar
episodes, 64-step rollouts) collected three ways: ``PPO(env, ...)`` with one torch thread,
the same with two, and ``RayRollouts`` with 2 actors of one CPU and one thread each
(the learner gathers their shards; the actors run at this process's niceness,
``RAY_worker_niceness=0``). Two policy sizes: the small one of docs/rl.md's
example (d_model 16, depth 1) and a wider one (d_model 64, depth 2) whose forward passes
dominate a rollout. Rates are env steps/s of a rollout (``ppo.collect()``) and of a whole
update (``ppo.step()``: rollout, GAE, 4 epochs x 4 minibatches), the best of 3 and 2 rounds.

    python benchmarks/rl_rollouts.py            # ~6 minutes on 2 cores
    python benchmarks/rl_rollouts.py --quick    # a smoke run

Writes ``benchmarks/results/rl_rollouts.md`` with the load average (a shared machine's
wall time includes waiting for a core).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.rl import PPO, ActorCritic, VectorTradingEnv
from market_nn_plus_ultra.rl.distributed import RayRollouts

HERE = Path(__file__).resolve().parent
MODELS = {"small (d16x1)": (16, 1), "wide (d64x2)": (64, 2)}


def _config(db: Path, d_model: int, depth: int) -> Config:
    return load_config(
        None,
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            "model.architecture=state_space",
            f"model.d_model={d_model}",
            f"model.depth={depth}",
            "model.dropout=0.0",
            "windows.window=16",
            "reinforcement.env.episode_length=64",
            "reinforcement.reward.scale=100",
            "reinforcement.ppo.steps_per_rollout=64",
        ],
    )


def _best(ppo: PPO, rounds: int) -> tuple[float, float]:
    """Best env steps/s of ``collect()`` over ``rounds`` and of ``step()`` over fewer."""
    n = ppo.cfg.steps_per_rollout * ppo.rollouts.num_envs
    ppo.collect()  # warm-up
    collect = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        ppo.collect()
        collect = max(collect, n / (time.perf_counter() - t0))
    update = max(ppo.step().steps_per_second for _ in range(max(1, rounds - 1)))
    return collect, update


def _learner(cfg: Config, n_features: int, env=None, rollouts=None) -> PPO:
    torch.manual_seed(0)
    policy = ActorCritic.from_config(cfg.model, n_features, cfg.reinforcement.env.action)
    return PPO(env, policy, cfg.reinforcement.ppo, total_updates=100, seed=0, rollouts=rollouts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, one round")
    args = parser.parse_args()
    import ray

    sizes, rounds = ([64], 1) if args.quick else ([64, 256], 3)
    # Ray runs its workers at niceness 15 by default: on a machine shared with other work
    # they would lose the CPU that this process (the single-process path) keeps
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = write_fixture(Path(tmp) / "bench.db", ["SPY", "QQQ"], rows=1000, freq="1D",
                           planted_signal=0.5)  # fmt: skip
        for label, (d_model, depth) in MODELS.items():
            cfg = _config(db, d_model, depth)
            for n in sizes:
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    env = VectorTradingEnv.from_config(cfg, n)
                    rate = _best(_learner(cfg, env.n_features, env=env), rounds)
                    rows.append((label, n, f"this process, {threads} thread(s)", *rate))
                torch.set_num_threads(1)
                with RayRollouts.from_config(cfg, n, workers=2) as rollouts:
                    rate = _best(_learner(cfg, rollouts.n_features, rollouts=rollouts), rounds)
                rows.append((label, n, "Ray, 2 workers x 1 thread", *rate))
                print(rows[-3:], flush=True)
    ray.shutdown()
    lines = [
        "| policy | envs | rollouts | collect steps/s | update steps/s |",
        "|---|---:|---|---:|---:|",
        *(f"| {p} | {n:,} | {how} | {c:,.0f} | {u:,.0f} |" for p, n, how, c, u in rows),
    ]
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1 minute)"
    text = (
        "# PPO rollouts: this process vs Ray (2 workers)\n\n"
        f"`python benchmarks/rl_rollouts.py` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, ray {ray.__version__}; load average {load}. Env steps/s, "
        f"best of {rounds} (collect) and {max(1, rounds - 1)} (update) rounds; 64-step "
        "rollouts, 2 symbols, 16-bar windows.\n\n" + "\n".join(lines) + "\n"
    )
    out = HERE / "results" / "rl_rollouts.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
