"""PPO: GAE by hand and against TorchRL, the clipped loss against ``ClipPPOLoss``, learning."""

from __future__ import annotations

import io
import math

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.config.ppo import PPOConfig
from market_nn_plus_ultra.rl.buffer import RolloutBuffer
from market_nn_plus_ultra.rl.policy import ActorCritic
from market_nn_plus_ultra.rl.ppo import PPO, explained_variance, gae, ppo_loss
from tests.rl.toy_env import ToySignalEnv

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(
    architecture="state_space", d_model=8, depth=1, n_heads=2, ff_mult=2, dropout=0.0, max_seq_len=8,
    ssm_state_dim=4,
)  # fmt: skip


def _policy(n_features: int = 2, mode: str = "continuous", seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic.from_config(TINY, n_features, mode)


# --------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------


def test_gae_hand_computed_with_termination_and_truncation() -> None:
    # env 0 terminates at t=1 (its next value must be ignored); env 1 is truncated at t=0
    # and bootstraps from V(final_obs) = 5.0
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, -1.0]])
    values = torch.tensor([[0.5, 1.0], [0.4, 2.0], [0.3, 3.0]])
    next_values = torch.tensor([[0.4, 5.0], [9.0, 3.0], [0.2, 4.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    done = torch.tensor([[False, True], [True, False], [False, False]])
    adv, ret = gae(rewards, values, next_values, terminated, done, gamma, lam)
    # env 0: δ = (1 + .9·.4 − .5, 2 − .4, 3 + .9·.2 − .3) = (.86, 1.6, 2.88)
    #        A2 = 2.88, A1 = 1.6 (done: no carry), A0 = .86 + .72·1.6 = 2.012
    # env 1: δ = (1 + .9·5 − 1, 0 + .9·3 − 2, −1 + .9·4 − 3) = (4.5, .7, −.4)
    #        A2 = −.4, A1 = .7 + .72·(−.4) = .412, A0 = 4.5 (done: no carry)
    expected = torch.tensor([[2.012, 4.5], [1.6, 0.412], [2.88, -0.4]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, expected + values, atol=1e-6, rtol=0)


def test_rollout_next_values_bootstrap_truncated_steps_only() -> None:
    obs = {"window": torch.zeros(2, 1, 3, 2), "portfolio": torch.zeros(2, 1, 3)}
    buf = RolloutBuffer(3, obs, torch.zeros(2, 1))
    buf.values = torch.tensor([[0.5, 1.0], [0.4, 2.0], [0.3, 3.0]])
    buf.truncated = torch.tensor([[False, True], [False, False], [False, False]])
    buf.final_values[0, 1] = 5.0
    expected = torch.tensor([[0.4, 5.0], [0.3, 3.0], [0.2, 4.0]])
    torch.testing.assert_close(buf.next_values(torch.tensor([0.2, 4.0])), expected)


def _random_episode_batch(t: int, n: int, dtype: torch.dtype = torch.float64) -> tuple:
    g = torch.Generator().manual_seed(1)
    r, v, nv = (torch.randn(t, n, generator=g, dtype=dtype) for _ in range(3))
    terminated = torch.rand(t, n, generator=g) < 0.05
    done = terminated | (torch.rand(t, n, generator=g) < 0.05)
    return r, v, nv, terminated, done


def test_gae_matches_torchrl() -> None:
    functional = pytest.importorskip(
        "torchrl.objectives.value.functional", reason="torchrl is not installed"
    )
    r, v, nv, terminated, done = _random_episode_batch(64, 16)
    adv, ret = gae(r, v, nv, terminated, done, 0.99, 0.95)

    def tr(x: torch.Tensor) -> torch.Tensor:  # ours (T, N) -> TorchRL's (N, T, 1)
        return x.T[..., None].contiguous()

    for fn in (
        functional.generalized_advantage_estimate,
        functional.vec_generalized_advantage_estimate,
    ):
        ref_adv, ref_ret = fn(0.99, 0.95, tr(v), tr(nv), tr(r), tr(done), tr(terminated))
        torch.testing.assert_close(adv, ref_adv[..., 0].T, atol=1e-5, rtol=0)
        torch.testing.assert_close(ret, ref_ret[..., 0].T, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# The clipped loss
# --------------------------------------------------------------------------------------


def test_ppo_loss_hand_computed() -> None:
    # ratio = e^{0.5} ≈ 1.6487 (clipped to 1.2) with A = 1; e^{-0.5} ≈ 0.6065 (clipped to 0.8)
    # with A = -1: min(ratio·A, clip·A) = (1.2, -0.8) → policy loss = -(1.2 - 0.8)/2 = -0.2
    new_lp, old_lp = torch.tensor([0.5, -0.5]), torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    new_v, old_v, ret = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.5])
    ent = torch.tensor([1.0, 3.0])
    out = ppo_loss(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip_coef=0.2, value_clip=0.2,
                   ent_coef=0.1, vf_coef=0.5)  # fmt: skip
    assert out.policy.item() == pytest.approx(-0.2, abs=1e-6)
    # value: unclipped (1-2)² = 1, clipped (0.2-2)² = 3.24 → 3.24; (0-0.5)² = .25 both
    assert out.value.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2, abs=1e-6)
    assert out.entropy.item() == pytest.approx(2.0)
    assert out.clip_fraction.item() == 1.0
    k3 = ((math.exp(0.5) - 1 - 0.5) + (math.exp(-0.5) - 1 + 0.5)) / 2
    assert out.approx_kl.item() == pytest.approx(k3, abs=1e-6)
    total = -0.2 - 0.1 * 2.0 + 0.5 * out.value.item()
    assert out.total.item() == pytest.approx(total, abs=1e-6)


class _ActorParams(torch.nn.Module):
    """Our policy's Gaussian as TorchRL reads it: ``(loc, scale)`` from the observation."""

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, window: torch.Tensor, portfolio: torch.Tensor) -> tuple:
        out = self.policy({"window": window, "portfolio": portfolio})
        return out.mean, out.log_std.exp().expand_as(out.mean)


class _Critic(torch.nn.Module):
    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, window: torch.Tensor, portfolio: torch.Tensor) -> torch.Tensor:
        return self.policy({"window": window, "portfolio": portfolio}).value[:, None]


