"""VectorTradingEnv's actions, costs and config; TradingEnv under Gymnasium's checker and
stable-baselines3."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from market_nn_plus_ultra.config.reinforcement import EnvConfig, RewardConfig
from market_nn_plus_ultra.rl import TradingEnv, VectorTradingEnv
from tests.rl._env_cases import FULL, build_setup, make_env, make_market, spread_rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A two-symbol daily database, its config and its feature panel (built once)."""
    return build_setup(tmp_path_factory)


# --------------------------------------------------------------------------------------
# Actions and costs
# --------------------------------------------------------------------------------------


def test_discrete_actions_are_short_flat_long(setup):
    market = make_market(setup)
    cont = make_env(market, setup, n=3, length=8)
    disc = make_env(market, setup, n=3, length=8, action="discrete")
    starts = spread_rows(cont, 3)
    cont.reset(options={"start_rows": starts})
    disc.reset(options={"start_rows": starts})
    codes = torch.tensor([[0, 2], [1, 1], [2, 0]])
    for _ in range(8):
        _, r_disc, *_ = disc.step(codes)
        _, r_cont, *_ = cont.step(codes.float() - 1.0)
        torch.testing.assert_close(r_disc, r_cont, rtol=0, atol=0)
    assert disc.action_space.shape == (3, 2) and disc.single_action_space.nvec.tolist() == [3, 3]


def test_bad_actions_name_the_problem(setup):
    market = make_market(setup)
    env = make_env(market, setup, n=2, length=5)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(2, 2))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[num_envs, n_symbols\] = \[2, 2\], got \[2, 3\]"):
        env.step(torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"torch\.as_tensor"):
        env.step(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]; got values from -1 to 1.5"):
        env.step(torch.tensor([[1.5, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="action=continuous takes float"):
        env.step(torch.zeros(2, 2, dtype=torch.long))
    disc = make_env(market, setup, n=2, length=5, action="discrete")
    disc.reset(seed=0)
    with pytest.raises(ValueError, match="action=discrete takes integer"):
        disc.step(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"0 = short, 1 = flat, 2 = long in \[0, 2\]; got .* to 3"):
        disc.step(torch.tensor([[3, 0], [1, 1]]))


def test_cost_multiplier_scales_every_charge(setup):
    sim = FULL.model_copy(update={"participation_cap": None, "latency_bars": [0]})
    market = make_market(setup, simulation=sim)
    actions = torch.rand(6, 3, 2, generator=torch.Generator().manual_seed(8)) * 2 - 1
    costs = {}
    for m in (0.0, 1.0, 2.5):
        env = make_env(market, setup, n=3, length=6, simulation=sim, cost_multiplier=m)
        env.reset(seed=1)
        steps = [env.step(a)[4] for a in actions]
        costs[m] = torch.stack([s["cost"] for s in steps])
        if m == 0.0:  # only funding (market data, never scaled) is left
            gross_plus_funding = torch.stack([s["net_return"] for s in steps])
    torch.testing.assert_close(costs[2.5] - costs[0.0], 2.5 * (costs[1.0] - costs[0.0]))
    assert (costs[1.0] > costs[0.0]).all() and torch.isfinite(gross_plus_funding).all()


def test_shaped_reward_reports_its_terms(setup):
    market = make_market(setup)
    reward = RewardConfig.model_validate({"turnover": {"enabled": True, "weight": 2.0}})
    env = make_env(market, setup, n=4, length=6, reward=reward)
    env.reset(seed=0)
    for _ in range(3):
        _, r, _, _, info = env.step(torch.rand(4, 2) * 2 - 1)
        torch.testing.assert_close(r, info["net_return"] - 2.0 * info["turnover"])
        assert set(info["reward_terms"]) == {"turnover"}


# --------------------------------------------------------------------------------------
# Building from the config, Gymnasium and stable-baselines3
# --------------------------------------------------------------------------------------


def test_from_config_builds_what_training_builds(setup):
    cfg = setup[0].model_copy(deep=True)
    cfg.model.market_state_embedding = True
    cfg.reinforcement.env.episode_length = 8
    env = VectorTradingEnv.from_config(cfg, num_envs=3)
    assert (env.num_envs, env.n_symbols, env.window) == (3, 2, cfg.windows.window)
    assert env.device == torch.device("cpu") and env.action_mode == "continuous"
    obs, info = env.reset()
    assert set(obs) == {"window", "portfolio", "regime", "volatility"}
    assert obs["window"].shape == (3, 2, cfg.windows.window, env.n_features)
    assert obs["window"].dtype == torch.float32 and obs["portfolio"].shape == (3, 2, 3)
    assert obs["regime"].dtype == torch.long and obs["volatility"].shape == (3, 2)
    assert env.observation_space["window"].shape == (3, 2, cfg.windows.window, env.n_features)
    tensors = env.market.tensors  # the raw realised-vol input the market state embeds
    rows, col = info["row"].numpy(), tensors.feature_names.index("realised_vol_20")
    raw = np.where(tensors.mask[rows], tensors.inputs[rows, :, col], 0.0)
    torch.testing.assert_close(obs["volatility"], torch.as_tensor(raw, dtype=torch.float32))
    split = env.market.splits["train"]
    assert ((info["row"] >= split.rows.start) & (info["row"] < split.rows.stop)).all()


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_single_env_passes_the_gymnasium_checker(setup, action):
    sim = FULL.model_copy(update={"latency_bars": [0, 1], "latency_probs": [0.5, 0.5]})
    market = make_market(setup, simulation=sim)
    cfg = setup[0]
    vector = VectorTradingEnv(
        market,
        num_envs=1,
        env=EnvConfig(episode_length=12, action=action),
        reward=RewardConfig(),
        simulation=sim,
        windows=cfg.windows,
        market_state=True,
    )
    env = TradingEnv(vector)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
        assert env.observation_space.contains(obs) and isinstance(reward, float)
    assert steps == 12 and info["episode_length"] == 12


def test_stable_baselines3_ppo_trains_the_single_env(setup):
    from stable_baselines3 import PPO

    market = make_market(setup)
    vector = make_env(market, setup, n=1, length=8)
    model = PPO(
        "MultiInputPolicy", TradingEnv(vector), n_steps=16, batch_size=8, n_epochs=1, seed=0
    )
    model.learn(total_timesteps=32)
    obs, _ = TradingEnv(vector).reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    assert model.num_timesteps == 32
