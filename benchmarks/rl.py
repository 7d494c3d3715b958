"""Benchmark: the RL layer in one run — env steps/s beside gym-anytrading and FinRL, the PPO
update's wall clock, and GAE beside TorchRL's.

    python benchmarks/rl.py --peer-python /tmp/rlpeers/bin/python   # ~8-15 minutes on 2 cores
    python benchmarks/rl.py --quick                                  # a smoke run (~30 s)
    python benchmarks/rl.py --device cuda          # adds 65,536 envs and 1,048,576 transitions
    python benchmarks/rl.py --rerender benchmarks/results/rl.json    # the .md from a saved run
    python benchmarks/rl.py --ppo-only benchmarks/results/rl.json    # re-measure the PPO rows

1. **Env steps/s.** ``VectorTradingEnv`` with every friction of the execution simulator on
   (``rl_env.FULL``) at 1, 64, 1,024 and 8,192 environments (and 65,536 on a GPU), beside
   gym-anytrading's ``StocksEnv`` and FinRL's ``StockTradingEnv`` stepped the way their
   users step them (one env in a loop; stable-baselines3's ``DummyVecEnv``). The peers run
   in their own Python (``--peer-python``, a venv with gym-anytrading 2.0, FinRL 0.3.7 and
   stable-baselines3: ``benchmarks/rl_peers.py``), which also hands over the data every
   environment trades: the 2,335 daily GOOGL bars gym-anytrading ships. Ours observe the
   same 30-bar window of (close, diff) as ``stocks-v0``. Without ``--peer-python`` the
   peers are skipped and ours trade a seeded random walk of the same length.
2. **PPO update.** :meth:`PPO.update` as shipped, on one rollout of
   ``reinforcement.ppo.steps_per_rollout`` (128) steps of 128 and 1,024 environments
   (16,384 and 131,072 transitions; 8,192 environments more on a GPU), with the default
   ``reinforcement.ppo`` settings (4 epochs × 4 minibatches, Adam, clipped value loss),
   for each policy of :data:`POLICIES`; the same update while the backbone is frozen
   (``freeze_backbone_updates``: the minibatches reuse the rollout's backbone states,
   computed untimed here as the rollout keeps them while acting; the one no-grad pass that
   computes them for a rollout source without them is timed as ``states_pass_s``); and
   :meth:`PPO.sequence_update` (``reinforcement.ppo.sequence_update``: whole-env
   minibatches, each env's rollout encoded as one sequence), whose forward pass is checked
   against the policy's own on the same rollout (max abs difference in the report);
   tests/benchmarks/test_rl.py checks that one step of each moves the weights as the
   re-encoding update does.
3. **GAE.** :func:`market_nn_plus_ultra.rl.gae` against TorchRL's
   ``generalized_advantage_estimate`` and ``vec_generalized_advantage_estimate`` on the
   same ``(T, N)`` rollouts (TorchRL gets its own ``(N, T, 1)`` layout, prepared untimed).

Writes ``benchmarks/results/rl.md`` and ``rl.json``. Rates are the best of 5 rounds (wall
clock and process CPU time); PPO updates are timed once each (they take seconds to
minutes). The load average is recorded: on a shared machine wall time includes waiting
for a core.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rl_env import FULL, _googl, _googl_market, _ours  # noqa: E402
from rl_prototype import (  # noqa: E402
    rollout_rows,
    sequence_forward,
    sequence_states,
    sequence_update,
)
from rl_report import report  # noqa: E402

from market_nn_plus_ultra._io import atomic_write  # noqa: E402
from market_nn_plus_ultra.config import ModelConfig  # noqa: E402
from market_nn_plus_ultra.config.ppo import PPOConfig  # noqa: E402
from market_nn_plus_ultra.config.reinforcement import EnvConfig, RewardConfig  # noqa: E402
from market_nn_plus_ultra.rl import (  # noqa: E402
    PPO,
    ActorCritic,
    VectorTradingEnv,
    gae,
)
from market_nn_plus_ultra.rl.buffer import RolloutBuffer  # noqa: E402

WINDOW = 30  # stocks-v0's window
#: Largest minibatch (transitions) of the shipped update on each device: above it the
#: per-window activations outgrow memory (about 0.75 MB a window for the desktop preset).
MINIBATCH_CAP = {"cpu": 4096, "cuda": 32768}


@dataclass(frozen=True)
class PolicySpec:
    """A policy backbone of the PPO table (every other setting is the default config's)."""

    label: str
    architecture: str
    d_model: int
    depth: int
    n_heads: int = 4

    def model(self, window: int, steps: int) -> ModelConfig:
        """The model section: a bounded look-back of one window (``receptive_field``), what
        ``training.supervision=all`` trains and reinforcement.ppo.sequence_update needs."""
        return ModelConfig(
            architecture=self.architecture,
            d_model=self.d_model,
            depth=self.depth,
            n_heads=self.n_heads,
            ff_mult=4,
            dropout=0.0,
            receptive_field=window,
            max_seq_len=window + steps - 1,
        )

    def describe(self) -> str:
        return (
            f"{self.architecture}, d_model {self.d_model}, depth {self.depth}, "
            f"{self.n_heads} heads, ff × 4"
        )


POLICIES = (
    PolicySpec("desktop preset", "hybrid_transformer", 64, 2),  # configs/default_desktop.yaml
    PolicySpec("small", "state_space", 32, 1),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------
# 1. Env steps/s
# --------------------------------------------------------------------------------------


def _peers(
    peer_python: str | None, seconds: float, folder: Path
) -> tuple[pd.DataFrame | None, dict]:
    """The peers' rates and the GOOGL bars, from ``rl_peers.py`` run by ``peer_python``."""
    if peer_python is None:
        print(
            "peers skipped: pass --peer-python PATH (a venv with gym-anytrading, FinRL, "
            "stable-baselines3) to time them",
            flush=True,
        )
        return None, {"rows": [], "notes": ["peers skipped: no --peer-python"]}
    command = [
        peer_python,
        str(HERE / "rl_peers.py"),
        "--out",
        str(folder),
        "--seconds",
        str(seconds),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}\nFix the "
            "peer venv (see rl_peers.py) or leave out --peer-python"
        )
    frame = pd.read_csv(folder / "googl.csv", index_col=0, parse_dates=True)
    return frame, json.loads((folder / "peers.json").read_text())


def _peer_googl(peer_python: str | None) -> pd.DataFrame | None:
    """The GOOGL bars gym-anytrading ships, read by ``peer_python`` (no peer timing)."""
    if peer_python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "googl.csv"
        code = f"from gym_anytrading import datasets; datasets.STOCKS_GOOGL.to_csv({str(path)!r})"
        subprocess.run([peer_python, "-c", code], check=True)
        return pd.read_csv(path, index_col=0, parse_dates=True)


def env_rows(market: Any, windows: Any, sizes: list[int], device: str, seconds: float) -> list:
    rows = []
    for envs in sizes:
        wall, cpu, _ = _ours(market, windows, envs, device, seconds)
        rows.append({"envs": envs, "wall": wall, "cpu": cpu})
        print(f"VectorTradingEnv, every friction, {envs:,} envs: {wall:,.0f} steps/s", flush=True)
    return rows


# --------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------
# 2. PPO update: re-encoding every window, frozen backbone, whole-env sequences
# --------------------------------------------------------------------------------------


def _rollout(
    market: Any, windows: Any, spec: PolicySpec, envs: int, cfg: PPOConfig, device: str
) -> tuple[PPO, RolloutBuffer, Tensor, Tensor, float]:
    """A learner on ``envs`` environments and one collected rollout with its GAE."""
    env = VectorTradingEnv(
        market,
        num_envs=envs,
        env=EnvConfig(episode_length=2 * cfg.steps_per_rollout),
        reward=RewardConfig(),
        simulation=FULL,
        windows=windows,
        device=device,
    )
    torch.manual_seed(0)
    policy = ActorCritic.from_config(
        spec.model(windows.window, cfg.steps_per_rollout), env.n_features
    )
    ppo = PPO(env, policy, cfg, total_updates=10, seed=0)
    t0 = time.perf_counter()
    rollout, last_value, _ = ppo.collect()
    _sync(ppo.device)
    collect_s = time.perf_counter() - t0
    advantages, returns = ppo.advantages(rollout, last_value)
    return ppo, rollout, advantages, returns, collect_s


def _flat_batch(rollout: RolloutBuffer, advantages: Tensor, returns: Tensor) -> dict:
    obs, actions, logprobs, values = rollout.flat()
    return {
        "obs": obs,
        "actions": actions,
        "logprobs": logprobs,
        "values": values,
        "advantages": advantages.flatten(),
        "returns": returns.flatten(),
    }


@torch.no_grad()
def _max_diff(ppo: PPO, rollout: RolloutBuffer, envs: int = 8) -> dict[str, float]:
    """Max abs differences of the whole-env sequence pass from the policy's own per-window pass
    on the first ``envs`` envs of the rollout (every step): the states ``z`` (layer-normed,
    O(1)) and the outputs (actor mean and value, small at initialisation)."""
    rows = rollout_rows(rollout.obs["window"][:, :envs])
    obs = {k: v[:, :envs].flatten(0, 1) for k, v in rollout.obs.items()}  # (T·n, ...)
    z = sequence_states(ppo.policy, rows, rollout.steps).flatten(0, 1)  # (T·n, S, D)
    seq = sequence_forward(ppo.policy, rows, rollout.obs["portfolio"][:, :envs])
    own = ppo.policy(obs)
    outputs = torch.cat([(seq.mean - own.mean).flatten(), seq.value - own.value])
    return {
        "states": float((z - ppo.policy.encode(obs)).abs().max()),
        "outputs": float(outputs.abs().max()),
        "output_scale": float(torch.cat([own.mean.flatten(), own.value]).abs().max()),
    }


def _timed(run: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one ``run()`` (the device synchronised)."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    run()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def _ppo_case(
    market: Any, windows: Any, spec: PolicySpec, envs: int, base: PPOConfig, device: str
) -> list[dict]:
    """One policy on one rollout of ``envs`` envs: the shipped update training the backbone
    and frozen, and the whole-env sequence update, each from the same weights and optimiser state."""
    ppo, rollout, adv, ret, collect_s = _rollout(market, windows, spec, envs, base, device)
    transitions = rollout.steps * rollout.num_envs
    common = {
        "policy": spec.label,
        "backbone": spec.describe(),
        "parameters": sum(p.numel() for p in ppo.policy.parameters()),
        "transitions": transitions,
        "envs": envs,
        "steps": rollout.steps,
        "collect_s": collect_s,
    }
    diff = _max_diff(ppo, rollout)
    start = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    opt_state = copy.deepcopy(ppo.optimizer.state_dict())
    batch = _flat_batch(rollout, adv, ret)
    ppo.policy.freeze_backbone(True)
    _sync(ppo.device)
    t0 = time.perf_counter()
    states = ppo.backbone_states(batch["obs"])  # what a frozen rollout keeps while acting
    _sync(ppo.device)
    common["states_pass_s"] = time.perf_counter() - t0
    ppo.policy.freeze_backbone(False)
    frozen_batch = {**batch, "states": states}

    def frozen() -> Any:
        ppo.policy.freeze_backbone(True)
        try:
            return ppo.update(frozen_batch)
        finally:
            ppo.policy.freeze_backbone(False)

    shipped = base
    cap = MINIBATCH_CAP[ppo.device.type]
    if transitions // base.minibatches > cap:  # the activations would not fit
        shipped = base.model_copy(update={"minibatches": transitions // cap, "update_epochs": 1})
    variants: list[tuple[str, PPOConfig, Callable[[], Any]]] = [
        ("PPO.update (shipped)", shipped, lambda: ppo.update(batch)),
        ("PPO.update, frozen backbone (cached states)", base, frozen),
        (
            "PPO.sequence_update (whole-env sequences)",
            base,
            lambda: sequence_update(ppo, rollout, adv, ret),
        ),
    ]
    rows = []
    for name, cfg, run in variants:
        ppo.policy.load_state_dict(start)
        ppo.optimizer.load_state_dict(copy.deepcopy(opt_state))
        ppo.cfg = cfg
        load = os.getloadavg()[0]
        wall, cpu = _timed(run, ppo.device)
        per_epoch = wall / cfg.update_epochs
        rows.append(
            {
                **common,
                "update": name,
                "epochs": cfg.update_epochs,
                "minibatches": cfg.minibatches,
                "minibatch": transitions // cfg.minibatches,
                "wall_s": wall,
                "cpu_s": cpu,
                "per_epoch_s": per_epoch,
                "four_epochs_s": 4 * per_epoch,
                "load": load,
                **(
                    {f"max_abs_diff_{k}": v for k, v in diff.items()} if "sequences" in name else {}
                ),
            }
        )
        print(
            f"{spec.label} {transitions:,}: {name}: {wall:.2f} s for {cfg.update_epochs} "
            f"epoch(s) x {cfg.minibatches} minibatches ({per_epoch:.2f} s/epoch)",
            flush=True,
        )
    return rows


def ppo_rows(market: Any, windows: Any, sizes: list[int], device: str, quick: bool) -> list:
    """Every policy of :data:`POLICIES` on rollouts of every size in ``sizes`` (envs)."""
    base = PPOConfig()
    if quick:
        base = base.model_copy(update={"steps_per_rollout": 16})
    return [
        row
        for spec in POLICIES
        for envs in sizes
        for row in _ppo_case(market, windows, spec, envs, base, device)
    ]


# --------------------------------------------------------------------------------------
# 3. GAE beside TorchRL
# --------------------------------------------------------------------------------------


def _best(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _gae_case(steps: int, envs: int, dev: torch.device, repeats: int, functional: Any) -> dict:
    g = torch.Generator().manual_seed(0)
    r, v, nv = (torch.randn(steps, envs, generator=g).to(dev) for _ in range(3))
    terminated = (torch.rand(steps, envs, generator=g) < 0.005).to(dev)
    done = terminated | (torch.rand(steps, envs, generator=g) < 0.005).to(dev)
    args = (r, v, nv, terminated, done, 0.99, 0.95)
    ours, _ = gae(*args)
    row = {"steps": steps, "envs": envs, "ours_ms": 1e3 * _best(lambda: gae(*args), dev, repeats)}
    if functional is None:
        return row
    theirs = [x.T[..., None].contiguous() for x in (v, nv, r, done, terminated)]  # (N, T, 1)
    for key, fn in (
        ("torchrl", functional.generalized_advantage_estimate),
        ("torchrl_vec", functional.vec_generalized_advantage_estimate),
    ):
        adv, _ = fn(0.99, 0.95, *theirs)
        row[f"{key}_max_abs_diff"] = float((adv[..., 0].T - ours).abs().max())
        row[f"{key}_ms"] = 1e3 * _best(lambda fn=fn: fn(0.99, 0.95, *theirs), dev, repeats)
    return row


def gae_rows(shapes: list[tuple[int, int]], device: str, repeats: int) -> list:
    """Best-of-``repeats`` ms of ours and TorchRL's on the same random ``(T, N)`` rollouts
    (about 1% of steps end an episode)."""
    try:
        from torchrl.objectives.value import functional
    except ImportError as err:
        print(f"TorchRL GAE skipped: {err}", flush=True)
        functional = None
    rows = []
    for steps, envs in shapes:
        rows.append(_gae_case(steps, envs, torch.device(device), repeats, functional))
        timed = ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items() if k.endswith("_ms"))
        print(f"GAE {steps} x {envs:,}: {timed}", flush=True)
    return rows


# --------------------------------------------------------------------------------------
def _sizes(quick: bool, cuda: bool) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Env counts of the env rows and the PPO rollouts, and the (T, N) GAE shapes."""
    if quick:
        return [1, 64, 1024, 8192], [16, 64], [(16, 64)]
    more = [65536] if cuda else []
    ppo = [128, 1024] + ([8192] if cuda else [])
    return [1, 64, 1024, 8192, *more], ppo, [(128, n) for n in (128, 1024, 8192, *more)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds 65,536 envs).")
    parser.add_argument(
        "--peer-python",
        default=None,
        help="Python of a venv with gym-anytrading, FinRL and stable-baselines3 "
        "(rl_peers.py); without it the peers are skipped.",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per env row.")
    parser.add_argument(
        "--quick", action="store_true", help="A smoke run: short rows, tiny rollouts."
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 suits a shared machine)."
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "rl.md")
    parser.add_argument(
        "--rerender", type=Path, default=None, help="Only rewrite the .md of this rl.json."
    )
    parser.add_argument(
        "--ppo-only",
        type=Path,
        default=None,
        help="Re-measure the PPO rows only; the env, peer and GAE rows come from this rl.json.",
    )
    args = parser.parse_args()
    if args.rerender is not None:
        saved = json.loads(args.rerender.read_text())
        text = report(saved, saved["env"], saved["peers"], saved["ppo"], saved["gae"])
        atomic_write(args.rerender.with_suffix(".md"), text)
        print(f"wrote {args.rerender.with_suffix('.md')}")
        return
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device — use --device cpu")
    torch.set_num_threads(args.threads)
    seconds = 0.3 if args.quick else args.seconds
    env_sizes, ppo_sizes, gae_shapes = _sizes(args.quick, cuda)
    load = [os.getloadavg()[0]]
    started = time.strftime("%Y-%m-%d %H:%M")
    saved = None if args.ppo_only is None else json.loads(args.ppo_only.read_text())
    if saved is None:
        with tempfile.TemporaryDirectory() as tmp:
            frame, peers = _peers(args.peer_python, seconds, Path(tmp))
        real = frame is not None
    else:  # the saved run's peer rows; the GOOGL bars from the peer venv, if given
        frame, peers = _peer_googl(args.peer_python), saved["peers"]
        real = frame is not None
    if frame is None:
        frame, real = _googl()
    market, windows = _googl_market(frame, window=WINDOW)
    env = env_rows(market, windows, env_sizes, args.device, seconds) if saved is None else None
    env = saved["env"] if saved is not None else env
    load.append(os.getloadavg()[0])
    ppo = ppo_rows(market, windows, ppo_sizes, args.device, args.quick)
    load.append(os.getloadavg()[0])
    if saved is None:
        gae_ = gae_rows(gae_shapes, args.device, 5 if args.quick else 30)
    else:
        gae_ = saved["gae"]
    load.append(os.getloadavg()[0])
    meta = {
        "started": started,
        "quick": args.quick,
        "window": WINDOW,
        "load": load,
        "machine": f"{args.device}, torch {torch.__version__}, torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}"
        + (f", {torch.cuda.get_device_name()}" if cuda else ""),
        "data": ("gym-anytrading's STOCKS_GOOGL" if real else "a seeded random walk")
        + f", {len(frame):,} daily bars; ours observe a {WINDOW}-bar window of (close, diff) "
        "in episodes of 256 bars",
    }
    payload = {
        **meta,
        "env": env,
        "peers": peers,
        "ppo": ppo,
        "gae": gae_,
        "policies": [p.__dict__ for p in POLICIES],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, report(meta, env, peers, ppo, gae_))
    atomic_write(args.output.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