def test_ppo_loss_matches_torchrl_clip_ppo_loss() -> None:
    pytest.importorskip("torchrl", reason="torchrl is not installed")
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import IndependentNormal, ProbabilisticActor, ValueOperator
    from torchrl.objectives import ClipPPOLoss

    policy = _policy()
    g = torch.Generator().manual_seed(3)
    b, s = 64, 2
    obs = {
        "window": torch.randn(b, s, 4, 2, generator=g),
        "portfolio": torch.randn(b, s, 3, generator=g),
    }
    with torch.no_grad():
        out = policy(obs)
        raw = out.mean + 0.7 * torch.randn(b, s, generator=g)
        # an "old" policy a little different from the current one: ratios both sides of the clip
        old_lp = policy.log_prob_entropy(out, raw)[0] + 0.3 * torch.randn(b, generator=g)
        old_v = out.value + 0.5 * torch.randn(b, generator=g)
    adv, ret = torch.randn(b, generator=g), torch.randn(b, generator=g)
    clip, ent_coef, vf_coef = 0.2, 0.01, 0.5

    new_lp, entropy = policy.log_prob_entropy(out := policy(obs), raw)
    ours = ppo_loss(new_lp, old_lp, adv, out.value, old_v, ret, entropy, clip_coef=clip,
                    value_clip=clip, ent_coef=ent_coef, vf_coef=vf_coef)  # fmt: skip

    actor = ProbabilisticActor(
        TensorDictModule(_ActorParams(policy), ["window", "portfolio"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=IndependentNormal,
    )
    critic = ValueOperator(_Critic(policy), in_keys=["window", "portfolio"])
    # TorchRL's l2 critic loss is mean(max(...)) without our ½: critic_coeff = ½ · vf_coef
    loss = ClipPPOLoss(actor, critic, clip_epsilon=clip, entropy_coeff=ent_coef,
                       critic_coeff=0.5 * vf_coef, loss_critic_type="l2", clip_value=clip,
                       normalize_advantage=False, functional=False)  # fmt: skip
    loss.set_keys(sample_log_prob="old_log_prob")
    td = TensorDict(
        {**obs, "action": raw, "old_log_prob": old_lp, "advantage": adv[:, None],
         "value_target": ret[:, None], "state_value": old_v[:, None]},
        batch_size=[b],
    )  # fmt: skip
    ref = loss(td)
    torch.testing.assert_close(ref["loss_objective"], ours.policy, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref["loss_critic"], vf_coef * ours.value, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref["loss_entropy"], -ent_coef * ours.entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref["clip_fraction"], ours.clip_fraction, atol=1e-6, rtol=0)
    assert 0.05 < ours.clip_fraction.item() < 0.95  # both sides of the clip were exercised
    total_ref = ref["loss_objective"] + ref["loss_critic"] + ref["loss_entropy"]
    torch.testing.assert_close(total_ref, ours.total, atol=1e-5, rtol=0)


def test_explained_variance() -> None:
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), target) == pytest.approx(0.0)
    assert math.isnan(explained_variance(target, torch.ones(4)))


