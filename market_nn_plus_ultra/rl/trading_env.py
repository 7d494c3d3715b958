"""The single-environment Gymnasium view of :class:`~.env.VectorTradingEnv` (numpy in and out).

    env = TradingEnv.from_config(cfg)
    obs, info = env.reset(seed=0)          # obs["window"]: (S, W, F) float32
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

For libraries that step one ``gymnasium.Env`` at a time (stable-baselines3, the
``gymnasium.utils.env_checker``); batched training steps the vector env directly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from torch import Tensor

from ..config import Config
from .env import VectorTradingEnv

__all__ = ["TradingEnv"]

# info entries passed on as plain floats / ints (the rest are batch-internal)
_SCALAR_INFO = ("net_return", "turnover", "cost", "equity", "episode_return", "episode_length")


class TradingEnv(gymnasium.Env):
    """One trading episode at a time, on a one-environment :class:`VectorTradingEnv`.

    The observation is the vector env's with the batch axis dropped (numpy arrays);
    the action is ``[S]`` float32 target positions in [-1, 1] (continuous) or int64
    ``0``/``1``/``2`` = short/flat/long (discrete). When an episode ends the returned
    observation is its last one; call ``reset()`` to start the next.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, vector: VectorTradingEnv) -> None:
        if vector.num_envs != 1:
            raise ValueError(
                f"TradingEnv wraps a one-environment VectorTradingEnv, got num_envs="
                f"{vector.num_envs} — step the vector env directly for batches"
            )
        self.vector = vector
        self.observation_space = vector.single_observation_space
        self.action_space = vector.single_action_space
        self._dtype = torch.float32 if vector.action_mode == "continuous" else torch.long

    @classmethod
    def from_config(cls, cfg: Config, device: str | torch.device = "cpu") -> TradingEnv:
        """The environment ``cfg`` describes (``reinforcement.env``, ``simulation``, data)."""
        return cls(VectorTradingEnv.from_config(cfg, 1, device))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``seed`` fixes its start (and the latency draws after it)."""
        super().reset(seed=seed)
        obs, info = self.vector.reset(seed=seed, options=options)
        # a reset puts the vector env's configure()d settings in force: its spaces follow
        self.observation_space = self.vector.single_observation_space
        return _numpy(obs), {"row": int(info["row"][0])}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Trade one bar with ``action`` ``[S]``."""
        array = np.asarray(action)
        if array.shape not in ((self.vector.n_symbols,), (1, self.vector.n_symbols)):
            raise ValueError(
                f"action must be [n_symbols] = [{self.vector.n_symbols}], got {list(array.shape)}"
            )
        if self._dtype == torch.long and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"reinforcement.env.action=discrete takes integer actions (0 = short, 1 = flat, "
                f"2 = long), got {array.dtype}"
            )
        batch = torch.as_tensor(array.reshape(1, -1)).to(self._dtype)
        obs, reward, terminated, truncated, info = self.vector.step(batch)
        done = bool(terminated[0] or truncated[0])
        if done:  # the vector env has already restarted: hand back the finished episode's end
            obs = info["final_obs"]
        out: dict[str, Any] = {k: float(info[k][0]) for k in _SCALAR_INFO}
        out["episode_length"] = int(info["episode_length"][0])
        out["reward_terms"] = {k: float(v[0]) for k, v in info["reward_terms"].items()}
        return _numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out


def _numpy(obs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """The first environment's observation as numpy arrays of the space's dtypes."""
    return {k: v[0].detach().cpu().numpy() for k, v in obs.items()}
