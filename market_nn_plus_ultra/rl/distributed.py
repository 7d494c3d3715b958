"""Rollouts on Ray actors: each holds a shard of the environments and a copy of the policy.

    rollouts = RayRollouts.from_config(cfg, num_envs=256, workers=4)
    ppo = PPO(None, policy, cfg.reinforcement.ppo, total_updates, rollouts=rollouts)
    ppo.learn()
    rollouts.close()

Actor i builds ``VectorTradingEnv.from_config(cfg, n_i, device)`` for its shard of
``n_i`` environments (``num_envs`` split as evenly as possible, in order) and an
:class:`~.policy.ActorCritic` of the learner's architecture. Each update,
:meth:`RayRollouts.collect` puts the learner's weights into Ray's object store once; every
actor loads them, plays ``steps`` steps with its own action generator
(:class:`~.rollout.EnvRollouts`, the code of the single-process path) and returns its
rollout as CPU tensors; the learner joins the shards on the env axis and runs the same
GAE and update as in one process. Shard i resets with seed ``seed + i`` (its env's starts
and its action generator), so the joined batch is what each shard plays alone with that
seed, and one worker seeded like the learner plays the single-process path's first
rollout exactly. Ray is imported when rollouts are built (``pip install -e
'.[distributed]'``); the single-process path never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..config import Config, ModelConfig
from .buffer import RolloutBuffer
from .env import VectorTradingEnv
from .policy import ActorCritic
from .rollout import EnvRollouts, Played

__all__ = ["RayRollouts"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "Ray rollouts need Ray: install the distributed extra with "
            "pip install -e '.[distributed]', or set reinforcement.rollout_workers=0 to "
            "collect in this process"
        ) from exc
    return ray


def _to_cpu(value: Any) -> Any:
    """Tensors inside dicts and lists moved to the CPU (Ray ships them between processes)."""
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class _Shard:
    """One Ray actor: a shard of the envs, a copy of the policy and its action generator."""

    def __init__(
        self, cfg: Config, model: ModelConfig, num_envs: int, device: str, seed: int, threads: int
    ) -> None:
        torch.set_num_threads(threads)  # small per-step tensors: one thread per CPU of the actor
        env = VectorTradingEnv.from_config(cfg, num_envs, device)
        policy = ActorCritic.from_config(model, env.n_features, env.action_mode)
        self.policy = policy.to(env.device).eval()
        self.generator = torch.Generator(device=env.device).manual_seed(seed)
        self.rollouts = EnvRollouts(env, self.generator)
        self.rollouts.reset(seed)

    def describe(self) -> dict[str, Any]:
        env = self.rollouts.env
        shapes = {k: tuple(v.shape) for k, v in self.policy.state_dict().items()}
        return {
            "n_symbols": env.n_symbols,
            "n_features": env.n_features,
            "action_mode": env.action_mode,
            "policy": shapes,
        }

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            self.generator.manual_seed(seed)
        self.rollouts.reset(seed)

    def collect(self, weights: Mapping[str, Tensor], steps: int, autocast_mode: str) -> Played:
        self.policy.load_state_dict(weights)
        played = self.rollouts.collect(self.policy, steps, autocast_mode=autocast_mode)
        return Played(
            played.buffer.to("cpu"), played.last_value.cpu(), played.ended_return, played.ended
        )

    def configure(self, settings: dict[str, Any]) -> None:
        self.rollouts.env.configure(**settings)

    def stage_settings(self) -> dict[str, Any]:
        return dict(self.rollouts.env.stage_settings)

    def state_dict(self) -> dict[str, Any]:
        return {**_to_cpu(self.rollouts.state_dict()), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.rollouts.load_state_dict(state)


class RayRollouts:
    """Shards of ``num_envs`` environments on Ray actors, collected as one batch.

    Build with :meth:`from_config`. PPO reads ``num_envs``, ``action_mode`` and ``device``
    (where the joined rollout lands: the learner's device) and calls :meth:`reset`,
    :meth:`collect`, :meth:`state_dict` and :meth:`load_state_dict`; :meth:`configure`
    sets every shard's env (a curriculum stage), :meth:`close` ends the actors.
    """

    def __init__(
        self, actors: list[Any], shard_sizes: list[int], info: Mapping[str, Any], device: str
    ) -> None:
        self._actors, self.shard_sizes = list(actors), list(shard_sizes)
        self.num_envs, self.workers = sum(shard_sizes), len(actors)
        self.n_symbols, self.n_features = int(info["n_symbols"]), int(info["n_features"])
        self.action_mode = info["action_mode"]
        self.device = torch.device(device)
        self._policy_shapes: dict[str, tuple[int, ...]] = dict(info["policy"])

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        num_envs: int,
        workers: int,
        device: str = "cpu",
        seed: int | None = None,
        *,
        model: ModelConfig | None = None,
        learner_device: str | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float | None = None,
    ) -> RayRollouts:
        """``workers`` actors, each ``VectorTradingEnv.from_config(cfg, n_i, device)`` with seed
        ``seed + i`` (default ``cfg.seed``) and an ``ActorCritic`` of ``model`` (default
        ``cfg.model``; pass the learner's, e.g. a warm start's, when it differs).

        Connects to the running Ray (``ray.init(address=...)`` first for a cluster), else
        starts a local one. Each actor reserves ``cpus_per_worker`` CPUs (its torch threads)
        and ``gpus_per_worker`` GPUs: by default 0 on CPU and, on CUDA, one GPU per actor, or
        an equal share of the cluster's GPUs when there are fewer GPUs than actors (Ray
        picks each actor's GPU: ``device="cuda"`` inside it). ``learner_device`` (default
        ``device``) is where the joined rollouts land.
        """
        if workers < 1:
            raise ValueError(f"reinforcement.rollout_workers must be >= 1 for Ray, got {workers}")
        if num_envs < workers:
            raise ValueError(
                f"{num_envs} environments cannot fill reinforcement.rollout_workers={workers} "
                "shards — raise reinforcement.env.num_envs or lower rollout_workers"
            )
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
        ray = _ray()
        if not ray.is_initialized():
            ray.init()
        resources = ray.cluster_resources()
        on_cuda = torch.device(device).type == "cuda"
        if gpus_per_worker is None:
            gpus_per_worker = min(1.0, resources.get("GPU", 0.0) / workers) if on_cuda else 0.0
        if on_cuda and gpus_per_worker <= 0:
            raise ValueError(
                f"Ray rollouts on {device!r} need GPUs but the Ray cluster has none — use "
                "device='cpu' or join a node with a GPU"
            )
        _check_resources(resources, workers, cpus_per_worker, gpus_per_worker)
        base = cfg.seed if seed is None else int(seed)
        sizes = [num_envs // workers + (i < num_envs % workers) for i in range(workers)]
        remote = ray.remote(_Shard).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
        threads = max(1, int(cpus_per_worker))
        model = cfg.model if model is None else model
        where = "cuda" if on_cuda else device  # an actor sees only the GPU Ray gave it
        actors = [
            remote.remote(cfg, model, n, where, base + i, threads) for i, n in enumerate(sizes)
        ]
        try:
            infos = ray.get([a.describe.remote() for a in actors])
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise
        return cls(actors, sizes, infos[0], device if learner_device is None else learner_device)

    # ----------------------------------------------------------------------------------
    # What PPO calls
    # ----------------------------------------------------------------------------------

    def check_policy(self, policy: ActorCritic) -> None:
        """Refuse a learner policy whose tensors the actors' copies cannot load."""
        shapes = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
        if shapes == self._policy_shapes:
            return
        names = sorted(set(shapes) | set(self._policy_shapes))
        diff = [n for n in names if shapes.get(n) != self._policy_shapes.get(n)]
        listed = ", ".join(
            f"{n}: learner {shapes.get(n)} vs actors {self._policy_shapes.get(n)}" for n in diff[:4]
        )
        raise ValueError(
            f"the learner's policy and the rollout actors' differ in {len(diff)} tensors "
            f"({listed}) — pass the learner's model section to "
            "RayRollouts.from_config(..., model=...)"
        )

    def reset(self, seed: int | None = None) -> None:
        """Restart every shard's episodes; ``seed`` re-seeds shard i with ``seed + i``."""
        seeds = [None if seed is None else int(seed) + i for i in range(self.workers)]
        self._get([a.reset.remote(s) for a, s in zip(self._live(), seeds, strict=True)])

    def collect(
        self, policy: ActorCritic, steps: int, *, forward: Any = None, autocast_mode: str = "auto"
    ) -> Played:
        """Every shard plays ``steps`` steps with ``policy``'s weights; one rollout ``(T, N)``.

        ``forward`` is the learner's (e.g. compiled) call and is not shipped: the actors run
        their own copy of the policy, eagerly.
        """
        ray = _ray()
        weights = ray.put({k: v.detach().cpu() for k, v in policy.state_dict().items()})
        parts = self._get([a.collect.remote(weights, steps, autocast_mode) for a in self._live()])
        buffer = RolloutBuffer.cat([p.buffer for p in parts]).to(self.device)
        last_value = torch.cat([p.last_value for p in parts]).to(self.device)
        return Played(
            buffer, last_value, sum(p.ended_return for p in parts), sum(p.ended for p in parts)
        )

    def configure(
        self,
        *,
        episode_length: int | None = None,
        cost_multiplier: float | None = None,
        window: int | None = None,
        high_vol_share: float | str | None = None,
    ) -> None:
        """``VectorTradingEnv.configure`` on every shard (in force from the next reset); the
        same keywords, checked by each shard's env."""
        settings = {
            "episode_length": episode_length,
            "cost_multiplier": cost_multiplier,
            "window": window,
            "high_vol_share": high_vol_share,
        }
        self._get([a.configure.remote(settings) for a in self._live()])

    @property
    def stage_settings(self) -> dict[str, Any]:
        """The shards' env settings (one dict: :meth:`configure` sets every shard alike)."""
        return self._get(self._live()[0].stage_settings.remote())

    def state_dict(self) -> dict[str, Any]:
        """Every shard's env state, observation, running returns and action generator."""
        states = self._get([a.state_dict.remote() for a in self._live()])
        return {"shard_sizes": list(self.shard_sizes), "shards": states}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue every shard from :meth:`state_dict`'s state (same shard layout only)."""
        if "shards" not in state:
            raise ValueError(
                "this state was saved by rollouts in one process — resume with "
                "reinforcement.rollout_workers=0"
            )
        sizes = [int(n) for n in state["shard_sizes"]]
        if sizes != self.shard_sizes:
            raise ValueError(
                f"the state holds {len(sizes)} shards of {sizes} environments, these rollouts "
                f"have {self.workers} of {self.shard_sizes} — resume with the saved "
                f"reinforcement.rollout_workers={len(sizes)} and env.num_envs={sum(sizes)}"
            )
        shards = state["shards"]
        self._get([a.load_state_dict.remote(s) for a, s in zip(self._live(), shards, strict=True)])

    def close(self) -> None:
        """End the actors (Ray itself keeps running); later calls are refused."""
        if self._actors:
            ray = _ray()
            for actor in self._actors:
                ray.kill(actor)
        self._actors = []

    def __enter__(self) -> RayRollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> list[Any]:
        if not self._actors:
            raise RuntimeError("these Ray rollouts are closed — build new ones with from_config")
        return self._actors

    @staticmethod
    def _get(refs: Any) -> Any:
        return _ray().get(refs)


def _check_resources(
    resources: Mapping[str, float], workers: int, cpus: float, gpus: float
) -> None:
    """Refuse actors the cluster can never place (Ray would wait for them forever)."""
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        have, need = float(resources.get(name, 0.0)), workers * each
        if need > have:
            raise ValueError(
                f"reinforcement.rollout_workers={workers} Ray actors of {each:g} {name} need "
                f"{need:g} {name}s, the Ray cluster has {have:g} — lower rollout_workers, "
                f"cpus_per_worker / gpus_per_worker, or add nodes"
            )
