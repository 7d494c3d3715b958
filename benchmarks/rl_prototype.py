"""PROTOTYPES of faster PPO updates, measured by ``benchmarks/rl.py`` — not package code.

The shipped :meth:`~market_nn_plus_ultra.rl.PPO.update` encodes every transition's whole
window again in every minibatch: ``T·N`` windows of ``W`` rows an epoch. Two ways out:

- :func:`sequence_update` — with a backbone of ``model.receptive_field = W`` (the
  sequence backbones under a causal ``windows.normalise``), each env's rollout is one
  sequence of ``W + T − 1`` rows whose position ``W − 1 + t`` is the window at step t;
  minibatches are groups of whole envs (as recurrent PPO samples them), so an epoch
  encodes ``N·(W + T − 1)`` rows instead of ``N·T·W``.
- :func:`cached_update` — while the backbone is frozen
  (``reinforcement.ppo.freeze_backbone_updates``), its outputs are computed once and the
  epochs train the layer norm and the heads only.

Both reuse the shipped loss (:func:`~market_nn_plus_ultra.rl.ppo_loss`), clipping, epochs
and minibatch sizes; tests/benchmarks/test_rl.py checks that one step of each moves the
weights exactly as the shipped update does on the same transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from market_nn_plus_ultra.rl import PPO, ActorCritic, PolicyOutput, ppo_loss
from market_nn_plus_ultra.rl.buffer import RolloutBuffer
from market_nn_plus_ultra.rl.rollout import autocast

__all__ = [
    "cached_update",
    "rollout_rows",
    "sequence_forward",
    "sequence_hidden",
    "sequence_states",
    "sequence_update",
]

_FIELDS = ("actions", "logprobs", "values", "advantages", "returns")


def _heads(policy: ActorCritic, z: Tensor, portfolio: Tensor) -> PolicyOutput:
    """``ActorCritic.forward`` after ``encode``: ``z (..., S, D)`` and the portfolio
    ``(..., S, 3)`` → the output with every leading dim flattened (continuous actions)."""
    p = policy.portfolio_features(portfolio.to(z.dtype))
    u = policy.actor.hidden(z, p)
    mean = (policy.actor.fc2(u) + policy.actor.skip(z)).squeeze(-1)  # (..., S)
    pooled = policy.critic.hidden(z, p).mean(dim=-2)  # (..., D)
    value = policy.critic.fc2(pooled).squeeze(-1)  # (...)
    s = mean.shape[-1]
    return PolicyOutput(
        value=value.reshape(-1).float(), mean=mean.reshape(-1, s).float(), log_std=policy.log_std
    )


def rollout_rows(windows: Tensor) -> Tensor:
    """A rollout's windows ``(T, N, S, W, F)`` → each env's rows ``(N, S, W + T − 1, F)``.

    Valid only when every env's window slides by one row a step (no restart inside the
    rollout); anything else raises.
    """
    if windows.shape[0] > 1 and not torch.equal(windows[1:, ..., :-1, :], windows[:-1, ..., 1:, :]):
        raise ValueError(
            "an episode restarted inside the rollout: the sequence prototype needs windows "
            "that slide by one row a step — use an episode_length that is a multiple of "
            "steps_per_rollout"
        )
    rest = windows[1:, ..., -1, :].permute(1, 2, 0, 3)  # (N, S, T-1, F)
    return torch.cat([windows[0], rest], dim=2)  # (N, S, W+T-1, F)


def sequence_hidden(policy: ActorCritic, rows: Tensor, steps: int) -> Tensor:
    """PROTOTYPE. The backbone's last hidden step for every step of ``n`` envs' rollouts,
    in one pass per env: ``rows (n, S, W + T − 1, F)`` → ``(T, n, S, D)``. Exact for a
    backbone with ``receptive_field = W``: position ``W − 1 + t`` of the long sequence reads
    the rows of the window at step t."""
    n, s, length, f = rows.shape
    h = policy.backbone(rows.reshape(n * s, length, f), None)  # (n·S, L, D)
    h = h[:, length - steps :]  # (n·S, T, D)
    return h.reshape(n, s, steps, -1).permute(2, 0, 1, 3)  # (T, n, S, D)


def sequence_states(policy: ActorCritic, rows: Tensor, steps: int) -> Tensor:
    """PROTOTYPE. ``ActorCritic.encode`` of every step of ``n`` envs' rollouts:
    ``z (T, n, S, D)`` from :func:`sequence_hidden`."""
    return policy.norm(sequence_hidden(policy, rows, steps))


def sequence_forward(policy: ActorCritic, rows: Tensor, portfolio: Tensor) -> PolicyOutput:
    """PROTOTYPE. The policy's outputs for the ``T·n`` transitions of ``n`` envs' rollouts
    in ``(t, env)`` order, from :func:`sequence_states`; ``portfolio (T, n, S, 3)``."""
    if policy.market_state or policy.action_mode != "continuous":
        raise ValueError("the sequence prototype covers continuous actions without market state")
    return _heads(policy, sequence_states(policy, rows, portfolio.shape[0]), portfolio)


def _step(ppo: PPO, loss: Any) -> bool:
    """One optimiser step as ``PPO.update`` takes it; False once the KL stop applies."""
    if ppo.cfg.target_kl is not None and loss.approx_kl.item() > ppo.cfg.target_kl:
        return False
    ppo.optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(ppo.policy.parameters(), ppo.cfg.max_grad_norm)
    ppo.optimizer.step()
    return True


def _loss(ppo: PPO, out: PolicyOutput, batch: Mapping[str, Tensor]) -> Any:
    cfg = ppo.cfg
    new_logprob, entropy = ppo.policy.log_prob_entropy(out, batch["actions"])
    adv = batch["advantages"]
    if cfg.normalise_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return ppo_loss(
        new_logprob,
        batch["logprobs"],
        adv,
        out.value,
        batch["values"],
        batch["returns"],
        entropy,
        clip_coef=cfg.clip_coef,
        value_clip=cfg.value_clip if cfg.clip_value_loss else None,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
    )


def sequence_update(ppo: PPO, rollout: RolloutBuffer, advantages: Tensor, returns: Tensor) -> int:
    """PROTOTYPE of a faster ``PPO.update``: minibatches of whole envs (all T steps each, as
    recurrent PPO samples them) instead of random transitions, each env's rollout encoded
    in one backbone pass (:func:`sequence_forward`): ``W + T − 1`` rows per env instead of
    ``T`` windows of ``W`` rows. Same loss, clipping, epochs and minibatch size. Returns the
    optimiser steps taken."""
    cfg, steps = ppo.cfg, rollout.steps
    rows = rollout_rows(rollout.obs["window"])  # (N, S, L, F)
    fields = {
        "actions": rollout.actions,
        "logprobs": rollout.logprobs,
        "values": rollout.values,
        "advantages": advantages,
        "returns": returns,
    }
    per = rollout.num_envs // cfg.minibatches
    taken = 0
    for _ in range(cfg.update_epochs):
        order = torch.randperm(rollout.num_envs, generator=ppo.generator, device=ppo.device)
        for k in range(cfg.minibatches):
            envs = order[k * per : (k + 1) * per]
            with autocast(ppo.device, cfg.autocast):
                out = sequence_forward(ppo.policy, rows[envs], rollout.obs["portfolio"][:, envs])
            batch = {
                key: v[:, envs].reshape(steps * per, *v.shape[2:]) for key, v in fields.items()
            }
            if not _step(ppo, _loss(ppo, out, batch)):
                return taken
            taken += 1
    return taken


def cached_update(
    ppo: PPO, rollout: RolloutBuffer, batch: Mapping[str, Any], envs: int = 256
) -> int:
    """PROTOTYPE of ``PPO.update`` while the backbone is frozen
    (``reinforcement.ppo.freeze_backbone_updates``): the backbone's outputs for the whole
    rollout come from one no-grad pass (:func:`sequence_hidden`, ``envs`` envs at a time)
    and the epochs train the rest (layer norm, actor, critic) on them, over shuffled transitions as the
    shipped update does (which runs the frozen backbone again in every minibatch)."""
    cfg, policy = ppo.cfg, ppo.policy
    policy.freeze_backbone(True)
    rows = rollout_rows(rollout.obs["window"])  # (N, S, L, F)
    with torch.no_grad(), autocast(ppo.device, cfg.autocast):
        parts = [sequence_hidden(policy, rows[i : i + envs], rollout.steps)
                 for i in range(0, rollout.num_envs, envs)]  # fmt: skip
    hidden = torch.cat(parts, dim=1).flatten(0, 1)  # (T·N, S, D), the batch's order
    size = hidden.shape[0]
    mb, taken = size // cfg.minibatches, 0
    try:
        for _ in range(cfg.update_epochs):
            order = torch.randperm(size, generator=ppo.generator, device=ppo.device)
            for k in range(cfg.minibatches):
                idx = order[k * mb : (k + 1) * mb]
                with autocast(ppo.device, cfg.autocast):
                    z = policy.norm(hidden[idx])
                    out = _heads(policy, z, batch["obs"]["portfolio"][idx])
                part = {key: batch[key][idx] for key in _FIELDS}
                if not _step(ppo, _loss(ppo, out, part)):
                    return taken
                taken += 1
        return taken
    finally:
        policy.freeze_backbone(False)
