"""The frozen-backbone update: cached backbone states stand in for the windows exactly.

While ``freeze_backbone_updates`` holds the backbone, the rollout keeps each observation's
:meth:`ActorCritic.backbone_state` and the update trains the layer norm and the heads on
them; the same update run by encoding every window again must move the weights the same.
"""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.config.ppo import PPOConfig
from market_nn_plus_ultra.rl.buffer import RolloutBuffer
from market_nn_plus_ultra.rl.policy import ActorCritic
from market_nn_plus_ultra.rl.ppo import PPO, gae
from tests.rl.toy_env import ToySignalEnv

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(
    architecture="hybrid_transformer", d_model=8, depth=1, n_heads=2, ff_mult=2, dropout=0.0,
    max_seq_len=8,
)  # fmt: skip
CFG = PPOConfig(steps_per_rollout=6, minibatches=3, update_epochs=2, learning_rate=1e-2,
                freeze_backbone_updates=1)  # fmt: skip


def _ppo(mode: str = "continuous", cfg: PPOConfig = CFG) -> PPO:
    env = ToySignalEnv(
        num_envs=4, n_symbols=2, window=4, n_features=2, action_mode=mode, episode_length=5
    )  # fmt: skip  (episodes end inside the rollout)
    torch.manual_seed(0)
    return PPO(env, ActorCritic.from_config(TINY, 2, mode), cfg, total_updates=2, seed=0)


def _batch(ppo: PPO) -> tuple[RolloutBuffer, dict]:
    ppo.policy.freeze_backbone(True)
    rollout, last_value, _ = ppo.collect()
    adv, ret = gae(rollout.rewards, rollout.values, rollout.next_values(last_value),
                   rollout.terminated, rollout.terminated | rollout.truncated, 0.99, 0.95)  # fmt: skip
    obs, actions, logprobs, values = rollout.flat()
    batch = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
             "advantages": adv.flatten(), "returns": ret.flatten()}  # fmt: skip
    return rollout, batch


