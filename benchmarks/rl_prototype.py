"""The fast PPO updates that began here as prototypes, now shipped in the package.

Both are :class:`~market_nn_plus_ultra.rl.PPO` paths; this module only adapts a rollout
collected with a training backbone to them, for ``benchmarks/rl.py`` and
tests/benchmarks/test_rl.py:

- :func:`sequence_update` — :meth:`PPO.sequence_update`
  (``reinforcement.ppo.sequence_update``): with ``model.receptive_field <= W`` each env's
  rollout is one sequence of ``W + T − 1`` rows whose position ``W − 1 + t`` ends the
  window at step t; minibatches are groups of whole envs (as recurrent PPO samples them),
  so an epoch encodes ``N·(W + T − 1)`` rows instead of ``N·T·W``.
- :func:`cached_update` — :meth:`PPO.update` while the backbone is frozen
  (``reinforcement.ppo.freeze_backbone_updates``): the backbone's states are computed once
  and the epochs train the layer norm and the heads on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from market_nn_plus_ultra.rl import PPO, ActorCritic, PolicyOutput
from market_nn_plus_ultra.rl.buffer import RolloutBuffer

__all__ = [
    "cached_update",
    "rollout_rows",
    "sequence_forward",
    "sequence_states",
    "sequence_update",
]


def rollout_rows(windows: Tensor) -> Tensor:
    """A rollout's windows ``(T, N, S, W, F)`` → each env's rows ``(N, S, W + T − 1, F)``.

    Valid only when every env's window slides by one row a step (no restart inside the
    rollout); anything else raises.
    """
    if windows.shape[0] > 1 and not torch.equal(windows[1:, ..., :-1, :], windows[:-1, ..., 1:, :]):
        raise ValueError(
            "an episode restarted inside the rollout: the rows of one sequence need windows "
            "that slide by one row a step — use an episode_length that is a multiple of "
            "steps_per_rollout"
        )
    rest = windows[1:, ..., -1, :].permute(1, 2, 0, 3)  # (N, S, T-1, F)
    return torch.cat([windows[0], rest], dim=2)  # (N, S, W+T-1, F)


def sequence_states(policy: ActorCritic, rows: Tensor, steps: int) -> Tensor:
    """``ActorCritic.encode`` of every step of ``n`` envs' rollouts, ``z (T, n, S, D)``, from
    :meth:`ActorCritic.sequence_states`."""
    return policy.norm(policy.sequence_states(rows, steps))


def sequence_forward(policy: ActorCritic, rows: Tensor, portfolio: Tensor) -> PolicyOutput:
    """The policy's outputs for the ``T·n`` transitions of ``n`` envs' rollouts in
    ``(t, env)`` order, from :func:`sequence_states`; ``portfolio (T, n, S, 3)``."""
    z = sequence_states(policy, rows, portfolio.shape[0])
    return policy.heads(z.flatten(0, 1), portfolio.flatten(0, 1))


def sequence_update(ppo: PPO, rollout: RolloutBuffer, advantages: Tensor, returns: Tensor) -> int:
    """:meth:`PPO.sequence_update` on the rollout; the optimiser steps taken."""
    diag = ppo.sequence_update(rollout, advantages, returns)
    return round(diag["epochs"] * ppo.cfg.minibatches)


def cached_update(ppo: PPO, rollout: RolloutBuffer, batch: Mapping[str, Any]) -> int:
    """:meth:`PPO.update` with the backbone frozen on ``batch`` plus the backbone states of
    its observations — the rollout's own (``RolloutBuffer.states``, kept when it was played
    frozen), else one no-grad pass. The optimiser steps taken; the backbone trains after."""
    ppo.policy.freeze_backbone(True)
    try:
        states = rollout.states
        states = ppo.backbone_states(batch["obs"]) if states is None else states.flatten(0, 1)
        diag = ppo.update({**batch, "states": states})
        return round(diag["epochs"] * ppo.cfg.minibatches)
    finally:
        ppo.policy.freeze_backbone(False)
