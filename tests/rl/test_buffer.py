"""Rollout storage, the replay ring, the AWR update and the Parquet transitions loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.config.ppo import OffPolicyConfig
from market_nn_plus_ultra.rl.buffer import (
    ReplayBuffer,
    RolloutBuffer,
    TransitionError,
    Transitions,
    awr_update,
    load_transitions,
    save_transitions,
)
from market_nn_plus_ultra.rl.policy import ActorCritic

pytestmark = pytest.mark.usefixtures("one_thread")

S, W, F = 2, 4, 2
CFG = ModelConfig(architecture="state_space", d_model=8, depth=1, n_heads=2, ff_mult=2,
                  dropout=0.0, max_seq_len=8, ssm_state_dim=4)  # fmt: skip


def _obs(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    portfolio = torch.zeros(b, S, 3)
    portfolio[..., 1] = 1.0
    return {"window": torch.randn(b, S, W, F, generator=g), "portfolio": portfolio}


def _transitions(b: int, start: float = 0.0) -> Transitions:
    returns = torch.arange(b, dtype=torch.float32) + start  # each row tagged by its return
    return Transitions(_obs(b), torch.zeros(b, S), returns)


def test_rollout_buffer_stores_and_flattens_time_major() -> None:
    obs = _obs(3)
    buf = RolloutBuffer(2, obs, torch.zeros(3, S))
    for t in range(2):
        step = {k: v + t for k, v in obs.items()}
        buf.store(t, step, torch.full((3, S), float(t)), torch.full((3,), -t - 1.0),
                  torch.full((3,), 10.0 * t), torch.full((3,), 0.5), torch.tensor([False, t == 1, False]),
                  torch.zeros(3, dtype=torch.bool))  # fmt: skip
    flat_obs, actions, logprobs, values = buf.flat()
    assert flat_obs["window"].shape == (6, S, W, F) and actions.shape == (6, S)
    torch.testing.assert_close(flat_obs["window"][3:], obs["window"] + 1)  # rows 3.. are t = 1
    assert logprobs.tolist() == [-1.0] * 3 + [-2.0] * 3
    assert values.tolist() == [0.0] * 3 + [10.0] * 3
    assert buf.terminated[1].tolist() == [False, True, False]


def test_replay_ring_keeps_the_newest_transitions() -> None:
    ring = ReplayBuffer(5)
    ring.add(_transitions(3))  # returns 0, 1, 2
    assert len(ring) == 3
    ring.add(_transitions(4, start=10))  # 10..13: overwrites the two oldest
    assert len(ring) == 5
    assert sorted(ring._data.returns.tolist()) == [2.0, 10.0, 11.0, 12.0, 13.0]
    ring.add(_transitions(8, start=100))  # larger than the ring: its newest 5 stay
    assert sorted(ring._data.returns.tolist()) == [103.0, 104.0, 105.0, 106.0, 107.0]
    batch = ring.sample(64, torch.Generator().manual_seed(0))
    assert batch.obs["window"].shape == (64, S, W, F) and set(batch.returns.tolist()) <= {
        103.0, 104.0, 105.0, 106.0, 107.0
    }  # fmt: skip
    # a sampled row's observation is the one stored with its return
    ring2 = ReplayBuffer(4)
    t = _transitions(4)
    ring2.add(t)
    b = ring2.sample(16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(b.obs["window"], t.obs["window"][b.returns.long()])


def test_replay_refuses_empty_sampling_and_other_observations() -> None:
    ring = ReplayBuffer(4)
    with pytest.raises(ValueError, match="empty"):
        ring.sample(2)
    ring.add(_transitions(2))
    other = _transitions(2)
    other.obs["regime"] = torch.zeros(2, S, dtype=torch.long)
    with pytest.raises(ValueError, match="same environment"):
        ring.add(other)


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_awr_moves_the_actor_toward_high_advantage_actions(mode: str) -> None:
    torch.manual_seed(0)
    policy = ActorCritic.from_config(CFG, F, mode)
    obs = _obs(1)
    b = 256
    same = {k: v.expand(b, *v.shape[1:]).clone() for k, v in obs.items()}
    # one state; half the replayed actions are "long" with return 1, half "short" with -1
    good = torch.arange(b) % 2 == 0
    if mode == "continuous":
        actions = torch.where(good, 1.0, -1.0)[:, None].expand(b, S).clone()  # pre-tanh
    else:
        actions = torch.where(good, 2, 0)[:, None].expand(b, S).clone()
    ring = ReplayBuffer(b)
    ring.add(Transitions(same, actions, torch.where(good, 1.0, -1.0)))

    def long_preference() -> float:
        with torch.no_grad():
            out = policy(obs)
        return float(
            out.mean.mean() if mode == "continuous" else out.logits.softmax(-1)[..., 2].mean()
        )

    before = long_preference()
    actor = [p for n, p in policy.named_parameters() if not n.startswith("critic.")]
    cfg = OffPolicyConfig(enabled=True, batch_size=64, updates_per_rollout=20, min_buffer=1,
                          learning_rate=1e-2)  # fmt: skip
    critic_before = policy.critic.fc2.weight.detach().clone()
    stats = awr_update(policy, ring, torch.optim.Adam(actor, lr=cfg.learning_rate), cfg,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    after = long_preference()
    assert stats.steps == 20 and np.isfinite(stats.loss)
    assert after > before + (0.3 if mode == "continuous" else 0.2), (before, after)
    assert torch.equal(critic_before, policy.critic.fc2.weight)  # the critic is not the AWR's


def test_awr_waits_for_min_buffer() -> None:
    policy = ActorCritic.from_config(CFG, F)
    ring = ReplayBuffer(16)
    ring.add(_transitions(4))
    stats = awr_update(policy, ring, torch.optim.Adam(policy.parameters()),
                       OffPolicyConfig(min_buffer=8, batch_size=4))  # fmt: skip
    assert stats.steps == 0 and np.isnan(stats.loss)


# --------------------------------------------------------------------------------------
# Parquet transitions
# --------------------------------------------------------------------------------------


def _frame(b: int = 4) -> pd.DataFrame:
    obs = _obs(b)
    return pd.DataFrame(
        {
            "window": list(obs["window"].flatten(1).numpy()),
            "portfolio": list(obs["portfolio"].flatten(1).numpy()),
            "action": list(np.tile([[0.5, -1.0]], (b, 1)).astype(np.float32)),
            "return": np.arange(b, dtype=np.float32),
        }
    )


def _load(path, **kw: object) -> Transitions:
    return load_transitions(path, n_symbols=S, window=W, n_features=F, **kw)


def test_parquet_round_trip(tmp_path) -> None:
    obs = _obs(5)
    obs["regime"] = torch.randint(0, 3, (5, S))
    positions = torch.tensor([[0.5, -0.25]]).expand(5, S)
    path = save_transitions(tmp_path / "t.parquet", obs, positions, torch.arange(5.0))
    loaded = _load(path)
    for key in ("window", "portfolio", "regime"):
        torch.testing.assert_close(loaded.obs[key], obs[key])
    # actions are stored the way the policy samples them: atanh(position)
    torch.testing.assert_close(torch.tanh(loaded.actions), positions)
    assert loaded.returns.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    ring = ReplayBuffer(8)
    ring.add(loaded)
    assert len(ring) == 5


def test_discrete_positions_become_classes(tmp_path) -> None:
    frame = _frame()
    frame["action"] = list(np.tile([[1.0, -1.0]], (4, 1)))
    frame.to_parquet(tmp_path / "t.parquet")
    loaded = _load(tmp_path / "t.parquet", action_mode="discrete")
    assert loaded.actions.tolist() == [[2, 0]] * 4
    frame["action"] = list(np.tile([[0.5, -1.0]], (4, 1)))
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(TransitionError, match=r"-1 \(short\), 0 \(flat\) or 1 \(long\)"):
        _load(tmp_path / "t.parquet", action_mode="discrete")


def test_returns_computed_from_episode_rewards(tmp_path) -> None:
    frame = _frame(5).drop(columns="return")
    # episode 7 listed out of order: steps 1, 0, 2; episode 3 has two steps
    frame["episode"] = [7, 7, 3, 7, 3]
    frame["step"] = [1, 0, 0, 2, 1]
    frame["reward"] = [2.0, 1.0, 5.0, 3.0, -1.0]
    frame.to_parquet(tmp_path / "t.parquet")
    loaded = _load(tmp_path / "t.parquet", gamma=0.5)
    # episode 7: G2 = 3, G1 = 2 + .5·3 = 3.5, G0 = 1 + .5·3.5 = 2.75; episode 3: G1 = -1, G0 = 4.5
    assert loaded.returns.tolist() == pytest.approx([3.5, 2.75, 4.5, 3.0, -1.0])


def test_loader_errors_name_the_column_and_the_fix(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    _frame().drop(columns=["portfolio"]).to_parquet(path)
    with pytest.raises(
        TransitionError, match=r"missing column\(s\) \['portfolio'\]\. Columns in file"
    ):
        _load(path)
    _frame().drop(columns=["return"]).to_parquet(path)
    with pytest.raises(TransitionError, match="'episode', 'step' and 'reward'"):
        _load(path)
    with pytest.raises(
        TransitionError, match=r"'window' must hold 32 values per row, row 0 has 16"
    ):
        _frame().to_parquet(path)
        load_transitions(path, n_symbols=S, window=W * 2, n_features=F)
    frame = _frame()
    frame.loc[2, "window"][3] = np.nan
    frame.to_parquet(path)
    with pytest.raises(TransitionError, match="'window' has NaN or infinite values in 1 rows"):
        _load(path)
    frame = _frame()
    frame["action"] = list(np.tile([[2.0, 0.0]], (4, 1)))
    frame.to_parquet(path)
    with pytest.raises(TransitionError, match=r"target positions in \[-1, 1\]; found 2"):
        _load(path)
    with pytest.raises(TransitionError, match="does not exist"):
        _load(tmp_path / "missing.parquet")
