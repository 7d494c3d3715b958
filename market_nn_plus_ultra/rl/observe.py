"""The environment's observation windows, spaces and action and cost conventions."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from ..config import SimulationConfig, WindowsConfig
from ..windows.dataset import normalise_window
from .market import EnvMarket

__all__ = [
    "COST_RATES",
    "PORTFOLIO_FIELDS",
    "WindowSource",
    "action_targets",
    "observation_space",
    "scaled_costs",
    "target_levels",
]

_BLOCK_ELEMENTS = 1 << 17  # window values normalised per block on a CPU (512 KiB)
_MIN_BLOCK = 16  # environments per block at least

#: The channels of ``obs["portfolio"]`` ``[N, S, 3]``, in order.
PORTFOLIO_FIELDS = ("position", "equity", "unrealised_pnl")

#: The ``simulation`` fields ``reinforcement.env.cost_multiplier`` scales.
COST_RATES = (
    "cost_bps",
    "fixed_cost",
    "half_spread_bps",
    "spread_vol_mult",
    "impact_coef",
    "borrow_bps",
    "leverage_funding_bps",
)


class WindowSource:
    """Windows ``[N, S, W, F]`` ending at given rows, gathered on the device in one call.

    The features live once on the device as ``[S·T, F]`` (symbol-major), so the window of
    every (env, symbol) is ``W`` consecutive rows of one index_select — no ``[T, W]``
    copy of the panel. ``train_zscore`` and ``none`` are elementwise, so the panel is
    normalised once up front (the same arithmetic as normalising each window);
    ``window_zscore`` normalises each gathered window by its own valid rows. Either way
    the values equal :class:`~market_nn_plus_ultra.windows.SlidingWindowDataset`'s.
    """

    def __init__(self, market: EnvMarket, windows: WindowsConfig, device: torch.device) -> None:
        t = market.tensors
        T, S, F = t.inputs.shape
        W = int(windows.window)
        if not 1 <= W <= T:
            raise ValueError(f"windows.window={W} must lie in 1..{T} (rows in the tensors)")
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(t.inputs).transpose(1, 0, 2)))
        m = torch.from_numpy(np.ascontiguousarray(np.asarray(t.mask, dtype=bool).T))  # (S, T)
        self.mode = windows.normalise
        if self.mode != "window_zscore":
            mean = std = None
            if self.mode == "train_zscore":
                if market.normaliser is None:
                    raise ValueError(
                        "windows.normalise=train_zscore needs the training statistics: build "
                        "the market with EnvMarket.from_tensors/from_panel/from_config"
                    )
                mean = torch.from_numpy(market.normaliser.mean).unsqueeze(1)  # (S, 1, F)
                std = torch.from_numpy(market.normaliser.std).unsqueeze(1)
            x = normalise_window(x, m, self.mode, mean, std)  # (S, T, F), masked rows 0
        self.max_window, self._dims = W, (S, T, F)
        self._x = x.reshape(S * T, F).contiguous().to(device)
        self._m = m.reshape(S * T).to(device) if self.mode == "window_zscore" else None
        self.resize(W)

    def resize(self, window: int) -> None:
        """Gather the last ``window`` rows (``1 .. max_window``) from now on.

        ``window_zscore`` then normalises each shorter window by its own rows, as training
        with ``windows.window = window`` would; the elementwise modes give the last
        ``window`` rows of the full window.
        """
        if not 1 <= window <= self.max_window:
            raise ValueError(
                f"window={window} must lie in 1..{self.max_window} (windows.window): "
                "observations are cut from the configured windows — lower the window or "
                "raise windows.window"
            )
        S, T, F = self._dims
        first = torch.arange(S).view(1, S, 1) * T + torch.arange(-window + 1, 1).view(1, 1, window)
        self._index = first.to(self._x.device)  # (1, S, W) flat row of window step w, symbol s
        self.shape = (S, window, F)

    def gather(self, rows: Tensor) -> Tensor:
        """The windows ending at ``rows`` ``[N]`` (each ≥ W−1): ``[N, S, W, F]`` float32."""
        S, W, F = self.shape
        block = max(_MIN_BLOCK, _BLOCK_ELEMENTS // (S * W * F))
        if self._m is None or rows.device.type != "cpu" or len(rows) <= block:
            return self._gather(rows)
        # window_zscore passes over the windows several times: on a CPU, blocks of envs
        # that stay in cache are ~4x faster than one pass over a large batch
        out = torch.empty(len(rows), S, W, F, dtype=self._x.dtype)
        for start in range(0, len(rows), block):
            out[start : start + block] = self._gather(rows[start : start + block])
        return out

    def _gather(self, rows: Tensor) -> Tensor:
        S, W, F = self.shape
        flat = (self._index + rows.view(-1, 1, 1)).view(-1)  # (N·S·W,)
        x = self._x.index_select(0, flat).view(-1, S, W, F)
        if self._m is not None:
            m = self._m.index_select(0, flat).view(-1, S, W)
            x = normalise_window(x, m, "window_zscore")
        return x


def observation_space(
    n_symbols: int,
    window: int,
    n_features: int,
    action: str,
    *,
    market_state: bool,
    num_regimes: int,
) -> tuple[spaces.Dict, spaces.Space]:
    """One environment's observation and action spaces."""
    S = n_symbols
    unbounded = {"low": -np.inf, "high": np.inf, "dtype": np.float32}
    obs = {
        "window": spaces.Box(shape=(S, window, n_features), **unbounded),
        "portfolio": spaces.Box(shape=(S, len(PORTFOLIO_FIELDS)), **unbounded),
    }
    if market_state:
        obs["regime"] = spaces.MultiDiscrete(np.full(S, num_regimes, dtype=np.int64))
        obs["volatility"] = spaces.Box(low=0.0, high=np.inf, shape=(S,), dtype=np.float32)
    if action == "continuous":
        act: spaces.Space = spaces.Box(low=-1.0, high=1.0, shape=(S,), dtype=np.float32)
    else:
        act = spaces.MultiDiscrete(np.full(S, 3, dtype=np.int64))
    return spaces.Dict(obs), act


