"""Proximal policy optimisation on the batched trading env, in the spirit of CleanRL's PPO.

Schulman et al. 2017 (PPO, arXiv:1707.06347) with generalised advantage estimation
(Schulman et al. 2016, arXiv:1506.02438). One update = one rollout of
``steps_per_rollout`` steps of every env, stored on the env's device, then
``update_epochs`` passes of ``minibatches`` minibatches of

    ratio  = exp(log π(a|s) − log π_old(a|s))
    L_clip = −mean(min(ratio · Â, clip(ratio, 1 − ε, 1 + ε) · Â))
    L_V    = ½ · mean(max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²))
    loss   = L_clip − c_ent · entropy + c_V · L_V

with Â standardised per minibatch, an early stop once the approximate KL passes
``target_kl``, gradient-norm clipping and a linearly annealed learning rate. Truncated
episodes bootstrap from the critic's value of ``info["final_obs"]``; terminated ones do
not. On CUDA the forward passes run under bf16 autocast; ``compile`` wraps the policy in
``torch.compile``. While the backbone is frozen (the first ``freeze_backbone_updates``
updates) the update does not run it again: every minibatch trains the layer norm and the
heads on the backbone states of the rollout (``RolloutBuffer.states``, kept while acting,
or computed once per update when the rollout source did not keep them), with the same
losses and gradients as encoding the windows again. With ``sequence_update`` (a backbone
of bounded look-back, ``model.receptive_field``) the minibatches are groups of whole envs,
as recurrent PPO draws them, and each env's rollout is encoded as one sequence of
``W + T − 1`` rows rather than ``T`` windows of ``W`` (envs whose episode restarted inside
the rollout are encoded window by window); the states equal the per-window ones to float
rounding. TorchRL's ``generalized_advantage_estimate`` and ``ClipPPOLoss`` agree with
:func:`gae` and :func:`ppo_loss` to 1e-5 (tests/rl/test_ppo.py).

Rollouts come from :class:`~.rollout.EnvRollouts` on the learner's env, or from a
``rollouts=`` source such as :class:`~.distributed.RayRollouts` (shards of the envs on Ray
actors); either way the learner runs the same GAE and update on the gathered batch.
:meth:`PPO.state_dict` holds everything a run needs to continue exactly: weights,
optimisers, counters, the generator and the rollout source's state (env, observation,
running episode returns).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from market_nn_plus_ultra.config.ppo import PPOConfig

from .buffer import AWRStats, ReplayBuffer, RolloutBuffer, Transitions, awr_update
from .policy import ActorCritic
from .rollout import EnvRollouts, autocast

__all__ = ["PPO", "PPOLoss", "UpdateStats", "explained_variance", "gae", "ppo_loss"]

_LOSS_FIELDS = ("actions", "logprobs", "values", "advantages", "returns")


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns ``(T, N)`` by one reverse pass over time, vectorised over envs.

    ``next_values[t]`` is ``V(s'_t)``, the value of the state after step t (a truncated
    episode's last observation, not the reset one); ``terminated`` zeroes it, ``done``
    (terminated or truncated) stops the recursion
    ``Â_t = δ_t + γλ(1 − done_t) Â_{t+1}``, ``δ_t = r_t + γ(1 − terminated_t) V(s'_t) − V(s_t)``.
    """
    deltas = rewards + gamma * next_values * (~terminated) - values  # (T, N)
    carry = gamma * lam * (~done).to(values.dtype)  # (T, N)
    advantages = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        advantages[t] = last
    return advantages, advantages + values


@dataclass
class PPOLoss:
    """The minibatch loss and its parts (tensors; the diagnostics carry no gradient)."""

    total: Tensor
    policy: Tensor
    value: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clip_fraction: Tensor


