"""A planted-signal market with the ``VectorTradingEnv`` interface, for the learner's tests.

Every bar, each symbol's next return is ``scale · s + noise`` with ``s = ±1`` drawn at
random; ``s`` is feature 0 of the newest window row, so the observation tells the sign of
the coming return. The right action is known: position ``s`` (continuous) or long/short
(discrete); a random policy earns nothing on average. Reward = the portfolio's net return
(mean over symbols of position x return, minus ``cost`` per unit traded) x ``reward_scale``.
Episodes end by truncation after ``episode_length`` steps (staggered starts), or by
termination when equity falls below ``min_equity``. Autoreset is SAME_STEP: a finished
env's observation is already its next episode's first, and ``info["final_obs"]`` holds the
finished episode's last observation (rows of unfinished envs repeat their current one).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import torch
from torch import Tensor


class ToySignalEnv:
    """``num_envs`` planted-signal markets of ``n_symbols`` each, as one batch of tensors."""

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP
    }

    def __init__(
        self,
        num_envs: int = 16,
        n_symbols: int = 2,
        window: int = 8,
        n_features: int = 3,
        *,
        action_mode: str = "continuous",
        episode_length: int = 32,
        signal_scale: float = 0.01,
        noise_scale: float = 0.002,
        cost: float = 0.0,
        reward_scale: float = 100.0,
        min_equity: float = 0.0,
        regime: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_envs, self.n_symbols = num_envs, n_symbols
        self.window, self.n_features = window, n_features
        self.action_mode, self.device = action_mode, torch.device(device)
        self.episode_length, self.signal_scale = episode_length, signal_scale
        self.noise_scale, self.cost, self.reward_scale = noise_scale, cost, reward_scale
        self.min_equity, self.regime = min_equity, regime
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(0)
        shape = (num_envs, n_symbols)
        self._window = torch.zeros(*shape, window, n_features, device=self.device)
        self._position = torch.zeros(shape, device=self.device)
        self._entry = torch.zeros(shape, device=self.device)
        self._equity = torch.ones(num_envs, device=self.device)
        self._t = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    # ----------------------------------------------------------------------------------
    def _rand(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self._gen, device=self.device)

    def _new_rows(self, n: int) -> Tensor:
        """``(n, S, F)`` bars: feature 0 the sign of the next return, the rest noise."""
        row = self._rand(n, self.n_symbols, self.n_features)
        row[..., 0] = torch.sign(row[..., 0]) + (row[..., 0] == 0).float()  # ±1
        return row

    def _obs(self) -> dict[str, Tensor]:
        upnl = self._position * self._entry
        equity = self._equity[:, None].expand(-1, self.n_symbols)
        obs = {
            "window": self._window.clone(),
            "portfolio": torch.stack([self._position, equity, upnl], dim=-1),  # (N, S, 3)
        }
        if self.regime:
            obs["regime"] = (self._window[:, :, -1, 0] > 0).long()  # (N, S)
            obs["volatility"] = torch.full_like(self._position, self.noise_scale)
        return obs

    def _reset_rows(self, rows: Tensor) -> None:
        """Fresh episodes for the envs in the bool mask ``rows (N,)``."""
        n = int(rows.sum())
        if n == 0:
            return
        fresh = torch.stack([self._new_rows(n) for _ in range(self.window)], dim=2)
        self._window[rows] = fresh
        self._position[rows] = 0.0
        self._entry[rows] = 0.0
        self._equity[rows] = 1.0
        self._t[rows] = 0

    def reset(self, seed: int | None = None) -> tuple[dict[str, Tensor], dict]:
        if seed is not None:
            self._gen.manual_seed(seed)
        self._reset_rows(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        # staggered episode clocks, so truncations do not all land on the same step
        self._t = torch.randint(
            0, self.episode_length, (self.num_envs,), generator=self._gen, device=self.device
        )
        return self._obs(), {}

    def _targets(self, actions: Tensor) -> Tensor:
        if actions.shape != (self.num_envs, self.n_symbols):
            raise ValueError(f"actions must be {(self.num_envs, self.n_symbols)}")
        if self.action_mode == "discrete":
            return actions.to(torch.float32) - 1.0  # 0/1/2 -> short/flat/long
        return actions.to(torch.float32).clamp(-1.0, 1.0)

    def step(self, actions: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict]:
        target = self._targets(actions)
        sign = self._window[:, :, -1, 0]  # (N, S) the planted direction of the next bar
        ret = self.signal_scale * sign + self.noise_scale * self._rand(*sign.shape)
        traded = (target - self._position).abs()
        net = (target * ret - self.cost * traded).mean(dim=1)  # (N,)
        self._equity = self._equity * (1.0 + net)
        self._entry = ret
        self._position = target
        self._window = torch.cat(
            [self._window[:, :, 1:], self._new_rows(self.num_envs)[:, :, None]], 2
        )
        self._t = self._t + 1
        terminated = self._equity < self.min_equity
        truncated = (self._t >= self.episode_length) & ~terminated
        final_obs = self._obs()
        done = terminated | truncated
        self._reset_rows(done)
        info = {"final_obs": final_obs, "_final_obs": done}
        return self._obs(), (net * self.reward_scale).float(), terminated, truncated, info
