"""Playing rollouts on a batched env: what PPO collects, in this process or on a Ray actor.

    rollouts = EnvRollouts(env, generator)       # env: the VectorTradingEnv interface
    rollouts.reset(seed=0)
    played = rollouts.collect(policy, steps=128)  # played.buffer: (T, N, ...) tensors

:class:`EnvRollouts` steps every environment with the policy's sampled actions and keeps
what carries over from one rollout to the next: the current observation and each
environment's running episode return. :class:`~.ppo.PPO` collects with one in this
process; each actor of :class:`~.distributed.RayRollouts` holds one for its shard of the
environments. Truncated episodes store the critic's value of ``info["final_obs"]`` (the
bootstrap); terminated ones do not bootstrap. While the policy's backbone is frozen
(``reinforcement.ppo.freeze_backbone_updates``) and the policy runs eagerly, the buffer
also keeps each observation's backbone state (``RolloutBuffer.states``), which the update
reuses instead of encoding the windows again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .buffer import RolloutBuffer
from .policy import ActorCritic

__all__ = ["EnvRollouts", "Played"]

Forward = Callable[[Mapping[str, Tensor]], Any]


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``mode="bf16"``, or ``"auto"`` on CUDA; nothing otherwise."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Played:
    """One rollout: the buffer ``(T, N, ...)``, the critic's value of the state after its last
    step ``(N,)``, and the summed return and count of the episodes that ended in it."""

    buffer: RolloutBuffer
    last_value: Tensor
    ended_return: float
    ended: int

    @property
    def episode_return(self) -> float:
        """Mean return of the episodes that ended in the rollout; NaN if none did."""
        return self.ended_return / self.ended if self.ended else math.nan


class EnvRollouts:
    """``env`` with its current observation and running episode returns.

    ``generator`` (on the env's device) draws the action noise; PPO passes its own, which
    also shuffles its minibatches. :meth:`state_dict` holds the env's own state (when it
    has a ``state_dict``), the observation and the running returns.
    """

    def __init__(self, env: Any, generator: torch.Generator) -> None:
        self.env, self.generator = env, generator
        self.num_envs, self.action_mode = int(env.num_envs), env.action_mode
        self.device = torch.device(env.device)
        self.obs: dict[str, Tensor] | None = None  # set by reset()
        self.episode_return = torch.zeros(self.num_envs, device=self.device)

    def reset(self, seed: int | None = None) -> None:
        """Restart every episode (``seed`` re-seeds the env) and the running returns."""
        self.obs, _ = self.env.reset(seed=seed)
        self.episode_return = torch.zeros(self.num_envs, device=self.device)

    @torch.no_grad()
    def collect(
        self,
        policy: ActorCritic,
        steps: int,
        *,
        forward: Forward | None = None,
        autocast_mode: str = "auto",
    ) -> Played:
        """Play ``steps`` steps of every env; ``forward`` (default ``policy``, e.g. a compiled
        one) runs the policy, under :func:`autocast` with ``autocast_mode``.

        With ``policy.backbone_frozen`` and ``forward`` the policy itself, the policy runs as
        ``heads(norm(backbone_state(obs)))`` and the buffer stores the backbone states.
        """
        if self.obs is None:
            raise RuntimeError("EnvRollouts.collect() before reset() — call reset() first")
        forward = policy if forward is None else forward
        keep_states = policy.backbone_frozen and forward is policy

        def value(obs: Mapping[str, Tensor]) -> Tensor:
            with autocast(self.device, autocast_mode):
                return forward(obs).value.float()

        obs, buffer = self.obs, None
        ended_sum = torch.zeros((), device=self.device)
        ended = torch.zeros((), device=self.device)
        for t in range(steps):
            state = None
            with autocast(self.device, autocast_mode):
                if keep_states:
                    state = policy.backbone_state(obs)
                    out = policy.heads(policy.norm(state), obs["portfolio"])
                else:
                    out = forward(obs)
            raw, action = policy.sample(out, self.generator)
            logprob, _ = policy.log_prob_entropy(out, raw)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            if buffer is None:
                buffer = RolloutBuffer(steps, obs, raw, state)
            buffer.store(t, obs, raw, logprob, out.value, reward, terminated, truncated, state)
            if truncated.any():
                buffer.final_values[t] = torch.where(truncated, value(_final_obs(info)), 0.0)
            done = terminated | truncated
            self.episode_return += reward
            ended_sum += torch.where(done, self.episode_return, 0.0).sum()
            ended += done.sum()
            self.episode_return = self.episode_return.masked_fill(done, 0.0)
            obs = next_obs
        self.obs = obs
        return Played(buffer, value(obs), float(ended_sum.item()), int(ended.item()))

    # ----------------------------------------------------------------------------------
    # Checkpoint state
    # ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The env's state (if it has one), the observation and the running returns
        (tensors and numbers only: ``torch.load(weights_only=True)`` reads it)."""
        if self.obs is None:
            raise RuntimeError("EnvRollouts.state_dict() before reset() — call reset() first")
        state: dict[str, Any] = {
            "obs": {k: v.clone() for k, v in self.obs.items()},
            "episode_return": self.episode_return.clone(),
        }
        if callable(getattr(self.env, "state_dict", None)):
            state["env"] = self.env.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from what :meth:`state_dict` saved."""
        if "shards" in state:
            raise ValueError(
                f"this state was saved by {len(state['shards'])} Ray rollout workers — resume "
                "with the same reinforcement.rollout_workers"
            )
        if "env" in state:
            if not callable(getattr(self.env, "load_state_dict", None)):
                raise ValueError(
                    f"the state holds an environment state but {type(self.env).__name__} has "
                    "no load_state_dict — resume with the environment class that saved it"
                )
            self.env.load_state_dict(state["env"])
        self.obs = {k: v.to(self.device) for k, v in state["obs"].items()}
        self.episode_return = state["episode_return"].to(self.device)


def _final_obs(info: Mapping[str, Any]) -> Mapping[str, Tensor]:
    final = info.get("final_obs")
    if not isinstance(final, Mapping) or "window" not in final:
        raise ValueError(
            "the env truncated an episode but info['final_obs'] holds no observation "
            "dict — a SAME_STEP autoreset env must return the finished episode's last obs"
        )
    return final