def ppo_loss(
    new_logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    new_value: Tensor,
    old_value: Tensor,
    returns: Tensor,
    entropy: Tensor,
    *,
    clip_coef: float,
    value_clip: float | None,
    ent_coef: float,
    vf_coef: float,
) -> PPOLoss:
    """Clipped surrogate, (clipped) value loss and entropy bonus; every input ``(B,)``.

    ``approx_kl`` is the low-variance estimator ``mean((ratio − 1) − log ratio)``
    (Schulman's k3); ``value_clip=None`` turns value clipping off.
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    surrogate = torch.min(
        ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages
    )
    policy = -surrogate.mean()
    value_err = (new_value - returns).square()
    if value_clip is not None:
        clipped = old_value + (new_value - old_value).clamp(-value_clip, value_clip)
        value_err = torch.max(value_err, (clipped - returns).square())
    value = 0.5 * value_err.mean()
    entropy_mean = entropy.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    total = policy - ent_coef * entropy_mean + vf_coef * value
    return PPOLoss(total, policy, value, entropy_mean, approx_kl, clip_fraction)


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """``1 − Var(target − predicted) / Var(target)``; NaN when the target is constant."""
    var = target.var()
    return math.nan if var.item() == 0 else float(1 - (target - predicted).var() / var)


@dataclass(frozen=True)
class UpdateStats:
    """One PPO update, as the table row and ``rollouts.parquet`` row read it."""

    update: int
    env_steps: int
    mean_reward: float
    episode_return: float  # mean over episodes that finished in the rollout; NaN if none
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    steps_per_second: float
    learning_rate: float
    epochs: float  # epochs run (fractional after a KL early stop)
    backbone_frozen: bool
    awr_loss: float  # NaN when the off-policy update is off or skipped
    rollout_seconds: float
    update_seconds: float

    def as_row(self) -> dict[str, Any]:
        """The stats as a plain dict (one row of ``rollouts.parquet``)."""
        return asdict(self)


class PPO:
    """The learner: ``PPO(env, policy, cfg, total_updates).learn()``.

    ``env`` follows the ``VectorTradingEnv`` interface (dict observations, ``[N, S]``
    actions, SAME_STEP autoreset with ``info["final_obs"]``); ``total_updates`` sets the
    learning-rate schedule. ``seed`` seeds the env reset, action sampling and minibatches.
    ``rollouts`` replaces the env as the source of rollouts (pass ``env=None``): e.g. a
    :class:`~.distributed.RayRollouts`, whose shards reset with seeds ``seed + i`` and
    draw their actions from their own generators.
    """

    def __init__(
        self,
        env: Any | None,
        policy: ActorCritic,
        cfg: PPOConfig,
        total_updates: int,
        seed: int = 0,
        *,
        rollouts: Any | None = None,
    ) -> None:
        if total_updates < 1:
            raise ValueError(f"total_updates must be >= 1, got {total_updates}")
        if (env is None) == (rollouts is None):
            raise ValueError(
                "PPO collects from an env or from rollouts=, one of them: pass env=None with "
                "rollouts= (the rollout source holds the environments)"
            )
        source = env if rollouts is None else rollouts
        batch = source.num_envs * cfg.steps_per_rollout
        if batch < cfg.minibatches:
            raise ValueError(
                f"reinforcement.ppo.minibatches={cfg.minibatches} exceeds the rollout batch "
                f"({source.num_envs} envs x {cfg.steps_per_rollout} steps) — lower minibatches"
            )
        if cfg.sequence_update:
            if policy.receptive_field is None or policy.market_state:
                raise ValueError(
                    "reinforcement.ppo.sequence_update needs a backbone with a bounded look-back "
                    "and no market state: set training.supervision=all (model.receptive_field) "
                    "and model.market_state_embedding=false, or turn sequence_update off"
                )
            if source.num_envs < cfg.minibatches:
                raise ValueError(
                    f"reinforcement.ppo.sequence_update draws minibatches of whole envs: "
                    f"minibatches={cfg.minibatches} exceeds the {source.num_envs} envs — lower "
                    "minibatches or add envs"
                )
        if policy.action_mode != source.action_mode:
            raise ValueError(
                f"the policy acts {policy.action_mode!r} but the env expects "
                f"{source.action_mode!r} — build both from the same reinforcement.env.action"
            )
        self.env, self.policy, self.cfg = env, policy.to(source.device), cfg
        self.device, self.total_updates = torch.device(source.device), total_updates
        self.policy.eval()  # no dropout: rollout and update must score the same policy
        self.forward: Callable[[Mapping[str, Tensor]], Any] = (
            torch.compile(self.policy) if cfg.compile else self.policy
        )
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.update_count, self.env_steps = 0, 0
        self.replay: ReplayBuffer | None = None
        self.awr_optimizer: torch.optim.Optimizer | None = None
        if cfg.off_policy.enabled:
            self.replay = ReplayBuffer(cfg.off_policy.buffer_size, self.device)
            actor = [p for n, p in self.policy.named_parameters() if not n.startswith("critic.")]
            self.awr_optimizer = torch.optim.Adam(actor, lr=cfg.off_policy.learning_rate)
        if rollouts is None:
            rollouts = EnvRollouts(env, self.generator)  # one generator: actions and shuffles
        elif callable(getattr(rollouts, "check_policy", None)):
            rollouts.check_policy(self.policy)
        self.rollouts = rollouts
        self.rollouts.reset(seed)

    # ----------------------------------------------------------------------------------
    # Rollout
    # ----------------------------------------------------------------------------------

    def collect(self) -> tuple[RolloutBuffer, Tensor, float]:
        """Play ``steps_per_rollout`` steps; ``(rollout, last value (N,), mean episode return)``."""
        played = self.rollouts.collect(
            self.policy,
            self.cfg.steps_per_rollout,
            forward=self.forward,
            autocast_mode=self.cfg.autocast,
        )
        return played.buffer, played.last_value, played.episode_return

    def reset_env(self, seed: int | None = None) -> None:
        """Restart every episode (``seed`` re-seeds the envs) and the running episode returns,
        e.g. after a curriculum stage changed the envs' settings."""
        self.rollouts.reset(seed)

    # ----------------------------------------------------------------------------------
    # Update
    # ----------------------------------------------------------------------------------

    def _minibatch_loss(self, batch: Mapping[str, Any], idx: Tensor) -> PPOLoss:
        with autocast(self.device, self.cfg.autocast):
            if "states" in batch:  # frozen backbone: its states of the rollout, not re-run
                z = self.policy.norm(batch["states"][idx])
                out = self.policy.heads(z, batch["obs"]["portfolio"][idx])
            else:
                out = self.forward({k: v[idx] for k, v in batch["obs"].items()})
        return self._loss(out, {k: batch[k][idx] for k in _LOSS_FIELDS})

    def _loss(self, out: Any, part: Mapping[str, Tensor]) -> PPOLoss:
        """The PPO loss of the policy's outputs ``out`` on the minibatch ``part``."""
        cfg = self.cfg
        new_logprob, entropy = self.policy.log_prob_entropy(out, part["actions"])
        adv = part["advantages"]
        if cfg.normalise_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return ppo_loss(
            new_logprob,
            part["logprobs"],
            adv,
            out.value.float(),
            part["values"],
            part["returns"],
            entropy,
            clip_coef=cfg.clip_coef,
            value_clip=cfg.value_clip if cfg.clip_value_loss else None,
            ent_coef=cfg.ent_coef,
            vf_coef=cfg.vf_coef,
        )

    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """``update_epochs`` x ``minibatches`` gradient steps on a flattened rollout ``batch``
        (keys obs, actions, logprobs, values, advantages, returns; optionally states, the
        frozen backbone's :meth:`~.policy.ActorCritic.backbone_state` of each observation,
        which the minibatches then use in place of the windows); mean diagnostics."""
        if "states" in batch and not self.policy.backbone_frozen:
            raise ValueError(
                "the batch holds backbone states but the backbone trains — states stand in for "
                "the windows only while it is frozen (reinforcement.ppo.freeze_backbone_updates)"
            )
        size = batch["returns"].shape[0]
        return self._epochs(size, lambda idx: self._minibatch_loss(batch, idx))

    def sequence_update(
        self,
        rollout: RolloutBuffer,
        advantages: Tensor,
        returns: Tensor,
        contiguous: Tensor | None = None,
    ) -> dict[str, float]:
        """:meth:`update` with minibatches of whole envs, each env's rollout encoded as one
        sequence (``reinforcement.ppo.sequence_update``); ``advantages``/``returns`` ``(T, N)``.

        ``contiguous (N,)`` marks the envs whose windows slide by one row every step (by
        default: found from the rollout); the others, whose episode restarted inside the
        rollout, are encoded window by window. Mean diagnostics, as :meth:`update`.
        """
        windows = rollout.obs["window"]  # (T, N, S, W, F)
        if contiguous is None:
            slides = windows[1:, ..., :-1, :] == windows[:-1, ..., 1:, :]  # (T-1, N, S, W-1, F)
            contiguous = slides.transpose(0, 1).flatten(1).all(dim=1)  # (N,)
        rest = windows[1:, ..., -1, :].permute(1, 2, 0, 3)  # (N, S, T-1, F)
        rows = torch.cat([windows[0], rest], dim=2)  # (N, S, W+T-1, F)
        fields = {
            "actions": rollout.actions,
            "logprobs": rollout.logprobs,
            "values": rollout.values,
            "advantages": advantages,
            "returns": returns,
        }
        return self._epochs(
            rollout.num_envs,
            lambda envs: self._sequence_loss(rollout, rows, fields, envs, contiguous),
        )

    def _sequence_loss(
        self,
        rollout: RolloutBuffer,
        rows: Tensor,
        fields: Mapping[str, Tensor],
        envs: Tensor,
        contiguous: Tensor,
    ) -> PPOLoss:
        steps, policy = rollout.steps, self.policy
        envs = torch.cat([envs[contiguous[envs]], envs[~contiguous[envs]]])  # sequences first
        n_seq = int(contiguous[envs].sum())
        parts = []
        with autocast(self.device, self.cfg.autocast):
            if n_seq:
                parts.append(policy.sequence_states(rows[envs[:n_seq]], steps))
            if n_seq < envs.numel():  # restarted inside the rollout: window by window
                rest = envs[n_seq:]
                obs = {k: v[:, rest].flatten(0, 1) for k, v in rollout.obs.items()}
                parts.append(policy.backbone_state(obs).unflatten(0, (steps, rest.numel())))
            h = torch.cat(parts, dim=1).flatten(0, 1)  # (T·n, S, D), (t, env) order
            portfolio = rollout.obs["portfolio"][:, envs].flatten(0, 1)
            out = policy.heads(policy.norm(h), portfolio)
        return self._loss(out, {k: v[:, envs].flatten(0, 1) for k, v in fields.items()})

    def _epochs(self, size: int, loss_of: Callable[[Tensor], PPOLoss]) -> dict[str, float]:
        """``update_epochs`` shuffles of ``range(size)`` cut into ``minibatches`` index sets,
        one gradient step on ``loss_of(indices)`` each, until the KL stop."""
        cfg = self.cfg
        mb = size // cfg.minibatches
        parts: list[Tensor] = []
        steps, total = 0, cfg.update_epochs * cfg.minibatches
        order = torch.empty(0, dtype=torch.long, device=self.device)
        while steps < total:
            if steps % cfg.minibatches == 0:  # a new epoch: a fresh shuffle
                order = torch.randperm(size, generator=self.generator, device=self.device)
            start = (steps % cfg.minibatches) * mb
            loss = loss_of(order[start : start + mb])
            if cfg.target_kl is not None and loss.approx_kl.item() > cfg.target_kl:
                break  # the policy moved far enough from the one that collected the data
            self.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            steps += 1
            parts.append(
                torch.stack(
                    [loss.policy, loss.value, loss.entropy, loss.approx_kl, loss.clip_fraction]
                ).detach()
            )
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        means = torch.stack(parts).mean(0).tolist() if parts else [math.nan] * len(names)
        return {**dict(zip(names, means, strict=True)), "epochs": steps / cfg.minibatches}

    def advantages(self, rollout: RolloutBuffer, last_value: Tensor) -> tuple[Tensor, Tensor]:
        """GAE advantages and returns ``(T, N)`` of a collected rollout."""
        return gae(
            rollout.rewards,
            rollout.values,
            rollout.next_values(last_value),
            rollout.terminated,
            rollout.terminated | rollout.truncated,
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )

    def step(self) -> UpdateStats:
        """One rollout and one update (then the off-policy steps, when enabled)."""
        cfg = self.cfg
        frozen = self.update_count < cfg.freeze_backbone_updates
        self.policy.freeze_backbone(frozen)
        lr = cfg.learning_rate * (
            1.0 - self.update_count / self.total_updates if cfg.anneal_lr else 1.0
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        rollout, last_value, episode_return = self.collect()
        t1 = time.perf_counter()
        advantages, returns = self.advantages(rollout, last_value)
        obs, actions, logprobs, values = rollout.flat()
        batch = {
            "obs": obs,
            "actions": actions,
            "logprobs": logprobs,
            "values": values,
            "advantages": advantages.flatten(),
            "returns": returns.flatten(),
        }
        if frozen:
            batch["states"] = (
                rollout.states.flatten(0, 1)
                if rollout.states is not None
                else self.backbone_states(obs)
            )
        if cfg.sequence_update and not frozen:
            diag = self.sequence_update(rollout, advantages, returns)
        else:
            diag = self.update(batch)
        awr = self._off_policy(batch)
        t2 = time.perf_counter()
        n = rollout.steps * rollout.num_envs
        self.update_count += 1
        self.env_steps += n
        return UpdateStats(
            update=self.update_count,
            env_steps=self.env_steps,
            mean_reward=float(rollout.rewards.mean()),
            episode_return=episode_return,
            explained_variance=explained_variance(batch["values"], batch["returns"]),
            steps_per_second=n / max(t2 - t0, 1e-9),
            learning_rate=lr,
            backbone_frozen=frozen,
            awr_loss=awr.loss,
            rollout_seconds=t1 - t0,
            update_seconds=t2 - t1,
            **diag,
        )

    @torch.no_grad()
    def backbone_states(self, obs: Mapping[str, Tensor]) -> Tensor:
        """The backbone's states ``(B, S, D)`` (:meth:`~.policy.ActorCritic.backbone_state`)
        of a flattened batch's observations, one no-grad pass in minibatch-sized chunks: the
        ``states`` of :meth:`update` for rollout sources that did not keep them."""
        size = obs["window"].shape[0]
        chunk = max(1, size // self.cfg.minibatches)
        parts = []
        for start in range(0, size, chunk):
            part = {k: v[start : start + chunk] for k, v in obs.items()}
            with autocast(self.device, self.cfg.autocast):
                parts.append(self.policy.backbone_state(part))
        return torch.cat(parts)

    def _off_policy(self, batch: Mapping[str, Any]) -> AWRStats:
        if self.replay is None or self.awr_optimizer is None:
            return AWRStats(math.nan, math.nan, math.nan, 0)
        self.replay.add(Transitions(batch["obs"], batch["actions"], batch["returns"]))
        return awr_update(
            self.policy,
            self.replay,
            self.awr_optimizer,
            self.cfg.off_policy,
            generator=self.generator,
            max_grad_norm=self.cfg.max_grad_norm,
        )

    def learn(
        self, updates: int | None = None, callback: Callable[[UpdateStats], None] | None = None
    ) -> list[UpdateStats]:
        """Run ``updates`` updates (default: up to ``total_updates``); ``callback`` sees each."""
        todo = self.total_updates - self.update_count if updates is None else updates
        history = []
        for _ in range(todo):
            stats = self.step()
            history.append(stats)
            if callback is not None:
                callback(stats)
        return history

    # ----------------------------------------------------------------------------------
    # Checkpoint state
    # ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Policy, optimisers, counters, the generator and the rollout source's state (the
        env's, the current observation, the running episode returns): tensors and numbers
        only, so ``torch.load(weights_only=True)`` reads it back. The replay buffer of the
        off-policy option is not saved."""
        state = {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "update_count": self.update_count,
            "env_steps": self.env_steps,
            "generator": self.generator.get_state(),
            "rollouts": self.rollouts.state_dict(),
        }
        if self.awr_optimizer is not None:
            state["awr_optimizer"] = self.awr_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved: the next update is the one the saved run
        would have made (a state without ``rollouts`` leaves the envs as they are)."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.update_count, self.env_steps = int(state["update_count"]), int(state["env_steps"])
        self.generator.set_state(state["generator"])
        if self.awr_optimizer is not None and "awr_optimizer" in state:
            self.awr_optimizer.load_state_dict(state["awr_optimizer"])
        if "rollouts" in state:
            self.rollouts.load_state_dict(state["rollouts"])
