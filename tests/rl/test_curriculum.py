"""Curriculum profiles: config validation, advancing by updates and by a reward plateau,
the settings a stage puts in the environment, and exact resume."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from market_nn_plus_ultra.config import Config, ConfigError, config_from_dict, load_config
from market_nn_plus_ultra.config.reinforcement import ReinforcementConfig
from market_nn_plus_ultra.rl.curriculum import Curriculum
from market_nn_plus_ultra.rl.starts import UNIFORM_STARTS
from market_nn_plus_ultra.windows import SlidingWindowDataset
from tests.rl._env_cases import FULL, build_setup, make_env, make_market

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory)


def _rl(profile: dict, name: str = "p", **env) -> ReinforcementConfig:
    return ReinforcementConfig.model_validate(
        {"env": env, "curriculum": {"profile": name, "profiles": {name: profile}}}
    )


def _stages(*updates) -> list[dict]:
    return [{"name": f"s{i}", "updates": u} for i, u in enumerate(updates)]


class _Recorder:
    """Anything with ``configure``: a Ray rollout, here a list of the calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def configure(self, **settings) -> None:
        self.calls.append(settings)


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"profile": "nope"}, "profile='nope' is not a profile; .* has: easy_to_real, "),
        ({"profiles": {"p": {"stages": []}}}, r"profiles\.p\.stages"),
        (
            {"profiles": {"p": {"stages": _stages(None, None)}}},
            r"stages \['s0'\] have updates=null",
        ),
        ({"profiles": {"p": {"stages": [{"name": "a"}, {"name": "a"}]}}}, r"names \['a'\] repeat"),
        (
            {"profiles": {"p": {"stages": [{"high_vol_share": 1.5}]}}},
            r"stages\[0\]\.high_vol_share",
        ),
        (
            {"profiles": {"p": {"stages": [{"windw": 3}]}}},
            r"unknown option `reinforcement\.curriculum\.profiles\.p\.stages\[0\]\.windw`",
        ),
        ({"profiles": {"p": {"advance": "epochs", "stages": [{}]}}}, r"profiles\.p\.advance"),
    ],
)
def test_bad_profiles_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"reinforcement": {"curriculum": raw}})


def test_from_config_picks_the_profile_or_none():
    cfg = Config()
    assert Curriculum.from_config(cfg.reinforcement) is None  # no profile: the run is unchanged
    chosen = Curriculum.from_config(cfg.reinforcement, "easy_to_real", window=cfg.windows.window)
    assert [s.name for s in chosen.profile.stages] == ["calm", "costs", "real"]
    assert chosen.settings == {
        "episode_length": 64,
        "cost_multiplier": 0.0,
        "window": cfg.windows.window,
        "high_vol_share": 0.0,
    }
    with pytest.raises(ValueError, match=r"'easy_to_rea' .* easy_to_real, easy_to_real_plateau\)"
                       r" — did you mean 'easy_to_real'"):  # fmt: skip
        Curriculum.from_config(cfg.reinforcement, "easy_to_rea")
    wide = _rl({"stages": [{"name": "short", "updates": 2, "window": 32}, {"name": "full"}]})
    with pytest.raises(ValueError, match=r"profiles\.p\.stages\[0\] \('short'\)\.window=32 exceeds "
                       "windows.window=16"):  # fmt: skip
        Curriculum.from_config(wide, window=16)


def test_shipped_presets_offer_the_profiles():
    for name in ("default.yaml", "default_desktop.yaml"):
        cfg = load_config(CONFIGS / name)
        assert cfg.reinforcement.curriculum.profile is None
        for profile in ("easy_to_real", "easy_to_real_plateau"):
            c = Curriculum.from_config(cfg.reinforcement, profile, window=cfg.windows.window)
            first, last = c.profile.stages[0], c.profile.stages[-1]
            assert first.cost_multiplier == 0.0 and first.high_vol_share == 0.0
            assert first.episode_length < cfg.reinforcement.env.episode_length
            assert c._settings(len(c.profile.stages) - 1) == {
                "episode_length": cfg.reinforcement.env.episode_length,
                "cost_multiplier": cfg.reinforcement.env.cost_multiplier,
                "window": cfg.windows.window,
                "high_vol_share": cfg.reinforcement.env.high_vol_share,
            }
            assert last.updates is None
    assert (
        load_config(CONFIGS / "default_desktop.yaml")
        .reinforcement.curriculum.profiles["easy_to_real"]
        .stages[0]
        .window
        == 32
    )


# --------------------------------------------------------------------------------------
# Advancing
# --------------------------------------------------------------------------------------


