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

from dataclasses import asdict, replace
from typing import Any, ClassVar

import gymnasium
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
from .env_state import book_from_state, book_state, load_shaper_state, restore, shaper_state
from .market import EnvMarket
from .observe import (
    WindowSource,
    action_targets,
    observation_space,
    scaled_costs,
    target_levels,
)
from .reward import RewardShaper
from .starts import UNIFORM_STARTS, EpisodeStarts, StageSettings, check_settings

__all__ = ["VectorTradingEnv"]

_EPISODE_STATE = ("row", "tau", "held", "upnl", "equity")


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

    ``configure(episode_length=, cost_multiplier=, window=, high_vol_share=)`` changes the
    settings at the next ``reset()`` (a curriculum stage); ``state_dict()`` /
    ``load_state_dict(state)`` save and restore everything a step depends on.
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
        self.n_features, self.num_regimes = t.n_features, int(num_regimes)
        self.action_mode, self.market_state = env.action, bool(market_state)
        self.periods_per_year = float(market.periods_per_year)
        self._base_simulation = simulation
        market.check_frictions(simulation)
        self._windows = WindowSource(market, windows, self.device)
        tensors = market.bar_tensors(num_regimes)  # on the host: move once
        self._bars, self._present, self._regime, self._state_vol = (
            v.to(self.device) for v in tensors
        )
        self._has_funding = market.funding is not None
        sigma = torch.as_tensor(market.start_volatility(), dtype=torch.float32)
        self._sigma = sigma.to(self.device)  # (T,) market σ at each row: the high-vol ranking
        self._levels = target_levels(self.device)  # discrete action → target
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self._shaper = RewardShaper(reward, self.num_envs, self.device)
        lags = simulation.latency_bars
        self._latency = (
            None
            if len(lags) == 1
            else LatencyBuckets.from_config(lags, simulation.latency_probs, self.device)
        )
        base = StageSettings(
            env.episode_length, env.cost_multiplier, windows.window, env.high_vol_share
        )
        self._pending: tuple[StageSettings, EpisodeStarts] | None = None
        self._apply(*self._checked(base))
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

    # ----------------------------------------------------------------------------------
    # Stage settings (a curriculum)
    # ----------------------------------------------------------------------------------

    @property
    def stage_settings(self) -> dict[str, Any]:
        """The settings in force: ``episode_length``, ``cost_multiplier``, ``window`` and
        ``high_vol_share`` (None = uniform starts)."""
        return asdict(self._settings)

    def configure(
        self,
        *,
        episode_length: int | None = None,
        cost_multiplier: float | None = None,
        window: int | None = None,
        high_vol_share: float | str | None = None,
    ) -> None:
        """Change the settings from the next ``reset()`` on; None keeps a setting.

        ``window`` (1 .. ``windows.window``): observations carry the last ``window`` rows
        and the observation spaces follow; ``high_vol_share`` in [0, 1] draws that share of
        starts from the high-volatility start rows (:mod:`.starts`), ``UNIFORM_STARTS``
        returns to uniform starts. Everything is checked here: an episode length that does
        not fit the split raises now, not at the reset.
        """
        current = self._pending[0] if self._pending is not None else self._settings
        share = current.high_vol_share if high_vol_share is None else high_vol_share
        settings = StageSettings(
            episode_length=current.episode_length if episode_length is None else episode_length,
            cost_multiplier=current.cost_multiplier if cost_multiplier is None else cost_multiplier,
            window=current.window if window is None else window,
            high_vol_share=None if share == UNIFORM_STARTS else share,
        )
        self._pending = self._checked(settings)

    def set_cost_multiplier(self, multiplier: float) -> None:
        """Scale every execution charge rate from now on (``configure`` waits for a reset)."""
        settings = replace(self._settings, cost_multiplier=multiplier)
        self._settings = check_settings(settings, self._windows.max_window)
        self.simulation = scaled_costs(self._base_simulation, self._settings.cost_multiplier)

    def _checked(self, settings: StageSettings) -> tuple[StageSettings, EpisodeStarts]:
        """``settings`` validated, with their start rows (the split's error if none fit)."""
        settings = check_settings(settings, self._windows.max_window)
        rows = self.market.start_rows(self.env_cfg.split, settings.window, settings.episode_length)
        return settings, EpisodeStarts(torch.as_tensor(rows, device=self.device), self._sigma)

    def _apply(self, settings: StageSettings, starts: EpisodeStarts) -> None:
        """Put ``settings`` in force: costs, episodes, starts, windows and spaces."""
        self._settings, self._starts = settings, starts
        self.episode_length, self.window = settings.episode_length, settings.window
        self.simulation = scaled_costs(self._base_simulation, settings.cost_multiplier)
        self.start_rows = starts.rows  # (n_starts,)
        self._windows.resize(settings.window)
        self.single_observation_space, self.single_action_space = observation_space(
            self.n_symbols, self.window, self.n_features, self.action_mode,
            market_state=self.market_state, num_regimes=self.num_regimes,
        )  # fmt: skip
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # ----------------------------------------------------------------------------------
    # Reset
    # ----------------------------------------------------------------------------------

    def _draw_starts(self) -> Tensor:
        return self._starts.draw(self.num_envs, self._generator, self._settings.high_vol_share)

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
        """Start every episode afresh under the configured settings; ``seed`` re-seeds
        starts and latency draws."""
        if seed is not None:
            self._generator.manual_seed(int(seed))
        if self._pending is not None:  # configure()'s settings start with these episodes
            self._apply(*self._pending)
            self._pending = None
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
        shape = (self.num_envs, self.n_symbols)
        check = self.env_cfg.check_actions
        return action_targets(actions, self.action_mode, shape, self._levels, check=check)

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
    # Saving and restoring
    # ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on, as CPU tensors, numbers and None.

        The settings in force (and any ``configure``d for the next reset), the generator
        of starts and latency draws, each env's row, bar count, position, unrealised PnL
        and equity, the order book and the reward shaper's state. ``torch.save`` it and
        ``torch.load(path, weights_only=True)`` reads it back.
        """
        state: dict[str, Any] = {
            "num_envs": self.num_envs,
            "n_symbols": self.n_symbols,
            "settings": asdict(self._settings),
            "pending": None if self._pending is None else asdict(self._pending[0]),
            "generator": self._generator.get_state(),
            "started": self._row is not None,
        }
        if self._row is not None:
            for name in _EPISODE_STATE:
                state[name] = getattr(self, f"_{name}").detach().cpu().clone()
            state["book"] = book_state(self._book)
            state["shaper"] = shaper_state(self._shaper)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the env that saved ``state`` (same config) stood."""
        shape = (state.get("num_envs"), state.get("n_symbols"))
        if shape != (self.num_envs, self.n_symbols):
            raise ValueError(
                f"the env state is for {shape[0]} envs x {shape[1]} symbols, this env has "
                f"{self.num_envs} x {self.n_symbols} — build it with the same num_envs and data"
            )
        self._apply(*self._checked(StageSettings(**state["settings"])))
        pending = state["pending"]
        self._pending = None if pending is None else self._checked(StageSettings(**pending))
        self._generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
        if not state["started"]:
            self._row = None
            return
        N, S, device = self.num_envs, self.n_symbols, self.device
        count, zeros = (
            torch.zeros(N, dtype=torch.long, device=device),
            torch.zeros(N, S, device=device),
        )
        like = {"row": count, "tau": count, "held": zeros, "upnl": zeros, "equity": zeros[:, 0]}
        for name in _EPISODE_STATE:
            setattr(self, f"_{name}", restore(state, name, like[name]))
        lags = self.simulation.latency_bars
        empty = None if lags == [0] else OrderBook.empty(like["held"], max(lags))
        self._book = book_from_state(state["book"], empty)
        load_shaper_state(self._shaper, state["shaper"])

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
