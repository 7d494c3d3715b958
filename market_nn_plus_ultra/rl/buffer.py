"""Experience storage: the on-policy rollout, a device replay buffer, AWR, Parquet transitions.

- :class:`RolloutBuffer` holds one PPO rollout, ``(T, N, ...)`` tensors on the env's device
  (``RolloutBuffer.cat`` joins shards of the envs side by side, ``to`` moves one).
- :class:`ReplayBuffer` keeps the most recent transitions (observation, stored action,
  return) of many rollouts, or of logged experience, as a ring of device tensors.
- :func:`awr_update` is the off-policy actor update on replayed transitions:
  advantage-weighted regression (Peng et al. 2019, arXiv:1910.00177),
  ``loss = −mean(w · log π(a|s))`` with ``w = min(exp(Â / β), max_weight)``, where ``Â``
  is the return minus the current critic's value, standardised over the batch. Actions an
  analyst vetoed are left out of ``log π`` and, with ``off_policy.veto=penalise``, pushed
  away by an unlikelihood term (:mod:`.veto`).
- :func:`load_transitions` / :func:`save_transitions` read and write transitions as
  Parquet (one row per transition; the schema is in :data:`TRANSITION_COLUMNS`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from market_nn_plus_ultra._io import atomic_path
from market_nn_plus_ultra.config.ppo import OffPolicyConfig

from .policy import ActorCritic
from .veto import symbol_log_prob, veto_unlikelihood

__all__ = [
    "TRANSITION_COLUMNS",
    "AWRStats",
    "ReplayBuffer",
    "RolloutBuffer",
    "TransitionError",
    "Transitions",
    "awr_update",
    "load_transitions",
    "save_transitions",
]

Obs = dict[str, Tensor]

TRANSITION_COLUMNS = {
    "window": "list<float>: the (n_symbols, window, n_features) observation, row-major",
    "portfolio": "list<float>: (n_symbols, 3) position, equity, unrealised PnL",
    "action": "list<float>: n_symbols target positions in [-1, 1] (discrete: -1, 0 or 1)",
    "return": "float: discounted return from this transition on (else episode+step+reward)",
    "episode": "int, optional: episode id (with step and reward, when return is absent)",
    "step": "int, optional: bar index within the episode",
    "reward": "float, optional: the step's reward",
    "regime": "list<int>, optional: n_symbols regime labels",
    "volatility": "list<float>, optional: n_symbols volatilities",
}
_ATANH_LIMIT = 1.0 - 1e-6
_ROLLOUT_FIELDS = (
    "actions", "logprobs", "values", "rewards", "final_values", "terminated", "truncated",
)  # fmt: skip


class TransitionError(ValueError):
    """A transitions file does not match the schema; the message names the column and fix."""


# --------------------------------------------------------------------------------------
# On-policy rollout storage
# --------------------------------------------------------------------------------------


class RolloutBuffer:
    """One rollout of ``steps`` x ``num_envs`` transitions, preallocated on ``device``.

    ``actions`` are the policy's stored samples (pre-squash for continuous actions);
    ``final_values`` the critic's value of a truncated episode's last observation
    (the bootstrap), zero elsewhere. ``states`` ``(T, N, S, D)``, when the rollout was
    played with a frozen backbone, holds :meth:`~.policy.ActorCritic.backbone_state` of
    each observation (``state=`` of the first step sets its dtype; ``None`` otherwise).
    """

    def __init__(
        self,
        steps: int,
        obs: Mapping[str, Tensor],
        action: Tensor,
        state: Tensor | None = None,
    ) -> None:
        self.steps, self.num_envs = steps, int(action.shape[0])
        device = action.device
        self.obs: Obs = {
            k: torch.empty((steps, *v.shape), dtype=v.dtype, device=device) for k, v in obs.items()
        }
        self.actions = torch.empty((steps, *action.shape), dtype=action.dtype, device=device)
        shape = (steps, self.num_envs)
        self.logprobs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.final_values = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.states: Tensor | None = None
        if state is not None:
            self.states = torch.empty((steps, *state.shape), dtype=state.dtype, device=device)

    def store(
        self,
        t: int,
        obs: Mapping[str, Tensor],
        action: Tensor,
        logprob: Tensor,
        value: Tensor,
        reward: Tensor,
        terminated: Tensor,
        truncated: Tensor,
        state: Tensor | None = None,
    ) -> None:
        """Write step ``t``: the observation acted on (and its backbone ``state`` when the
        buffer stores states) and what followed."""
        for key, store in self.obs.items():
            store[t] = obs[key]
        if self.states is not None:
            if state is None:
                raise ValueError(
                    "this rollout buffer stores backbone states: pass state= to store()"
                )
            self.states[t] = state
        self.actions[t] = action
        self.logprobs[t], self.values[t], self.rewards[t] = logprob, value, reward
        self.terminated[t], self.truncated[t] = terminated, truncated

    def next_values(self, last_value: Tensor) -> Tensor:
        """``V(s'_t) (T, N)``: the next step's value, the bootstrap where truncated."""
        following = torch.cat([self.values[1:], last_value[None]], dim=0)  # (T, N)
        return torch.where(self.truncated, self.final_values, following)

    def flat(self) -> tuple[Obs, Tensor, Tensor, Tensor]:
        """``(obs, actions, logprobs, values)`` with ``(T, N)`` flattened to ``B = T·N``."""
        obs = {k: v.flatten(0, 1) for k, v in self.obs.items()}
        return obs, self.actions.flatten(0, 1), self.logprobs.flatten(), self.values.flatten()

    def to(self, device: str | torch.device) -> RolloutBuffer:
        """The rollout with every tensor on ``device`` (a copy unless already there)."""
        out = copy.copy(self)
        out.obs = {k: v.to(device) for k, v in self.obs.items()}
        for name in _ROLLOUT_FIELDS:
            setattr(out, name, getattr(self, name).to(device))
        out.states = None if self.states is None else self.states.to(device)
        return out

    @classmethod
    def cat(cls, parts: Sequence[RolloutBuffer]) -> RolloutBuffer:
        """The rollouts of ``parts`` (shards of the envs, same steps) side by side on the env
        axis: every ``(T, N_i, ...)`` tensor becomes ``(T, N_1 + N_2 + ..., ...)``, in order
        (one part is returned as it is)."""
        if not parts:
            raise ValueError("RolloutBuffer.cat needs at least one rollout")
        first = parts[0]
        if len(parts) == 1:
            return first
        for part in parts[1:]:
            if part.steps != first.steps or set(part.obs) != set(first.obs):
                raise ValueError(
                    f"rollouts to join must have the same steps and observation keys: "
                    f"{first.steps} steps of {sorted(first.obs)} vs {part.steps} steps of "
                    f"{sorted(part.obs)} — collect every shard with the same settings"
                )
        out = copy.copy(first)
        out.obs = {k: torch.cat([p.obs[k] for p in parts], dim=1) for k in first.obs}
        for name in _ROLLOUT_FIELDS:
            setattr(out, name, torch.cat([getattr(p, name) for p in parts], dim=1))
        states = [p.states for p in parts]  # kept only when every shard stored them
        out.states = None if any(v is None for v in states) else torch.cat(states, dim=1)
        out.num_envs = sum(p.num_envs for p in parts)
        return out


# --------------------------------------------------------------------------------------
# Off-policy replay
# --------------------------------------------------------------------------------------


@dataclass
class Transitions:
    """A batch of ``B`` transitions: observations, stored actions ``(B, S)``, returns ``(B,)``.

    ``known`` ``(B, S)`` bool marks the symbols whose action was logged (None: all);
    ``veto`` ``(B, S)`` bool the actions an analyst vetoed (None: none).
    """

    obs: Obs
    actions: Tensor
    returns: Tensor
    known: Tensor | None = None
    veto: Tensor | None = None

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    def to(self, device: str | torch.device) -> Transitions:
        obs = {k: v.to(device) for k, v in self.obs.items()}
        masks = [None if m is None else m.to(device) for m in (self.known, self.veto)]
        return Transitions(obs, self.actions.to(device), self.returns.to(device), *masks)

    def masks(self) -> tuple[Tensor, Tensor]:
        """``(known, veto)`` as ``(B, S)`` bool tensors (defaults filled in)."""
        shape, device = self.actions.shape[:2], self.actions.device
        known = (
            torch.ones(shape, dtype=torch.bool, device=device) if self.known is None else self.known
        )
        veto = (
            torch.zeros(shape, dtype=torch.bool, device=device) if self.veto is None else self.veto
        )
        return known, veto


class ReplayBuffer:
    """A ring of the last ``capacity`` transitions on ``device`` (storage on the first add).

    Memory: ``capacity x n_symbols x window x n_features x 4`` bytes for the windows.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self._data: Transitions | None = None
        self._next, self._size = 0, 0
        self.has_vetoes = False  # a vetoed action was ever added (the veto term runs)

    def __len__(self) -> int:
        return self._size

    def _allocate(self, batch: Transitions) -> Transitions:
        def empty(v: Tensor) -> Tensor:
            return torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)

        obs = {k: empty(v) for k, v in batch.obs.items()}
        known, veto = batch.masks()
        return Transitions(
            obs, empty(batch.actions), empty(batch.returns), empty(known), empty(veto)
        )

    def add(self, batch: Transitions) -> None:
        """Append ``batch`` (the oldest transitions are overwritten when full)."""
        if self._data is None:
            self._data = self._allocate(batch)
        if set(batch.obs) != set(self._data.obs):
            raise ValueError(
                f"replay buffer holds observations {sorted(self._data.obs)}, the batch has "
                f"{sorted(batch.obs)} — add transitions from the same environment"
            )
        n = len(batch)
        keep = min(n, self.capacity)
        idx = (self._next + torch.arange(keep, device=self.device)) % self.capacity
        src = slice(n - keep, n)  # a batch larger than the ring keeps its newest rows
        for key, store in self._data.obs.items():
            store[idx] = batch.obs[key][src].to(self.device)
        self._data.actions[idx] = batch.actions[src].to(self.device)
        self._data.returns[idx] = batch.returns[src].to(self.device)
        known, veto = batch.masks()
        self._data.known[idx] = known[src].to(self.device)  # type: ignore[index]
        self._data.veto[idx] = veto[src].to(self.device)  # type: ignore[index]
        if batch.veto is not None and bool(batch.veto[src].any()):
            self.has_vetoes = True
        self._next = (self._next + keep) % self.capacity
        self._size = min(self._size + keep, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self._data is None or self._size == 0:
            raise ValueError("the replay buffer is empty — add transitions before sampling")
        idx = torch.randint(0, self._size, (batch_size,), generator=generator, device=self.device)
        data = self._data
        obs = {k: v[idx] for k, v in data.obs.items()}
        known, veto = data.known[idx], data.veto[idx]  # type: ignore[index]
        return Transitions(obs, data.actions[idx], data.returns[idx], known, veto)


@dataclass(frozen=True)
class AWRStats:
    """Mean AWR actor loss (the veto term included), mean weight, share of weights at
    ``max_weight`` and mean veto term (NaN when none ran) over the steps."""

    loss: float
    mean_weight: float
    clipped_share: float
    steps: int
    veto_loss: float = math.nan


def _standardised(adv: Tensor, active: Tensor) -> Tensor:
    """``adv`` minus the mean over the ``active`` rows, over their std (no host sync)."""
    n = active.sum()
    mean = (adv * active).sum() / n.clamp(min=1)
    var = ((adv - mean).square() * active).sum() / (n - 1).clamp(min=1)
    return (adv - mean) / (var.sqrt() + 1e-8)


def awr_update(
    policy: ActorCritic,
    buffer: ReplayBuffer,
    optimizer: torch.optim.Optimizer,
    cfg: OffPolicyConfig,
    *,
    generator: torch.Generator | None = None,
    max_grad_norm: float | None = None,
) -> AWRStats:
    """``cfg.updates_per_rollout`` AWR steps of the actor on batches from ``buffer``.

    The weights use the current critic (no gradient); ``optimizer`` should hold the
    actor's parameters (the backbone's too unless it is frozen), not the critic's.
    ``log π`` sums the known, unvetoed symbols' actions (``Â`` is standardised over the
    transitions that have one); ``cfg.veto=penalise`` adds ``cfg.veto_penalty`` times
    :func:`~.veto.veto_unlikelihood` once the buffer holds a vetoed action.
    """
    if len(buffer) < cfg.min_buffer or cfg.updates_per_rollout == 0:
        return AWRStats(math.nan, math.nan, math.nan, 0)
    penalise = buffer.has_vetoes and cfg.veto == "penalise" and cfg.veto_penalty > 0
    losses, weights, clipped, vetoes = [], [], [], []
    for _ in range(cfg.updates_per_rollout):
        batch = buffer.sample(cfg.batch_size, generator)
        out = policy(batch.obs)
        known, veto = batch.masks()
        imitate = known & ~veto  # (B, S)
        with torch.no_grad():
            adv = _standardised(batch.returns - out.value, imitate.any(dim=-1))
            w = torch.exp(adv / cfg.awr_beta).clamp(max=cfg.max_weight)
        log_prob = (symbol_log_prob(out, batch.actions) * imitate).sum(dim=-1)  # (B,)
        loss = -(w * log_prob).mean()
        if penalise:
            term = veto_unlikelihood(out, batch.actions, veto)
            loss = loss + cfg.veto_penalty * term
            vetoes.append(term.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(loss.detach())
        weights.append(w.mean())
        clipped.append((w >= cfg.max_weight).float().mean())
    stats = torch.stack([torch.stack(losses), torch.stack(weights), torch.stack(clipped)]).mean(1)
    loss_v, weight_v, clip_v = stats.tolist()
    veto_v = float(torch.stack(vetoes).mean()) if vetoes else math.nan
    return AWRStats(loss_v, weight_v, clip_v, cfg.updates_per_rollout, veto_v)


# --------------------------------------------------------------------------------------
# Parquet transitions
# --------------------------------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str, width: int, dtype: type, path: Path) -> np.ndarray:
    """List column ``name`` as a ``(rows, width)`` array, or a TransitionError."""
    lengths = frame[name].map(lambda v: -1 if v is None else len(v)).to_numpy()
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        raise TransitionError(
            f"{path}: column {name!r} must hold {width} values per row, row {bad[0]} has "
            f"{lengths[bad[0]]} ({bad.size} rows differ) — check n_symbols, window and "
            f"n_features against the file ({TRANSITION_COLUMNS[name]})"
        )
    values = np.stack(frame[name].to_numpy()).astype(dtype)
    if dtype is np.float32 and not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise TransitionError(
            f"{path}: column {name!r} has NaN or infinite values in {rows.size} rows "
            f"(first: row {rows[0]}) — drop those transitions or fill them"
        )
    return values


def _returns(frame: pd.DataFrame, gamma: float, path: Path) -> np.ndarray:
    if "return" in frame:
        values = frame["return"].to_numpy(np.float32, copy=True)
    else:
        missing = [c for c in ("episode", "step", "reward") if c not in frame]
        if missing:
            raise TransitionError(
                f"{path}: no 'return' column, and computing it needs 'episode', 'step' and "
                f"'reward' (missing: {missing}). Columns in file: {sorted(frame.columns)}"
            )
        ordered = frame.sort_values(["episode", "step"])
        values = np.empty(len(frame), np.float32)
        for _, group in ordered.groupby("episode", sort=False):
            acc, out = 0.0, []
            for r in group["reward"].to_numpy(np.float64)[::-1]:
                acc = r + gamma * acc
                out.append(acc)
            values[frame.index.get_indexer(group.index)] = out[::-1]
    if not np.isfinite(values).all():
        raise TransitionError(f"{path}: returns have NaN or infinite values — fix the rewards")
    return values


def load_transitions(
    path: str | Path,
    *,
    n_symbols: int,
    window: int,
    n_features: int,
    action_mode: str = "continuous",
    gamma: float = 0.99,
) -> Transitions:
    """Read a Parquet of transitions (schema: :data:`TRANSITION_COLUMNS`) for the replay buffer.

    Actions are target positions; they are stored the way the policy samples them:
    ``atanh`` of the position (continuous) or the class ``position + 1`` (discrete).
    Without a ``return`` column, returns are the discounted sums of ``reward`` within
    each ``episode``, in ``step`` order. Every problem raises :class:`TransitionError`.
    """
    path = Path(path)
    if not path.is_file():
        raise TransitionError(f"transitions file {path} does not exist")
    frame = pd.read_parquet(path).reset_index(drop=True)
    missing = [c for c in ("window", "portfolio", "action") if c not in frame]
    if missing:
        raise TransitionError(
            f"{path}: missing column(s) {missing}. Columns in file: {sorted(frame.columns)}. "
            f"Expected: {', '.join(f'{k} ({v})' for k, v in TRANSITION_COLUMNS.items())}"
        )
    s = n_symbols
    win = _column(frame, "window", s * window * n_features, np.float32, path)
    obs = {
        "window": torch.from_numpy(win.reshape(-1, s, window, n_features)),
        "portfolio": torch.from_numpy(_column(frame, "portfolio", s * 3, np.float32, path)),
    }
    obs["portfolio"] = obs["portfolio"].view(-1, s, 3)
    if "regime" in frame:
        obs["regime"] = torch.from_numpy(_column(frame, "regime", s, np.int64, path))
    if "volatility" in frame:
        obs["volatility"] = torch.from_numpy(_column(frame, "volatility", s, np.float32, path))
    positions = torch.from_numpy(_column(frame, "action", s, np.float32, path))
    if (positions.abs() > 1).any():
        raise TransitionError(
            f"{path}: column 'action' holds target positions in [-1, 1]; found "
            f"{positions.abs().max().item():.4g} — rescale the logged positions"
        )
    if action_mode == "discrete":
        if not torch.isin(positions, torch.tensor([-1.0, 0.0, 1.0])).all():
            raise TransitionError(
                f"{path}: discrete actions must be -1 (short), 0 (flat) or 1 (long) — round "
                "the logged positions or load them with action_mode='continuous'"
            )
        actions = (positions + 1).long()
    else:
        actions = torch.atanh(positions.clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
    returns = torch.from_numpy(_returns(frame, gamma, path))
    return Transitions(obs, actions, returns)


def save_transitions(
    path: str | Path, obs: Mapping[str, Tensor], positions: Tensor, returns: Tensor
) -> Path:
    """Write transitions (``obs`` dict, target ``positions (B, S)``, ``returns (B,)``) as the
    Parquet :func:`load_transitions` reads, atomically; returns the path."""
    path = Path(path)
    columns = {k: list(v.detach().cpu().flatten(1).numpy()) for k, v in obs.items()}
    columns["action"] = list(positions.detach().cpu().float().flatten(1).numpy())
    columns["return"] = returns.detach().cpu().float().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame(columns).to_parquet(tmp)
    return path