def test_stages_advance_by_update_count(caplog):
    c = Curriculum.from_config(_rl({"stages": _stages(2, 3, None)}, episode_length=9))
    with caplog.at_level(logging.INFO, logger="market_nn_plus_ultra.rl.curriculum"):
        advanced = [u for u in range(1, 12) if c.observe(u, 0.0)]
    assert advanced == [2, 5] and c.stage_index == 2 and c.stage_name == "s2"
    assert c.stage_start == 5
    assert "stage 's0' ends at update 2 (2 updates done)" in caplog.text


def test_stages_advance_on_a_reward_plateau():
    profile = {
        "advance": "plateau",
        "patience": 2,
        "min_delta": 0.1,
        "stages": _stages(None, 4, None),
    }
    c = Curriculum.from_config(_rl(profile))
    rewards = [
        1.0, 1.5, 1.55, 1.58,  # best 1.5; 1.55 and 1.58 gain < 0.1: a plateau after update 4
        0.2, 0.25, 0.9, 0.95, 0.99,  # new stage, best reset: 0.2 → 0.9, then two stale updates
        5.0, 6.0, 7.0,  # last stage: lasts forever
    ]  # fmt: skip
    advanced = [u for u, r in enumerate(rewards, start=1) if c.observe(u, r)]
    assert advanced == [4, 8]  # stage 1 is capped at 4 updates (update 8), before its plateau
    assert c.stage_index == 2
    c = Curriculum.from_config(_rl({**profile, "stages": _stages(None, None, None)}))
    advanced = [u for u, r in enumerate(rewards, start=1) if c.observe(u, r)]
    assert advanced == [4, 9]
    c = Curriculum.from_config(_rl({**profile, "stages": _stages(None, None)}))
    assert [u for u in range(1, 5) if c.observe(u, math.nan)] == [2]  # NaN never improves


def test_curriculum_state_round_trip():
    profile = {
        "advance": "plateau",
        "patience": 3,
        "min_delta": 0.0,
        "stages": _stages(None, 6, None),
    }
    rewards = np.random.default_rng(0).normal(size=30).cumsum() * 0.1
    a = Curriculum.from_config(_rl(profile), window=8)
    for u, r in enumerate(rewards[:10], start=1):
        a.observe(u, r)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = Curriculum.from_config(_rl(profile), window=8)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert b.state_dict() == a.state_dict()
    rest = list(enumerate(rewards[10:], start=11))
    assert [a.observe(u, r) for u, r in rest] == [b.observe(u, r) for u, r in rest]
    assert b.state_dict() == a.state_dict()
    other = Curriculum.from_config(_rl(profile, name="q"))
    with pytest.raises(ValueError, match="of profile 'p', not 'q'"):
        other.load_state_dict(a.state_dict())


# --------------------------------------------------------------------------------------
# What a stage does to the environment
# --------------------------------------------------------------------------------------


def test_apply_configures_anything_with_configure(caplog):
    stages = [{"name": "calm", "updates": 1, "episode_length": 4, "cost_multiplier": 0.0,
               "window": 4, "high_vol_share": 0.0}, {"name": "real"}]  # fmt: skip
    c = Curriculum.from_config(_rl({"stages": stages}, episode_length=30), window=8)
    rollouts = _Recorder()
    with caplog.at_level(logging.INFO, logger="market_nn_plus_ultra.rl.curriculum"):
        c.apply(rollouts)
        assert c.observe(1, 0.0)
        c.apply(rollouts)
    assert rollouts.calls == [
        {"episode_length": 4, "cost_multiplier": 0.0, "window": 4, "high_vol_share": 0.0},
        {
            "episode_length": 30,
            "cost_multiplier": 1.0,
            "window": 8,
            "high_vol_share": UNIFORM_STARTS,
        },
    ]
    assert "curriculum p: stage 2/2 'real' from update 1 (episode_length=30" in caplog.text