def scaled_costs(cfg: SimulationConfig, multiplier: float) -> SimulationConfig:
    """``cfg`` with every charge rate of :data:`COST_RATES` multiplied by ``multiplier``."""
    if multiplier == 1.0:
        return cfg
    return cfg.model_copy(update={name: getattr(cfg, name) * multiplier for name in COST_RATES})


def target_levels(device: torch.device) -> Tensor:
    """Discrete action → target position: 0 = short (−1), 1 = flat (0), 2 = long (+1)."""
    return torch.tensor([-1.0, 0.0, 1.0], device=device)


def action_targets(
    actions: Tensor, mode: str, shape: tuple[int, int], levels: Tensor, *, check: bool
) -> Tensor:
    """Validated actions ``shape = [N, S]`` → target positions ``[N, S]`` float32 on
    ``levels``' device (``check``: also the range, one host sync)."""
    N, S = shape
    if not torch.is_tensor(actions):
        raise TypeError(
            f"actions must be a torch tensor [num_envs, n_symbols] = [{N}, {S}], got "
            f"{type(actions).__name__} — wrap arrays with torch.as_tensor"
        )
    if tuple(actions.shape) != (N, S):
        raise ValueError(
            f"actions must be [num_envs, n_symbols] = [{N}, {S}], got {list(actions.shape)}"
        )
    actions = actions.to(levels.device, non_blocking=True)
    if mode == "continuous":
        if not actions.is_floating_point():
            raise ValueError(
                f"reinforcement.env.action=continuous takes float target positions in "
                f"[-1, 1], got {actions.dtype} — set reinforcement.env.action=discrete for "
                "0/1/2 actions"
            )
        if check:
            _check_range(actions, -1.0, 1.0, "continuous actions are target positions")
        return actions.to(torch.float32)
    if actions.is_floating_point() or actions.dtype == torch.bool:
        raise ValueError(
            f"reinforcement.env.action=discrete takes integer actions (0 = short, 1 = flat, "
            f"2 = long), got {actions.dtype} — cast with .long(), or set "
            "reinforcement.env.action=continuous for target positions"
        )
    if check:
        _check_range(actions, 0, 2, "discrete actions are 0 = short, 1 = flat, 2 = long")
    return levels[actions.long()]


def _check_range(actions: Tensor, lo: float, hi: float, what: str) -> None:
    if bool(((actions >= lo) & (actions <= hi)).all()):  # one host sync; False for NaN
        return
    low, high = (float(v) for v in torch.stack(torch.aminmax(actions)).double().tolist())
    if np.isnan(low) or np.isnan(high):
        raise ValueError(f"{what}; the actions contain NaN — check the policy's output")
    raise ValueError(
        f"{what} in [{lo:g}, {hi:g}]; got values from {low:.4g} to {high:.4g} — squash "
        "or clamp the policy's output into the range"
    )
