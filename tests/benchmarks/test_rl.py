"""benchmarks/rl_prototype.py: the faster PPO updates compute the shipped update's numbers.

With one minibatch and one epoch both updates see the same transitions, so the loss (a
mean) and the weights after the step must agree; the sequence pass must equal the
policy's own per-window pass state for state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from rl import PolicySpec, _flat_batch, _googl, _googl_market, _rollout
from rl_prototype import cached_update, rollout_rows, sequence_states, sequence_update

from market_nn_plus_ultra.config.ppo import PPOConfig

WINDOW, STEPS, ENVS = 8, 8, 4
SPEC = PolicySpec("tiny", "hybrid_transformer", 16, 1, n_heads=2)


@pytest.fixture(scope="module")
def market():
    frame, _ = _googl()
    return _googl_market(frame.iloc[:400], window=WINDOW)


def _learner(market, **ppo):
    cfg = PPOConfig(steps_per_rollout=STEPS, update_epochs=1, minibatches=1, **ppo)
    return _rollout(*market, SPEC, ENVS, cfg, "cpu")


def test_rollout_rows_rebuild_every_window_and_refuse_a_restart(market):
    _, rollout, *_ = _learner(market)
    windows = rollout.obs["window"]  # (T, N, S, W, F)
    rows = rollout_rows(windows)  # (N, S, W + T - 1, F)
    assert rows.shape == (ENVS, 1, WINDOW + STEPS - 1, 2)
    for t in range(STEPS):
        torch.testing.assert_close(rows[:, :, t : t + WINDOW], windows[t])
    broken = windows.clone()
    broken[3] += 1.0  # as if the episodes restarted at step 3
    with pytest.raises(ValueError, match="restarted inside the rollout"):
        rollout_rows(broken)


def test_sequence_states_equal_the_per_window_pass(market):
    ppo, rollout, *_ = _learner(market)
    rows = rollout_rows(rollout.obs["window"])
    with torch.no_grad():
        seq = sequence_states(ppo.policy, rows, STEPS).flatten(0, 1)  # (T·N, S, D)
        own = ppo.policy.encode({k: v.flatten(0, 1) for k, v in rollout.obs.items()})
    torch.testing.assert_close(seq, own, atol=2e-6, rtol=0)


@pytest.mark.parametrize("prototype", ["sequence", "cached"])
def test_prototype_step_equals_the_shipped_update(market, prototype):
    ppo, rollout, adv, ret, _ = _learner(market)
    batch = _flat_batch(rollout, adv, ret)
    start = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    if prototype == "cached":  # the shipped update with its backbone frozen
        ppo.policy.freeze_backbone(True)
    shipped = ppo.update(batch)
    ppo.policy.freeze_backbone(False)
    after = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    ppo.policy.load_state_dict(start)
    ppo.optimizer = torch.optim.Adam(ppo.policy.parameters(), lr=ppo.cfg.learning_rate, eps=1e-5)
    if prototype == "sequence":
        assert sequence_update(ppo, rollout, adv, ret) == 1
    else:
        assert cached_update(ppo, rollout, batch) == 1
    assert shipped["epochs"] == 1.0
    moved = 0
    for key, value in ppo.policy.state_dict().items():
        torch.testing.assert_close(value, after[key], atol=1e-6, rtol=1e-5, msg=key)
        moved += int(not torch.equal(value, start[key]))
    assert moved > 0  # the step changed the weights, the same way in both