def test_a_stage_sets_episode_length_costs_and_window(setup, one_thread):
    sim = FULL.model_copy(update={"participation_cap": None, "latency_bars": [0]})
    market = make_market(setup, simulation=sim, normalise="train_zscore")
    env = make_env(market, setup, n=3, length=12, simulation=sim, normalise="train_zscore")
    W = env.window
    full_obs, full = env.reset(seed=1)
    actions = torch.rand(5, 3, 2, generator=torch.Generator().manual_seed(8)) * 2 - 1
    costs = {}
    for m in (0.0, 1.0, 2.5):
        before = env.stage_settings["cost_multiplier"]
        env.configure(cost_multiplier=m)
        assert env.stage_settings["cost_multiplier"] == before  # in force from the next reset
        env.reset(seed=1)
        assert env.stage_settings["cost_multiplier"] == m
        costs[m] = torch.stack([env.step(a)[4]["cost"] for a in actions])
    torch.testing.assert_close(costs[2.5] - costs[0.0], 2.5 * (costs[1.0] - costs[0.0]))
    assert (costs[1.0] > costs[0.0]).all()
    # a shorter episode and window (train_zscore is elementwise: the last rows of the full window)
    env.configure(episode_length=3, window=W // 2, cost_multiplier=1.0)
    obs, _ = env.reset(options={"start_rows": full["row"]})  # the same rows, shorter windows
    assert obs["window"].shape == (3, 2, W // 2, env.n_features)
    assert env.single_observation_space["window"].shape == (2, W // 2, env.n_features)
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    torch.testing.assert_close(obs["window"], full_obs["window"][:, :, -(W // 2) :], rtol=0, atol=0)
    ends = [env.step(actions[0])[3] for _ in range(3)]
    assert not ends[0].any() and not ends[1].any() and ends[2].all()  # truncated after 3 bars
    with pytest.raises(ValueError, match=f"window=9 must be an integer in 1..{W} "):
        env.configure(window=W + 1)
    with pytest.raises(ValueError, match="episode_length=500 does not fit in the train rows"):
        env.configure(episode_length=500)


def test_check_names_the_stage_that_does_not_fit(setup):
    env = make_env(make_market(setup), setup, n=2, length=10)
    stages = [
        {"name": "short", "updates": 2, "episode_length": 5},
        {"name": "long", "episode_length": 500},
    ]
    c = Curriculum.from_config(_rl({"stages": stages}))
    with pytest.raises(
        ValueError, match=r"stages\[1\] \('long'\): reinforcement.env.episode_length=500"
    ):
        c.check(env)
    fine = Curriculum.from_config(_rl({"stages": [stages[0], {"name": "base"}]}, episode_length=10))
    fine.check(env)  # both fit; the first stage is configured last
    env.reset(seed=0)
    assert env.stage_settings["episode_length"] == 5


def test_high_vol_share_draws_that_share_of_starts(setup, one_thread):
    market = make_market(setup)
    env = make_env(market, setup, n=3000, length=10)
    starts = env._starts
    rows = env.start_rows.numpy()
    sigma = market.start_volatility()[rows]
    high = starts.is_high.numpy()
    # the top third of the start rows by the market's σ at the start (known at t)
    assert high.sum() == math.ceil(len(rows) / 3)
    assert np.nan_to_num(sigma[high], nan=-1).min() >= np.nan_to_num(sigma[~high], nan=-1).max()
    np.testing.assert_allclose(sigma, np.nanmean(market.volatility[rows], axis=1))
    for share in (0.0, 0.25, 0.8, 1.0):
        env.configure(high_vol_share=share)
        drawn = np.isin(env.reset(seed=2)[1]["row"].numpy(), starts.high.numpy())
        if share in (0.0, 1.0):
            assert drawn.mean() == share  # exact
        else:  # binomial: 3000 draws, 4 standard deviations
            assert abs(drawn.mean() - share) < 4 * math.sqrt(share * (1 - share) / 3000)
        assert set(env.reset()[1]["row"].numpy()) <= set(rows)
    env.configure(high_vol_share=UNIFORM_STARTS)
    drawn = np.isin(env.reset(seed=2)[1]["row"].numpy(), starts.high.numpy())
    assert env.stage_settings["high_vol_share"] is None
    assert abs(drawn.mean() - high.mean()) < 4 * math.sqrt(1 / 3 * 2 / 3 / 3000)


def test_a_shorter_window_is_the_training_window_of_that_length(setup, one_thread):
    market = make_market(setup)  # window_zscore: each window normalised by its own rows
    env = make_env(market, setup, n=4, length=5)
    env.configure(window=5)
    starts = env.start_rows[torch.linspace(0, len(env.start_rows) - 1, 4).long()]
    obs, _ = env.reset(options={"start_rows": starts})
    ds = SlidingWindowDataset(
        market.tensors, 5, 1, symbols_per_item="all", normalise="window_zscore",
        require_targets=False,
    )  # fmt: skip
    ends, _ = ds.item_keys()
    x = ds.batch(np.searchsorted(ends, starts.numpy()))["x"]  # (N, S, 5, F)
    torch.testing.assert_close(obs["window"], x, rtol=0, atol=1e-6)