# --------------------------------------------------------------------------------------
# The learner
# --------------------------------------------------------------------------------------


def _env(mode: str = "continuous", **kw: object) -> ToySignalEnv:
    args = dict(num_envs=16, n_symbols=1, window=4, n_features=2, action_mode=mode)
    args.update(kw)
    return ToySignalEnv(**args)


def _evaluate(policy: ActorCritic, mode: str, steps: int = 32, random: bool = False) -> float:
    env = _env(mode, num_envs=64)
    obs, _ = env.reset(seed=123)
    g = torch.Generator().manual_seed(5)
    total = 0.0
    for _ in range(steps):
        if random:
            action = (
                torch.rand(64, 1, generator=g) * 2 - 1
                if mode == "continuous"
                else torch.randint(0, 3, (64, 1), generator=g)
            )
        else:
            with torch.no_grad():
                action = policy.mode(policy(obs))
        obs, reward, *_ = env.step(action)
        total += reward.mean().item()
    return total / steps


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_ppo_beats_random_on_planted_signal(mode: str) -> None:
    # the right position is the sign in the newest row: reward 1 per step at best, 0 at random
    env = _env(mode)
    cfg = PPOConfig(steps_per_rollout=16, learning_rate=1e-2, minibatches=2, update_epochs=4,
                    ent_coef=0.0)  # fmt: skip
    ppo = PPO(env, _policy(mode=mode), cfg, total_updates=12, seed=0)
    history = ppo.learn()
    assert [h.update for h in history] == list(range(1, 13))
    learned, random = _evaluate(ppo.policy, mode), _evaluate(ppo.policy, mode, random=True)
    assert abs(random) < 0.15
    assert learned > 0.5, (learned, [round(h.mean_reward, 2) for h in history])
    assert history[-1].mean_reward > history[0].mean_reward + 0.3


def test_update_stats_and_learning_rate_annealing() -> None:
    cfg = PPOConfig(steps_per_rollout=8, learning_rate=1e-3, minibatches=2, update_epochs=1)
    ppo = PPO(_env(episode_length=5), _policy(), cfg, total_updates=4)
    stats = ppo.learn(2)
    assert [s.learning_rate for s in stats] == pytest.approx([1e-3, 1e-3 * 0.75])
    assert ppo.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.75)
    last = stats[-1]
    assert last.env_steps == 2 * 8 * 16 and last.epochs == 1.0
    assert math.isfinite(last.episode_return)  # episodes of 5 steps end inside 8-step rollouts
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                 "explained_variance", "steps_per_second"):  # fmt: skip
        assert math.isfinite(getattr(last, name)), name
    assert set(last.as_row()) >= {"mean_reward", "approx_kl", "clip_fraction", "steps_per_second"}


def test_kl_early_stop_cuts_the_epochs() -> None:
    # the first minibatch has KL exactly 0 (ratio 1) and steps; any later one exceeds 1e-9
    cfg = PPOConfig(steps_per_rollout=8, minibatches=4, update_epochs=4, target_kl=1e-9,
                    learning_rate=1e-2)  # fmt: skip
    stats = PPO(_env(), _policy(), cfg, total_updates=1).step()
    assert stats.epochs == pytest.approx(0.25)


class _Recorder:
    """Wraps an env and keeps every step's truncation mask and final observation."""

    def __init__(self, env: ToySignalEnv) -> None:
        self.env, self.steps = env, []

    def __getattr__(self, name: str) -> object:
        return getattr(self.env, name)

    def step(self, action: torch.Tensor) -> tuple:
        out = self.env.step(action)
        self.steps.append((out[3].clone(), {k: v.clone() for k, v in out[4]["final_obs"].items()}))
        return out


