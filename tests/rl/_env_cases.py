"""Tiny markets and environments shared by the environment tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.config.reinforcement import EnvConfig, RewardConfig
from market_nn_plus_ultra.features.compute import compute_features
from market_nn_plus_ultra.rl import EnvMarket, VectorTradingEnv
from tests.training._train_cases import fixture_db, tiny_config

#: Every friction on; the cap binds on the fixture's volumes (limit ≈ 0.5 units a bar).
FULL = SimulationConfig(
    cost_bps=5.0,
    fixed_cost=50.0,
    capital=1e6,
    half_spread_bps=3.0,
    spread_vol_mult=0.2,
    impact_coef=0.8,
    participation_cap=1e-3,
    latency_bars=[2],
    borrow_bps=200.0,
    leverage_funding_bps=300.0,
    max_position=0.9,
    max_gross=0.7,
)


def build_setup(tmp_path_factory):
    """A two-symbol daily database, its config and its feature panel."""
    tmp = tmp_path_factory.mktemp("rl_env")
    cfg = tiny_config(fixture_db(tmp, rows=300), tmp / "out", "windows.normalise=window_zscore")
    panel, _ = compute_features(cfg.data, cfg.features)
    return cfg, panel


def make_market(setup, normalise="window_zscore", simulation=FULL, funding=True) -> EnvMarket:
    cfg, panel = setup
    windows = cfg.windows.model_copy(update={"normalise": normalise})
    market = EnvMarket.from_panel(panel, windows, simulation)
    if funding:  # the fixture has no funding column: a known per-bar rate
        rng = np.random.default_rng(0)
        market.funding = rng.normal(0.0, 1e-4, market.returns.shape)
    return market


def make_env(market, setup, n=3, length=20, simulation=FULL, normalise=None, **env):
    cfg = setup[0]
    windows = cfg.windows
    if normalise is not None:
        windows = windows.model_copy(update={"normalise": normalise})
    reward = env.pop("reward", RewardConfig())
    return VectorTradingEnv(
        market,
        num_envs=n,
        env=EnvConfig(episode_length=length, **env),
        reward=reward,
        simulation=simulation,
        windows=windows,
    )


def spread_rows(env, n):
    """``n`` distinct start rows spread over the allowed range."""
    pick = torch.linspace(0, len(env.start_rows) - 1, n).long()
    return env.start_rows[pick]
