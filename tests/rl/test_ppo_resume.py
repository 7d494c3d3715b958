"""PPO resume: a run saved after update k and restored into a fresh env, policy and learner
makes exactly the updates k+1.. of the uninterrupted run; ``reset_env`` restarts the envs.

The env has every friction of ``FULL`` (order books, partial fills) with a random latency of
0 or 2 bars per order, and episodes that end inside rollouts, so the saved state must carry
episodes in flight across the boundary: the env's own state (its generator included), the
learner's current observation and the running episode returns.
"""

from __future__ import annotations

import math

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.config.ppo import PPOConfig
from market_nn_plus_ultra.rl import PPO, ActorCritic, UpdateStats
from tests.rl._env_cases import FULL, build_setup, make_env, make_market

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ["continuous", "discrete"]
TIMINGS = ("steps_per_second", "rollout_seconds", "update_seconds")
CFG = PPOConfig(steps_per_rollout=7, minibatches=2, update_epochs=2, learning_rate=1e-3)
SIM = FULL.model_copy(update={"latency_bars": [0, 2], "latency_probs": [0.5, 0.5]})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def market(setup):
    return make_market(setup)


def _fresh(setup, market, mode: str, policy_seed: int) -> PPO:
    """A new env, a new policy (initialised from ``policy_seed``) and a new learner."""
    env = make_env(market, setup, n=3, length=4, simulation=SIM, action=mode)
    torch.manual_seed(policy_seed)
    model = ModelConfig(architecture="state_space", d_model=8, depth=1, n_heads=2, ff_mult=2,
                        dropout=0.0, max_seq_len=16, ssm_state_dim=4)  # fmt: skip
    policy = ActorCritic.from_config(model, env.n_features, mode)
    return PPO(env, policy, CFG, total_updates=4, seed=0)


def _same_stats(a: list[UpdateStats], b: list[UpdateStats]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name, value in x.as_row().items():
            if name in TIMINGS:
                continue
            other = getattr(y, name)
            same = value == other or (math.isnan(value) and math.isnan(other))
            assert same, (x.update, name, value, other)


@pytest.mark.parametrize("mode", MODES)
def test_resumed_run_makes_the_uninterrupted_runs_updates(setup, market, mode, tmp_path) -> None:
    full = _fresh(setup, market, mode, policy_seed=0)
    full.learn(2)
    path = tmp_path / "state.pt"
    torch.save(full.state_dict(), path)
    later = full.learn()  # updates 3 and 4
    assert [s.update for s in later] == [3, 4]
    assert any(math.isfinite(s.episode_return) for s in later)  # episodes did end

    resumed = _fresh(setup, market, mode, policy_seed=9)  # other initial weights
    state = torch.load(path, weights_only=True)
    assert {"env", "obs", "episode_return"} <= set(state["rollouts"])
    assert bool((state["rollouts"]["episode_return"] != 0).any())  # episodes in flight
    resumed.load_state_dict(state)
    again = resumed.learn()
    _same_stats(again, later)
    weights, expected = resumed.policy.state_dict(), full.policy.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in expected.items())
    for key, value in full.rollouts.obs.items():  # and the envs stand where they stood
        assert torch.equal(resumed.rollouts.obs[key], value), key


def test_reset_env_restarts_the_episodes_and_running_returns(setup, market) -> None:
    ppo = _fresh(setup, market, "continuous", policy_seed=0)
    ppo.collect()  # 7 steps of 4-bar episodes: three steps into the second episode
    assert bool((ppo.rollouts.episode_return != 0).any())
    ppo.reset_env(seed=3)
    reference = make_env(market, setup, n=3, length=4, simulation=SIM)
    obs, _ = reference.reset(seed=3)
    for key, value in obs.items():
        assert torch.equal(ppo.rollouts.obs[key], value), key
    assert torch.equal(ppo.rollouts.episode_return, torch.zeros(3))
    rollout, _, _ = ppo.collect()  # the first episodes truncate after 4 steps again
    assert rollout.truncated[3].all() and not rollout.truncated[:3].any()


def test_a_state_of_ray_shards_is_refused_by_a_local_learner(setup, market) -> None:
    ppo = _fresh(setup, market, "continuous", policy_seed=0)
    state = ppo.state_dict()
    state["rollouts"] = {"shard_sizes": [2, 1], "shards": [{}, {}]}
    with pytest.raises(ValueError, match=r"2 Ray rollout workers.*rollout_workers"):
        ppo.load_state_dict(state)


def test_env_and_rollouts_together_are_refused(setup, market) -> None:
    ppo = _fresh(setup, market, "continuous", policy_seed=0)
    with pytest.raises(ValueError, match="env=None"):
        PPO(ppo.env, ppo.policy, CFG, total_updates=1, rollouts=ppo.rollouts)