def test_truncated_steps_bootstrap_from_the_final_observation() -> None:
    env = _Recorder(_env(episode_length=3))
    ppo = PPO(env, _policy(), PPOConfig(steps_per_rollout=6), total_updates=1)
    rollout, _, _ = ppo.collect()
    assert rollout.truncated.any() and not rollout.terminated.any()
    with torch.no_grad():
        for t, (truncated, final) in enumerate(env.steps):
            expected = torch.where(truncated, ppo.policy.value(final), 0.0)
            torch.testing.assert_close(rollout.final_values[t], expected)
    # the reset observation (the stored next obs) differs from the final one
    assert not torch.equal(env.steps[2][1]["window"], rollout.obs["window"][3])


def test_backbone_frozen_for_the_first_updates() -> None:
    cfg = PPOConfig(steps_per_rollout=8, minibatches=2, update_epochs=1, freeze_backbone_updates=2,
                    learning_rate=1e-2)  # fmt: skip
    ppo = PPO(_env(), _policy(), cfg, total_updates=3)
    backbone0 = [p.detach().clone() for p in ppo.policy.backbone.parameters()]
    actor0 = ppo.policy.actor.fc1.weight.detach().clone()
    frozen = [ppo.step().backbone_frozen for _ in range(2)]
    assert frozen == [True, True]
    assert all(
        torch.equal(a, b) for a, b in zip(backbone0, ppo.policy.backbone.parameters(), strict=True)
    )
    assert not torch.equal(actor0, ppo.policy.actor.fc1.weight)
    assert ppo.step().backbone_frozen is False
    assert not all(
        torch.equal(a, b) for a, b in zip(backbone0, ppo.policy.backbone.parameters(), strict=True)
    )


def test_state_dict_round_trips_through_weights_only_load() -> None:
    cfg = PPOConfig(
        steps_per_rollout=4,
        minibatches=2,
        update_epochs=1,
        off_policy={"enabled": True, "min_buffer": 1, "batch_size": 8},
    )
    ppo = PPO(_env(), _policy(), cfg, total_updates=3)
    ppo.step()
    buf = io.BytesIO()
    torch.save(ppo.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = PPO(_env(), _policy(seed=9), cfg, total_updates=3)
    other.load_state_dict(state)
    assert other.update_count == 1 and other.env_steps == 4 * 16
    for a, b in zip(
        ppo.policy.state_dict().values(), other.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(ppo.generator.get_state(), other.generator.get_state())


def test_off_policy_awr_runs_inside_the_update() -> None:
    cfg = PPOConfig(steps_per_rollout=8, minibatches=2, update_epochs=1,
                    off_policy={"enabled": True, "min_buffer": 64, "batch_size": 32, "buffer_size": 256})  # fmt: skip
    ppo = PPO(_env(), _policy(), cfg, total_updates=2)
    first = ppo.step()
    assert len(ppo.replay) == 128 and math.isfinite(first.awr_loss)


def test_bad_setups_raise_with_the_option_named() -> None:
    with pytest.raises(ValueError, match="minibatches"):
        PPO(_env(num_envs=2), _policy(), PPOConfig(steps_per_rollout=1, minibatches=4), 1)
    with pytest.raises(ValueError, match=r"reinforcement\.env\.action"):
        PPO(_env("discrete"), _policy(), PPOConfig(), 1)
    with pytest.raises(ValueError, match="buffer_size"):
        PPOConfig(off_policy={"enabled": True, "batch_size": 10, "buffer_size": 5})


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_bf16_autocast_update_stays_finite() -> None:
    cfg = PPOConfig(steps_per_rollout=8, minibatches=2, update_epochs=2, autocast="bf16")
    stats = PPO(_env(), _policy(), cfg, total_updates=2).learn()
    for s in stats:
        assert all(math.isfinite(v) for v in (s.policy_loss, s.value_loss, s.entropy, s.approx_kl))


@pytest.mark.gpu
def test_cuda_bf16_and_compile() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    env = _env(device="cuda")
    cfg = PPOConfig(steps_per_rollout=16, learning_rate=1e-2, minibatches=2, compile=True)
    ppo = PPO(env, _policy(), cfg, total_updates=12)
    history = ppo.learn()
    assert all(math.isfinite(h.policy_loss) for h in history)
    assert history[-1].mean_reward > history[0].mean_reward + 0.3
