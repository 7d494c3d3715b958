"""VectorTradingEnv.state_dict / load_state_dict: a restored env continues exactly."""

from __future__ import annotations

import io

import pytest
import torch

from market_nn_plus_ultra.config.reinforcement import RewardConfig
from tests.rl._env_cases import FULL, build_setup, make_env, make_market

#: Random latency buckets (a generator draw per order) on top of every friction.
LATENCY = FULL.model_copy(update={"latency_bars": [0, 1, 3], "latency_probs": [0.5, 0.3, 0.2]})
#: Every stateful shaping term on.
SHAPED = RewardConfig.model_validate(
    {
        "differential_sharpe": {"enabled": True, "weight": 0.1},
        "differential_sortino": {"enabled": True, "weight": 0.1},
        "drawdown": {"enabled": True},
        "cvar": {"enabled": True, "window": 4},
        "turnover": {"enabled": True},
    }
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def market(setup):
    return make_market(setup, simulation=LATENCY)


def _env(market, setup, seed=0, n=6):
    env = make_env(market, setup, n=n, length=5, simulation=LATENCY, reward=SHAPED)
    env._generator.manual_seed(seed)  # a fresh env of another seed: the state must win
    return env


def _saved(state):
    """``state`` through torch.save / torch.load(weights_only=True), as a run folder keeps it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    else:
        assert torch.equal(a, b)


def test_a_restored_env_continues_exactly(setup, market, one_thread):
    actions = torch.rand(20, 6, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    a = _env(market, setup)
    a.configure(high_vol_share=0.5, cost_multiplier=1.5)
    a.reset(seed=4)
    for action in actions[:7]:
        a.step(action)
    b = _env(market, setup, seed=99)
    b.load_state_dict(_saved(a.state_dict()))
    assert (
        b.stage_settings
        == a.stage_settings
        == {
            "episode_length": 5,
            "cost_multiplier": 1.5,
            "window": a.window,
            "high_vol_share": 0.5,
        }
    )
    restarts = 0
    for action in actions[7:]:  # 13 more steps: every env restarts at least twice
        out_a, out_b = a.step(action), b.step(action)
        for x, y in zip(out_a, out_b, strict=True):  # obs, reward, terminated, truncated, info
            _assert_same(x, y)
        restarts += int(out_a[4]["_final_obs"].sum())
    assert restarts >= 2 * 6


def test_pending_settings_and_unstarted_envs_round_trip(setup, market, one_thread):
    a = _env(market, setup)
    b = _env(market, setup, seed=5)
    b.load_state_dict(_saved(a.state_dict()))  # before any reset
    torch.testing.assert_close(a.reset()[1]["row"], b.reset()[1]["row"], rtol=0, atol=0)
    a.configure(episode_length=3, window=4)  # in force from the next reset
    c = _env(market, setup, seed=7)
    c.load_state_dict(_saved(a.state_dict()))
    assert c.stage_settings["episode_length"] == 5
    obs_a, info_a = a.reset()
    obs_c, info_c = c.reset()
    assert c.stage_settings == a.stage_settings and c.stage_settings["window"] == 4
    assert obs_c["window"].shape[2] == 4
    _assert_same(obs_a, obs_c)
    assert torch.equal(info_a["row"], info_c["row"])


def test_a_state_of_another_env_is_refused(setup, market):
    a = _env(market, setup)
    a.reset(seed=0)
    state = a.state_dict()
    with pytest.raises(ValueError, match="for 6 envs x 2 symbols, this env has 3 x 2"):
        _env(market, setup, n=3).load_state_dict(state)
    no_latency = make_env(
        make_market(setup),
        setup,
        n=6,
        length=5,
        simulation=FULL.model_copy(update={"latency_bars": [0]}),
    )
    with pytest.raises(ValueError, match="order book does not match"):
        no_latency.load_state_dict(state)
    plain = make_env(market, setup, n=6, length=5, simulation=LATENCY)  # cvar window 64, not 4
    with pytest.raises(ValueError, match=r"'recent' is \[6, 4\] but this env needs \[6, 64\]"):
        plain.load_state_dict(state)
