"""Batched trading environment on the execution simulator: N episodes as one set of tensors.

    env = VectorTradingEnv.from_config(cfg, num_envs=1024, device="cuda")
    obs, info = env.reset(seed=0)              # obs["window"]: (N, S, W, F)
    obs, reward, terminated, truncated, info = env.step(actions)   # actions: (N, S)

An episode is ``reinforcement.env.episode_length`` bars of the market tensors from a
seeded random start in the chosen split (default: training rows). At bar t the
observation holds the window over rows ``t-W+1 .. t`` (the features and normalisation of
training), each symbol's position, the portfolio equity and the position's unrealised
PnL, and — when ``model.market_state_embedding`` is on — the regime label and σ at t.
Nothing at or after t+1 enters it. The action is the target position per symbol; a step
applies one bar of the execution simulator (:mod:`market_nn_plus_ultra.simulation.step`,
the functions :func:`simulate_execution` uses) and rewards the portfolio's net return
over (t, t+1], shaped by :class:`~.reward.RewardShaper`. Finished episodes restart in the
same step (Gymnasium's ``SAME_STEP`` autoreset): ``info["final_obs"]`` holds their last
observation. Every operation is batched over environments and symbols (CPU or CUDA).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from ..config import Config, SimulationConfig, WindowsConfig
from ..config.reinforcement import EnvConfig, RewardConfig
from ..simulation.step import (
    LatencyBuckets,
    OrderBook,
    arrive,
    bar_update,
    capital_slot,
    fill_bar,
    fill_limit,
    limit_targets,
)
from ..windows.dataset import volatility_column
from .market import EnvMarket
from .observe import WindowSource, observation_space, scaled_costs, target_levels
from .reward import RewardShaper

__all__ = ["VectorTradingEnv"]

_BAR_FIELDS = ("returns", "volatility", "dollar_volume", "adv", "funding")


class VectorTradingEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` trading episodes stepped together; tensors in, tensors out.

    ``reset(seed=None, options=None)`` → ``(obs, info)``; ``step(actions [N, S])`` →
    ``(obs, reward [N] float32, terminated [N] bool, truncated [N] bool, info)``. ``obs``
    is a dict: ``window`` ``[N, S, W, F]`` float32, ``portfolio`` ``[N, S, 3]`` float32
    (position, equity, unrealised PnL) and, with the market state on, ``regime``
    ``[N, S]`` int64 (the label at t, clipped to ``0 .. num_regimes-1``; 0 without
    regime labels) and ``volatility`` ``[N, S]`` float32 (the raw ``realised_vol_*`` input
    at t that the market-state embedding reads, else the simulator's σ). ``reset`` takes
    ``options={"start_rows": [N] rows}`` to place episodes by hand.

    ``info`` (every entry ``[N]``, for the bar just traded): ``net_return`` (unshaped),
    ``turnover``, ``cost``, ``equity``, ``episode_return`` (equity − 1),
    ``episode_length``, ``reward_terms`` (each enabled shaping term), ``final_obs`` (the
    observation before any restart: rows of finished envs are their episode's last),
    ``_final_obs`` (bool: the env finished) and ``row`` (each env's current bar).
    """

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }
    render_mode = None

    def __init__(
        self,
        market: EnvMarket,
        *,
        num_envs: int,
        env: EnvConfig,
        reward: RewardConfig,
        simulation: SimulationConfig,
        windows: WindowsConfig,
        market_state: bool = False,
        num_regimes: int = 8,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if windows.calendar != "union":
            raise ValueError(
                "the trading environment observes every symbol on the shared calendar — set "
                "windows.calendar=union"
            )
        self.device = torch.device(device)
        t = market.tensors
        self.market, self.env_cfg, self.reward_cfg = market, env, reward
        self.num_envs, self.n_symbols = int(num_envs), t.n_symbols
        self.window, self.n_features = int(windows.window), t.n_features
        self.action_mode, self.market_state = env.action, bool(market_state)
        self.episode_length = int(env.episode_length)
        self.periods_per_year = float(market.periods_per_year)
        self._base_simulation = simulation
        self.simulation = scaled_costs(simulation, env.cost_multiplier)
        _check_inputs(market, simulation)
        self._windows = WindowSource(market, windows, self.device)
        tensors = self._bar_tensors(market, num_regimes)
        self._bars, self._present, self._regime, self._state_vol = tensors
        self._has_funding = market.funding is not None
        starts = market.start_rows(env.split, self.window, self.episode_length)
        self.start_rows = torch.as_tensor(starts, device=self.device)  # (n_starts,)
        self._levels = target_levels(self.device)  # discrete action → target
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self._shaper = RewardShaper(reward, self.num_envs, self.device)
        lags = simulation.latency_bars
        self._latency = (
            None
            if len(lags) == 1
            else LatencyBuckets.from_config(lags, simulation.latency_probs, self.device)
        )
        self.single_observation_space, self.single_action_space = observation_space(
            self.n_symbols, self.window, self.n_features, self.action_mode,
            market_state=self.market_state, num_regimes=num_regimes,
        )  # fmt: skip
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._row: Tensor | None = None  # set by reset()

    @classmethod
    def from_config(
        cls, cfg: Config, num_envs: int, device: str | torch.device = "cpu"
    ) -> VectorTradingEnv:
        """The environment ``cfg`` describes, its market built from the database like training."""
        r = cfg.reinforcement
        return cls(
            EnvMarket.from_config(cfg),
            num_envs=num_envs,
            env=r.env,
            reward=r.reward,
            simulation=cfg.simulation,
            windows=cfg.windows,
            market_state=cfg.model.market_state_embedding,
            num_regimes=cfg.model.num_regimes,
            seed=cfg.seed if r.env.seed is None else r.env.seed,
            device=device,
        )

    def _bar_tensors(
        self, market: EnvMarket, num_regimes: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """On the device: ``[T, S, 5]`` float32 simulator inputs (NaN kept only in
        returns), ``present``, the regime label and the market state's volatility."""
        T, S = market.returns.shape
        columns = []
        for name in _BAR_FIELDS:
            value = getattr(market, name)
            value = np.zeros((T, S)) if value is None else np.asarray(value, dtype=np.float64)
            # NaN σ / volume / ADV / funding charge nothing, as in simulate_execution
            columns.append(value if name == "returns" else np.nan_to_num(value, nan=0.0))
        bars = torch.as_tensor(np.stack(columns, axis=-1), dtype=torch.float32)
        present = torch.as_tensor(np.asarray(market.tensors.present, dtype=bool))
        tensors = market.tensors
        regime = np.zeros((T, S), dtype=np.int64) if tensors.regimes is None else tensors.regimes
        regime = torch.as_tensor(np.asarray(regime), dtype=torch.long).clamp(0, num_regimes - 1)
        # the market state's volatility: the raw realised_vol_* input training embeds, else σ
        column = volatility_column(tensors.feature_names)
        if column is None:
            state_vol = bars[:, :, 1]
        else:
            raw = np.asarray(tensors.inputs[:, :, column], dtype=np.float32) * tensors.mask
            state_vol = torch.as_tensor(np.nan_to_num(raw, nan=0.0).clip(min=0.0))
        return tuple(v.to(self.device) for v in (bars, present, regime, state_vol))

    def set_cost_multiplier(self, multiplier: float) -> None:
        """Scale every execution charge rate from now on (e.g. a curriculum stage)."""
        if multiplier < 0:
            raise ValueError(f"reinforcement.env.cost_multiplier must be >= 0, got {multiplier}")
        self.simulation = scaled_costs(self._base_simulation, multiplier)

    # ----------------------------------------------------------------------------------
    # Reset
    # ----------------------------------------------------------------------------------

    def _draw_starts(self) -> Tensor:
        pick = torch.randint(
            len(self.start_rows), (self.num_envs,), generator=self._generator, device=self.device
        )
        return self.start_rows[pick]  # (N,)

    def _given_starts(self, rows: Any) -> Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device).reshape(-1)
        if rows.shape != (self.num_envs,):
            raise ValueError(
                f"options['start_rows'] needs one row per environment ({self.num_envs}), got "
                f"{rows.numel()}"
            )
        lo, hi = int(self.start_rows.min()), int(self.start_rows.max())
        if int(rows.min()) < lo or int(rows.max()) > hi:
            raise ValueError(
                f"options['start_rows'] must lie in {lo}..{hi} (episodes of "
                f"{self.episode_length} bars in the {self.env_cfg.split} rows), got "
                f"{int(rows.min())}..{int(rows.max())}"
            )
        return rows

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Start every episode afresh; ``seed`` re-seeds starts and latency draws."""
        if seed is not None:
            self._generator.manual_seed(int(seed))
        options = options or {}
        N, S = self.num_envs, self.n_symbols
        rows = options.get("start_rows")
        self._row = self._draw_starts() if rows is None else self._given_starts(rows)
        zeros = torch.zeros(N, S, device=self.device)
        self._tau = torch.zeros(N, dtype=torch.long, device=self.device)
        self._held, self._upnl = zeros, zeros
        self._equity = torch.ones(N, device=self.device)
        lags = self.simulation.latency_bars
        self._book = None if lags == [0] else OrderBook.empty(zeros, max(lags))
        self._shaper.reset(torch.ones(N, dtype=torch.bool, device=self.device))
        return self._observe(), {"row": self._row.clone()}

    def _restart(self, done: Tensor) -> None:
        """SAME_STEP autoreset: envs ``done`` begin a new episode at a fresh start."""
        self._row = torch.where(done, self._draw_starts(), self._row)
        self._tau = self._tau.masked_fill(done, 0)
        self._held = self._held.masked_fill(done.unsqueeze(1), 0.0)
        self._upnl = self._upnl.masked_fill(done.unsqueeze(1), 0.0)
        self._equity = self._equity.masked_fill(done, 1.0)
        if self._book is not None:
            self._book.clear(done, torch.zeros_like(self._held))
        self._shaper.reset(done)

    # ----------------------------------------------------------------------------------
    # Step
    # ----------------------------------------------------------------------------------

    def _targets(self, actions: Tensor) -> Tensor:
        """Validated actions → target positions ``[N, S]`` float32."""
        N, S = self.num_envs, self.n_symbols
        if not torch.is_tensor(actions):
            raise TypeError(
                f"actions must be a torch tensor [num_envs, n_symbols] = [{N}, {S}], got "
                f"{type(actions).__name__} — wrap arrays with torch.as_tensor"
            )
        if tuple(actions.shape) != (N, S):
            raise ValueError(
                f"actions must be [num_envs, n_symbols] = [{N}, {S}], got {list(actions.shape)}"
            )
        actions = actions.to(self.device, non_blocking=True)
        if self.action_mode == "continuous":
            if not actions.is_floating_point():
                raise ValueError(
                    f"reinforcement.env.action=continuous takes float target positions in "
                    f"[-1, 1], got {actions.dtype} — set reinforcement.env.action=discrete for "
                    "0/1/2 actions"
                )
            if self.env_cfg.check_actions:
                _check_range(actions, -1.0, 1.0, "continuous actions are target positions")
            return actions.to(torch.float32)
        if actions.is_floating_point() or actions.dtype == torch.bool:
            raise ValueError(
                f"reinforcement.env.action=discrete takes integer actions (0 = short, 1 = flat, "
                f"2 = long), got {actions.dtype} — cast with .long(), or set "
                "reinforcement.env.action=continuous for target positions"
            )
        if self.env_cfg.check_actions:
            _check_range(actions, 0, 2, "discrete actions are 0 = short, 1 = flat, 2 = long")
        return self._levels[actions.long()]

    def _execute(self, targets: Tensor) -> tuple[Tensor, Any]:
        """One bar of the execution simulator at each env's row: held ``[N, S]`` and the bar."""
        sim = self.simulation
        returns, vol, volume, adv, funding = self._bars.index_select(0, self._row).unbind(-1)
        present = self._present.index_select(0, self._row)  # (N, S)
        if self._book is not None:
            if self._latency is None:  # one bucket: every order waits latency_bars[0]
                lag = torch.full_like(targets, sim.latency_bars[0], dtype=torch.long)
            else:
                u = torch.rand(
                    targets.shape, generator=self._generator, dtype=torch.float64,
                    device=self.device,
                )  # fmt: skip
                lag = self._latency.draw(u)  # (N, S)
            targets = arrive(self._book, targets, lag, self._tau)
        wanted = limit_targets(targets, present, sim)
        slot = capital_slot(present, sim, wanted.dtype)  # (N, 1)
        previous = self._held
        if sim.participation_cap is not None:
            limit = fill_limit(sim.participation_cap * volume / slot, present)
            held = fill_bar(previous, wanted, limit)
        else:
            held = torch.where(present, wanted, previous)  # absent symbols keep their position
        bar = bar_update(
            held,
            previous,
            returns,
            present,
            slot,
            sim,
            volatility=vol,
            adv=adv,
            funding=funding if self._has_funding else None,
            periods_per_year=self.periods_per_year,
        )
        return held, bar

    def step(
        self, actions: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        """Trade one bar in every environment; finished episodes restart in the same step."""
        if self._row is None:
            raise RuntimeError("VectorTradingEnv.step() before reset() — call env.reset() first")
        held, bar = self._execute(self._targets(actions))
        # portfolio means over the known symbols (0 where none is known), in one pass
        traded = bar.size * bar.known.to(held.dtype)
        sums = torch.stack([bar.net, traded, bar.charged], dim=-1).sum(dim=1)  # (N, 3)
        net, turnover, cost = (sums / bar.count.clamp(min=1).unsqueeze(1)).unbind(-1)
        same_side = torch.sign(held) == torch.sign(self._held)
        upnl = torch.where(same_side, self._upnl, 0.0) + bar.gross
        self._upnl = torch.where(held != 0, upnl, 0.0)
        self._held = held
        self._equity = self._equity * (1.0 + net)
        reward, terms = self._shaper(net, turnover, self._equity)
        self._tau = self._tau + 1
        self._row = self._row + 1
        terminated = self._equity <= self.env_cfg.stop_equity
        truncated = (self._tau >= self.episode_length) & ~terminated
        done = terminated | truncated
        obs = self._observe()
        info: dict[str, Any] = {
            "net_return": net,
            "turnover": turnover,
            "cost": cost,
            "equity": self._equity,
            "episode_return": self._equity - 1.0,
            "episode_length": self._tau,
            "reward_terms": terms,
            "final_obs": obs,
            "_final_obs": done,
        }
        if bool(done.any()):
            self._restart(done)
            obs = self._observe()
        info["row"] = self._row
        return obs, reward.to(torch.float32), terminated, truncated, info

    # ----------------------------------------------------------------------------------
    # Observation
    # ----------------------------------------------------------------------------------

    def _observe(self) -> dict[str, Tensor]:
        """The observation at each env's current row (rows ``t-W+1 .. t`` only)."""
        N, S = self.num_envs, self.n_symbols
        equity = self._equity.unsqueeze(1).expand(N, S)
        obs = {
            "window": self._windows.gather(self._row),
            "portfolio": torch.stack([self._held, equity, self._upnl], dim=-1),  # (N, S, 3)
        }
        if self.market_state:
            obs["regime"] = self._regime.index_select(0, self._row)  # (N, S)
            obs["volatility"] = self._state_vol.index_select(0, self._row)  # (N, S)
        return obs

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release: the environment holds tensors only."""


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


def _check_inputs(market: EnvMarket, cfg: SimulationConfig) -> None:
    """Refuse frictions whose market inputs are missing, naming the option (at build time)."""
    if cfg.participation_cap is not None and market.dollar_volume is None:
        raise ValueError(
            "simulation.participation_cap needs per-bar dollar volume: add a dollar_volume "
            "column (or volume and close) or set participation_cap=null"
        )
    if cfg.impact_coef and market.adv is None:
        raise ValueError(
            "simulation.impact_coef needs average dollar volume: add a dollar_volume column "
            "(or volume and close) or set impact_coef=0"
        )