def test_frozen_rollout_keeps_each_observations_backbone_state() -> None:
    ppo = _ppo()
    rollout, _ = _batch(ppo)
    assert rollout.states is not None and rollout.states.shape == (6, 4, 2, 8)
    with torch.no_grad():
        for t in range(rollout.steps):
            own = ppo.policy.backbone_state({k: v[t] for k, v in rollout.obs.items()})
            torch.testing.assert_close(rollout.states[t], own, atol=1e-6, rtol=0)
        # the learner's own pass (for sources that keep no states) computes the same
        computed = ppo.backbone_states(rollout.flat()[0])
    torch.testing.assert_close(computed, rollout.states.flatten(0, 1), atol=1e-6, rtol=0)
    ppo.policy.freeze_backbone(False)
    assert ppo.collect()[0].states is None  # a training backbone keeps none


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_cached_update_moves_the_weights_as_the_re_encoding_update(mode: str) -> None:
    ppo = _ppo(mode)
    rollout, batch = _batch(ppo)
    policy0 = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    optim0, gen0 = ppo.optimizer.state_dict(), ppo.generator.get_state()
    cached = ppo.update({**batch, "states": rollout.states.flatten(0, 1)})
    after = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    ppo.policy.load_state_dict(policy0)
    ppo.optimizer.load_state_dict(optim0)
    ppo.generator.set_state(gen0)
    encoded = ppo.update(batch)  # every minibatch runs the frozen backbone again
    assert cached["epochs"] == encoded["epochs"] == 2.0
    for name, value in encoded.items():
        assert cached[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    moved = 0
    for key, value in ppo.policy.state_dict().items():
        torch.testing.assert_close(after[key], value, atol=1e-6, rtol=1e-5, msg=key)
        moved += int(not torch.equal(value, policy0[key]))
        if key.startswith("backbone."):
            assert torch.equal(value, policy0[key]), key  # frozen
    assert moved >= 4  # norm, actor and critic trained
    assert not torch.equal(after["norm.weight"], policy0["norm.weight"])  # the norm trains


def test_step_uses_the_states_only_while_frozen() -> None:
    ppo = _ppo()
    first, second = ppo.step(), ppo.step()
    assert (first.backbone_frozen, second.backbone_frozen) == (True, False)
    rollout, batch = _batch(ppo)
    ppo.policy.freeze_backbone(False)
    with pytest.raises(ValueError, match="freeze_backbone_updates"):
        ppo.update({**batch, "states": rollout.states.flatten(0, 1)})


def test_buffer_moves_and_joins_the_states() -> None:
    obs = {"window": torch.zeros(2, 1, 3, 2), "portfolio": torch.zeros(2, 1, 3)}
    parts = []
    for i in range(2):
        buffer = RolloutBuffer(2, obs, torch.zeros(2, 1), torch.zeros(2, 1, 4))
        zero = torch.zeros(2)
        off = torch.zeros(2, dtype=torch.bool)
        for t in range(2):
            state = torch.full((2, 1, 4), float(10 * i + t))
            buffer.store(t, obs, torch.zeros(2, 1), zero, zero, zero, off, off, state)
        parts.append(buffer)
    joined = RolloutBuffer.cat(parts).to("cpu")
    assert joined.states.shape == (2, 4, 1, 4)
    assert joined.states[:, :, 0, 0].tolist() == [[0, 0, 10, 10], [1, 1, 11, 11]]
    parts[1].states = None  # a shard without states: the joined rollout has none
    assert RolloutBuffer.cat(parts).states is None
    with pytest.raises(ValueError, match="state="):
        parts[0].store(0, obs, torch.zeros(2, 1), zero, zero, zero, off, off)


# --------------------------------------------------------------------------------------
# Whole-env sequences (reinforcement.ppo.sequence_update)
# --------------------------------------------------------------------------------------

WINDOW = 6  # the hybrid block's convolutions and mixers need 5 rows of look-back
SEQ_MODELS = {
    "hybrid_transformer": TINY.model_copy(update={"receptive_field": WINDOW}),
    "state_space": ModelConfig(architecture="state_space", d_model=8, depth=1, n_heads=2, ff_mult=2,
                               dropout=0.0, ssm_state_dim=4, receptive_field=WINDOW),
}  # fmt: skip
SEQ_CFG = PPOConfig(steps_per_rollout=6, minibatches=2, update_epochs=2, learning_rate=1e-2,
                    sequence_update=True)  # fmt: skip


def _seq_ppo(arch: str, mode: str = "continuous", cfg: PPOConfig = SEQ_CFG) -> PPO:
    env = ToySignalEnv(
        num_envs=6, n_symbols=2, window=WINDOW, n_features=2, action_mode=mode, episode_length=9
    )  # fmt: skip  (some envs restart inside the rollout)
    torch.manual_seed(0)
    policy = ActorCritic.from_config(SEQ_MODELS[arch], 2, mode)
    return PPO(env, policy, cfg, total_updates=2, seed=0)


def _played(ppo: PPO) -> tuple[RolloutBuffer, torch.Tensor, torch.Tensor, torch.Tensor]:
    rollout, batch = _batch(ppo)
    ppo.policy.freeze_backbone(False)
    adv = batch["advantages"].view(rollout.steps, -1)
    ret = batch["returns"].view(rollout.steps, -1)
    windows = rollout.obs["window"]
    slides = windows[1:, ..., :-1, :] == windows[:-1, ..., 1:, :]
    contiguous = slides.transpose(0, 1).flatten(1).all(dim=1)
    return rollout, adv, ret, contiguous


@pytest.mark.parametrize("arch", sorted(SEQ_MODELS))
def test_sequence_states_equal_the_per_window_states(arch: str) -> None:
    ppo = _seq_ppo(arch)
    rollout, _, _, contiguous = _played(ppo)
    assert 0 < int(contiguous.sum()) < rollout.num_envs  # both kinds of env in the rollout
    windows = rollout.obs["window"][:, contiguous]  # (T, n, S, W, F)
    rows = torch.cat([windows[0], windows[1:, ..., -1, :].permute(1, 2, 0, 3)], dim=2)
    with torch.no_grad():
        seq = ppo.policy.sequence_states(rows, rollout.steps)  # (T, n, S, D)
        for t in range(rollout.steps):
            own = ppo.policy.backbone_state({"window": windows[t]})
            torch.testing.assert_close(seq[t], own, atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[:, :, 2 : 2 + WINDOW], windows[2])  # step 2's window


def _weights_after(ppo: PPO, run) -> tuple[dict, dict]:
    start = ({k: v.clone() for k, v in ppo.policy.state_dict().items()},
             ppo.optimizer.state_dict(), ppo.generator.get_state())  # fmt: skip
    diag = run()
    after = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    ppo.policy.load_state_dict(start[0])
    ppo.optimizer.load_state_dict(start[1])
    ppo.generator.set_state(start[2])
    return after, diag


@pytest.mark.parametrize(("arch", "mode"), [("hybrid_transformer", "continuous"),
                                            ("state_space", "discrete")])  # fmt: skip
def test_sequence_update_equals_the_same_minibatches_encoded_window_by_window(
    arch: str, mode: str
) -> None:
    ppo = _seq_ppo(arch, mode)
    rollout, adv, ret, contiguous = _played(ppo)
    start = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
    seq, seq_diag = _weights_after(ppo, lambda: ppo.sequence_update(rollout, adv, ret))
    none = torch.zeros_like(contiguous)  # every env window by window, same minibatches
    own, own_diag = _weights_after(ppo, lambda: ppo.sequence_update(rollout, adv, ret, none))
    assert seq_diag["epochs"] == own_diag["epochs"] == 2.0
    for name, value in own_diag.items():
        assert seq_diag[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    for key, value in own.items():
        torch.testing.assert_close(seq[key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert not torch.equal(seq["backbone." + next(iter(ppo.policy.backbone.state_dict()))],
                           start["backbone." + next(iter(ppo.policy.backbone.state_dict()))])  # fmt: skip


def test_one_minibatch_sequence_update_equals_the_per_window_update() -> None:
    cfg = SEQ_CFG.model_copy(update={"minibatches": 1, "update_epochs": 1})
    ppo = _seq_ppo("hybrid_transformer", cfg=cfg)
    rollout, adv, ret, _ = _played(ppo)
    seq, _ = _weights_after(ppo, lambda: ppo.sequence_update(rollout, adv, ret))
    obs, actions, logprobs, values = rollout.flat()
    batch = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
             "advantages": adv.flatten(), "returns": ret.flatten()}  # fmt: skip
    own, _ = _weights_after(ppo, lambda: ppo.update(batch))  # shuffled transitions
    for key, value in own.items():
        torch.testing.assert_close(seq[key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_step_runs_the_sequence_update_deterministically() -> None:
    a, b = _seq_ppo("state_space"), _seq_ppo("state_space")
    backbone0 = {k: v.clone() for k, v in a.policy.backbone.state_dict().items()}
    rows = [[s.as_row() for s in ppo.learn(2)] for ppo in (a, b)]
    timings = ("steps_per_second", "rollout_seconds", "update_seconds")
    for x, y in zip(*rows, strict=True):
        assert x["epochs"] == 2.0
        assert {k: v for k, v in x.items() if k not in timings} == {
            k: v for k, v in y.items() if k not in timings
        }
    for key, value in a.policy.state_dict().items():
        assert torch.equal(value, b.policy.state_dict()[key]), key
    assert any(not torch.equal(v, a.policy.backbone.state_dict()[k]) for k, v in backbone0.items())


def test_sequence_update_refuses_a_policy_without_bounded_look_back() -> None:
    env = ToySignalEnv(num_envs=4, n_symbols=1, window=WINDOW, n_features=2)
    with pytest.raises(ValueError, match=r"training\.supervision=all"):
        PPO(env, ActorCritic.from_config(TINY, 2), SEQ_CFG, total_updates=1)
    with pytest.raises(ValueError, match="exceeds the 4 envs"):
        PPO(env, ActorCritic.from_config(SEQ_MODELS["state_space"], 2),
            SEQ_CFG.model_copy(update={"minibatches": 8}), total_updates=1)  # fmt: skip
