"""The actor-critic policy: shapes, the action distribution, symmetry, freezing, warm starts."""

from __future__ import annotations

import os

import pytest
import torch
from torch.distributions import Categorical, Normal

from market_nn_plus_ultra.config import ModelConfig, TrainingConfig
from market_nn_plus_ultra.models import build_model
from market_nn_plus_ultra.rl.policy import (
    ActorCritic,
    WarmStartError,
    load_pretrained_backbone,
    load_supervised,
    read_supervised,
)
from market_nn_plus_ultra.training import TradingModule
from market_nn_plus_ultra.training.warm_start import save_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

N_FEATURES = 3


def _cfg(**overrides: object) -> ModelConfig:
    base = dict(architecture="state_space", d_model=16, depth=1, n_heads=2, ff_mult=2,
                dropout=0.0, max_seq_len=8, ssm_state_dim=4, horizon=3)  # fmt: skip
    base.update(overrides)
    return ModelConfig(**base)


def _obs(n: int = 5, s: int = 3, w: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    portfolio = torch.randn(n, s, 3, generator=g)
    portfolio[..., 1] = 1.0 + 0.1 * portfolio[..., 1]  # equity near 1
    return {"window": torch.randn(n, s, w, N_FEATURES, generator=g), "portfolio": portfolio}


def _policy(mode: str = "continuous", cfg: ModelConfig | None = None) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic.from_config(cfg or _cfg(), N_FEATURES, mode).eval()


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_shapes_and_distribution_match_torch_distributions(mode: str) -> None:
    policy, obs = _policy(mode), _obs()
    with torch.no_grad():
        out = policy(obs)
        raw, action = policy.sample(out, torch.Generator().manual_seed(1))
        log_prob, entropy = policy.log_prob_entropy(out, raw)
    assert out.value.shape == (5,) and raw.shape == action.shape == (5, 3)
    assert log_prob.shape == entropy.shape == (5,)
    if mode == "continuous":
        assert out.mean.shape == (5, 3)
        torch.testing.assert_close(action, torch.tanh(raw))
        ref = Normal(out.mean, out.log_std.exp().expand_as(out.mean))
    else:
        assert out.logits.shape == (5, 3, 3)
        assert set(action.unique().tolist()) <= {0, 1, 2}
        ref = Categorical(logits=out.logits)
    torch.testing.assert_close(log_prob, ref.log_prob(raw).sum(-1))
    torch.testing.assert_close(entropy, ref.entropy().sum(-1))


def test_discrete_sampling_follows_the_probabilities() -> None:
    policy = _policy("discrete")
    obs = {k: v[:1].expand(4000, -1, -1, *([-1] * (v.ndim - 3))) for k, v in _obs().items()}
    with torch.no_grad():
        out = policy(obs)
        out.logits = out.logits * 0 + torch.tensor([0.0, 1.0, 2.0])  # p = softmax(0, 1, 2)
        raw, _ = policy.sample(out, torch.Generator().manual_seed(2))
    freq = torch.bincount(raw.flatten(), minlength=3).float() / raw.numel()
    torch.testing.assert_close(freq, torch.tensor([0.0, 1.0, 2.0]).softmax(0), atol=0.02, rtol=0)


def test_value_is_symbol_order_free_and_actions_follow_their_symbol() -> None:
    policy, obs = _policy(), _obs()
    perm = torch.tensor([2, 0, 1])
    swapped = {k: v[:, perm] for k, v in obs.items()}
    with torch.no_grad():
        a, b = policy(obs), policy(swapped)
    torch.testing.assert_close(a.value, b.value)
    torch.testing.assert_close(a.mean[:, perm], b.mean)


def test_portfolio_features_reach_both_heads_after_training_starts() -> None:
    policy, obs = _policy(), _obs()
    with torch.no_grad():
        policy.actor.port.weight.normal_()
        policy.critic.port.weight.normal_()
        base = policy(obs)
        obs["portfolio"][..., 0] += 0.5  # a different current position
        moved = policy(obs)
    assert not torch.allclose(base.mean, moved.mean) and not torch.allclose(base.value, moved.value)


def test_market_state_reaches_the_backbone() -> None:
    policy = _policy(cfg=_cfg(market_state_embedding=True, num_regimes=4))
    assert policy.market_state
    obs = _obs()
    obs["regime"] = torch.zeros(5, 3, dtype=torch.long)
    obs["volatility"] = torch.full((5, 3), 0.01)
    with torch.no_grad():
        base = policy(obs).value
        obs["regime"] = torch.full((5, 3), 2)
        assert not torch.allclose(base, policy(obs).value)


def test_freezing_stops_backbone_gradients_but_not_the_heads() -> None:
    policy, obs = _policy(), _obs()
    policy.freeze_backbone(True)
    out = policy(obs)
    (out.value.sum() + out.mean.sum()).backward()
    assert all(p.grad is None and not p.requires_grad for p in policy.backbone.parameters())
    assert policy.actor.fc1.weight.grad is not None and policy.critic.fc2.weight.grad is not None
    policy.freeze_backbone(False)
    policy.zero_grad()
    out = policy(obs)
    (out.value.sum() + out.mean.sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.backbone.parameters())


# --------------------------------------------------------------------------------------
# Warm starts
# --------------------------------------------------------------------------------------


def _supervised_run(tmp_path, head: str, **overrides: object) -> tuple:
    """A `plus-ultra train` checkpoint as TradingModule and Lightning write it."""
    torch.manual_seed(1)
    cfg = _cfg(head=head, **overrides)
    module = TradingModule(cfg, TrainingConfig(), N_FEATURES)
    with torch.no_grad():  # non-trivial weights everywhere, LayerNorm affine included
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = tmp_path / "run"
    run.mkdir()
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save(ckpt, run / "best.ckpt")
    return run, module.model.eval(), cfg


def test_supervised_warm_start_continuous_starts_at_the_supervised_position(tmp_path) -> None:
    run, model, _ = _supervised_run(tmp_path, "regression")
    read_cfg, n_features, _, file = read_supervised(run)
    assert read_cfg.head == "regression" and n_features == N_FEATURES and file.name == "best.ckpt"
    policy = ActorCritic.from_config(read_cfg, n_features).eval()
    summary = load_supervised(policy, run)
    assert summary.backbone_tensors == len(policy.backbone.state_dict())
    assert {"norm.weight", "actor.fc1.weight", "actor.fc2.weight", "critic.fc1.weight"} <= set(
        summary.copied
    )
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(policy.backbone.state_dict()[key], value), key
    obs = _obs()
    with torch.no_grad():
        supervised = model(obs["window"].flatten(0, 1)).position.view(5, 3)
        torch.testing.assert_close(policy.mode(policy(obs)), supervised, atol=1e-6, rtol=0)


def test_supervised_warm_start_discrete_copies_the_class_logits(tmp_path) -> None:
    run, model, cfg = _supervised_run(tmp_path, "action")
    policy = ActorCritic.from_config(cfg, N_FEATURES, "discrete").eval()
    summary = load_supervised(policy, run / "best.ckpt")
    assert {"actor.skip.weight", "actor.fc2.bias"} <= set(summary.copied)
    obs = _obs()
    with torch.no_grad():
        probs = model(obs["window"].flatten(0, 1)).probs.view(5, 3, 3)
        logits = policy(obs).logits
    torch.testing.assert_close(logits.softmax(-1), probs, atol=1e-6, rtol=0)


def test_quantile_head_warm_start_reads_the_median_of_step_one(tmp_path) -> None:
    run, model, cfg = _supervised_run(tmp_path, "quantile", quantiles=[0.1, 0.5, 0.9])
    policy = ActorCritic.from_config(cfg, N_FEATURES).eval()
    load_supervised(policy, run)
    obs = _obs()
    with torch.no_grad():
        supervised = model(obs["window"].flatten(0, 1)).position.view(5, 3)
        torch.testing.assert_close(policy.mode(policy(obs)), supervised, atol=1e-6, rtol=0)


def test_head_layers_that_do_not_fit_are_skipped_and_listed(tmp_path) -> None:
    run, _, cfg = _supervised_run(tmp_path, "regression")
    policy = ActorCritic.from_config(cfg, N_FEATURES, "discrete")
    summary = load_supervised(policy, run)
    assert "actor.fc1.weight" not in summary.copied and "critic.fc1.weight" in summary.copied
    assert any("actor.skip.weight" in s for s in summary.skipped)
    assert "skipped" in summary.summary()


def test_backbone_mismatch_names_the_shapes_and_the_fix(tmp_path) -> None:
    run, _, _ = _supervised_run(tmp_path, "regression")
    policy = ActorCritic.from_config(_cfg(d_model=32, head="regression"), N_FEATURES)
    with pytest.raises(WarmStartError, match=r"shape mismatches .*\n.*Fix: build the policy"):
        load_supervised(policy, run)


@pytest.mark.parametrize("layout", ["backbone_file", "lightning"])
def test_pretrained_backbone_is_copied_exactly(tmp_path, layout: str) -> None:
    cfg = _cfg()
    torch.manual_seed(4)
    source = build_model(cfg, N_FEATURES).backbone
    if layout == "backbone_file":
        path = save_backbone(tmp_path / "backbone.pt", source, cfg, ["a", "b", "c"])
    else:
        path = tmp_path / "last.ckpt"
        torch.save(
            {"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path
        )
    policy = _policy()
    summary = load_pretrained_backbone(policy, path)
    assert summary.source == "backbone" and summary.backbone_tensors == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(policy.backbone.state_dict()[key], value)


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_unsafe_missing_and_foreign_files_are_refused(tmp_path) -> None:
    policy = _policy()
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "x": _Payload()}, unsafe)
    with pytest.raises(WarmStartError, match="nothing from the file was run"):
        load_supervised(policy, unsafe)
    with pytest.raises(WarmStartError, match="does not exist"):
        load_pretrained_backbone(policy, tmp_path / "nope.pt")
    with pytest.raises(WarmStartError, match=r"no best\.ckpt or last\.ckpt"):
        load_supervised(policy, tmp_path)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(WarmStartError, match="not a `plus-ultra train` checkpoint"):
        load_supervised(policy, foreign)
    with pytest.raises(WarmStartError, match="no backbone weights"):
        load_pretrained_backbone(policy, foreign)


def test_unknown_action_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="action_mode='hold'"):
        ActorCritic.from_config(_cfg(), N_FEATURES, "hold")  # type: ignore[arg-type]
