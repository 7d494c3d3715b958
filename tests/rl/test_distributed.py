"""Ray rollouts on a local Ray of 2 CPUs: shards gathered side by side, one worker equal to
the single-process path, configure() on every shard, exact resume, clear errors.

The equivalences, bitwise on CPU with one torch thread per process:
- the joined batch of W workers is, block by block, what shard i plays alone in this
  process (``EnvRollouts`` on its own env of ``n_i`` envs, reset and generator seeded
  ``seed + i``) with the learner's weights;
- one worker plays the first rollout of ``PPO(env, ...)`` exactly. Later rollouts differ:
  the single-process learner draws actions and minibatch shuffles from one generator, a
  worker draws actions from its own. With ``rollouts=EnvRollouts(env, own generator)`` the
  single-process path makes every update of the one-worker run (same stats, same weights).

One Ray session serves the module (start-up: about 4 s for Ray, 4 s per batch of actors).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from market_nn_plus_ultra.config.ppo import PPOConfig
from market_nn_plus_ultra.rl import PPO, ActorCritic, UpdateStats, VectorTradingEnv
from market_nn_plus_ultra.rl.distributed import RayRollouts
from market_nn_plus_ultra.rl.rollout import EnvRollouts
from tests.training._train_cases import fixture_db, tiny_config

ray = pytest.importorskip("ray", reason="Ray rollouts need pip install -e '.[distributed]'")

# 13 s on 2 idle cores, 25-30 s under load: most of it starting Ray and its actors
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

SEED, T = 3, 6
PPO_CFG = PPOConfig(steps_per_rollout=T, minibatches=2, update_epochs=2, learning_rate=1e-3)
FIELDS = ("actions", "logprobs", "values", "rewards", "final_values", "terminated", "truncated")
TIMINGS = ("steps_per_second", "rollout_seconds", "update_seconds")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """4-bar episodes on a two-symbol daily market; each order waits 0 or 2 bars at random."""
    tmp = tmp_path_factory.mktemp("rl_ray")
    return tiny_config(
        fixture_db(tmp, rows=300),
        tmp / "out",
        "model.architecture=state_space",
        "reinforcement.env.episode_length=4",
        "simulation.cost_bps=5",
        "simulation.latency_bars=[0,2]",
        "simulation.latency_probs=[0.5,0.5]",
    )


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two(cfg, ray_session):
    """5 environments on 2 workers: shards of 3 and 2."""
    rollouts = RayRollouts.from_config(cfg, num_envs=5, workers=2, seed=SEED, cpus_per_worker=0.5)
    yield rollouts
    rollouts.close()


def _policy(cfg, n_features: int, seed: int = 0, **model: object) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic.from_config(cfg.model.model_copy(update=model), n_features, "continuous")


def _same_rollouts(a, b, block: slice = slice(None)) -> None:
    assert set(a.obs) == set(b.obs)
    for key, value in b.obs.items():
        assert torch.equal(a.obs[key][:, block], value), key
    for name in FIELDS:
        assert torch.equal(getattr(a, name)[:, block], getattr(b, name)), name


def _same_stats(a: list[UpdateStats], b: list[UpdateStats]) -> None:
    assert [s.update for s in a] == [s.update for s in b]
    for x, y in zip(a, b, strict=True):
        for name, value in x.as_row().items():
            other = getattr(y, name)
            same = value == other or (math.isnan(value) and math.isnan(other))
            assert name in TIMINGS or same, (x.update, name, value, other)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    other = b.state_dict()
    assert all(torch.equal(v, other[k]) for k, v in a.state_dict().items())


def test_two_workers_gather_their_shards_side_by_side(cfg, two) -> None:
    assert two.shard_sizes == [3, 2] and two.num_envs == 5 and two.workers == 2
    policy = _policy(cfg, two.n_features)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ppo = PPO(None, policy, PPO_CFG, total_updates=2, seed=SEED, rollouts=two)
    rollout, last_value, _ = ppo.collect()
    S, W, F = two.n_symbols, cfg.windows.window, two.n_features
    assert {k: tuple(v.shape) for k, v in rollout.obs.items()} == {
        "window": (T, 5, S, W, F),
        "portfolio": (T, 5, S, 3),
    }
    assert rollout.actions.shape == (T, 5, S) and last_value.shape == (5,)
    for name in FIELDS[1:]:
        assert getattr(rollout, name).shape == (T, 5), name
    assert int(rollout.truncated.sum()) == 5  # every env's first 4-bar episode, once
    start = 0
    for i, n in enumerate(two.shard_sizes):  # block i: shard i alone, seeded SEED + i
        local = EnvRollouts(VectorTradingEnv.from_config(cfg, n), torch.Generator())
        local.generator.manual_seed(SEED + i)
        local.reset(SEED + i)
        played = local.collect(policy, T)
        _same_rollouts(rollout, played.buffer, slice(start, start + n))
        assert torch.equal(last_value[start : start + n], played.last_value)
        start += n
    stats = ppo.learn()
    assert [s.update for s in stats] == [1, 2]
    assert [s.env_steps for s in stats] == [T * 5, 2 * T * 5]
    for s in stats:
        assert s.epochs == 2.0 and math.isfinite(s.policy_loss) and math.isfinite(s.value_loss)
        assert math.isfinite(s.episode_return)  # 4-bar episodes end in every rollout
    assert any(not torch.equal(v, policy.state_dict()[k]) for k, v in before.items())


def test_one_worker_plays_the_single_process_rollouts(cfg, ray_session) -> None:
    one = RayRollouts.from_config(cfg, num_envs=4, workers=1, seed=SEED, cpus_per_worker=0.5)
    try:
        env = VectorTradingEnv.from_config(cfg, 4)
        local = PPO(env, _policy(cfg, env.n_features), PPO_CFG, total_updates=3, seed=SEED)
        remote = PPO(None, _policy(cfg, env.n_features), PPO_CFG, 3, seed=SEED, rollouts=one)
        (a, value_a, return_a), (b, value_b, return_b) = local.collect(), remote.collect()
        _same_rollouts(a, b)
        assert torch.equal(value_a, value_b) and return_a == return_b

        own = EnvRollouts(env, torch.Generator().manual_seed(SEED))
        local = PPO(None, _policy(cfg, env.n_features), PPO_CFG, 3, seed=SEED, rollouts=own)
        remote = PPO(None, _policy(cfg, env.n_features), PPO_CFG, 3, seed=SEED, rollouts=one)
        _same_stats(local.learn(), remote.learn())
        _same_weights(local.policy, remote.policy)
    finally:
        one.close()
    with pytest.raises(RuntimeError, match="closed"):
        one.reset()


def test_configure_reaches_every_shard(cfg, two) -> None:
    ppo = PPO(None, _policy(cfg, two.n_features), PPO_CFG, 1, seed=SEED, rollouts=two)
    base = cfg.reinforcement.env.episode_length, cfg.windows.window
    try:
        two.configure(episode_length=3, window=5)
        assert two.stage_settings["episode_length"] == base[0]  # in force from the reset
        ppo.reset_env(seed=SEED)
        assert two.stage_settings["episode_length"] == 3 and two.stage_settings["window"] == 5
        rollout, _, _ = ppo.collect()
        assert rollout.obs["window"].shape[:4] == (T, 5, two.n_symbols, 5)
        # every env of both shards truncates after 3 and after 6 steps
        assert rollout.truncated[2].all() and rollout.truncated[5].all()
        assert int(rollout.truncated.sum()) == 10
    finally:
        two.configure(episode_length=base[0], window=base[1])
        two.reset(SEED)
    assert two.stage_settings["episode_length"] == base[0]


def test_a_ray_run_resumes_exactly(cfg, two, tmp_path) -> None:
    full = PPO(None, _policy(cfg, two.n_features), PPO_CFG, 3, seed=SEED, rollouts=two)
    full.learn(1)
    path = tmp_path / "state.pt"
    torch.save(full.state_dict(), path)
    later = full.learn()  # updates 2 and 3
    # a new learner with other weights on the same actors, now two updates further on
    resumed = PPO(None, _policy(cfg, two.n_features, seed=9), PPO_CFG, 3, seed=SEED, rollouts=two)
    state = torch.load(path, weights_only=True)
    assert len(state["rollouts"]["shards"]) == 2
    resumed.load_state_dict(state)
    _same_stats(resumed.learn(), later)
    _same_weights(resumed.policy, full.policy)
    with pytest.raises(ValueError, match="rollout_workers=0"):
        two.load_state_dict({"obs": {}, "episode_return": torch.zeros(5)})
    with pytest.raises(ValueError, match="rollout_workers=1"):
        two.load_state_dict({"shard_sizes": [5], "shards": [{}]})


def test_setups_that_cannot_work_are_refused(cfg, two, monkeypatch) -> None:
    other = _policy(cfg, two.n_features, d_model=8)
    with pytest.raises(ValueError, match=r"model=\.\.\."):
        PPO(None, other, PPO_CFG, 1, rollouts=two)
    with pytest.raises(ValueError, match="rollout_workers=3 Ray actors of 1 CPU"):
        RayRollouts.from_config(cfg, num_envs=6, workers=3)  # the local Ray has 2 CPUs
    with pytest.raises(ValueError, match=r"raise reinforcement\.env\.num_envs"):
        RayRollouts.from_config(cfg, num_envs=1, workers=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[distributed\]'"):
        RayRollouts.from_config(cfg, num_envs=4, workers=2)
