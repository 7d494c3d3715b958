"""The five backbones and the registry: contract, causality, FLOPs, overfitting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from market_nn_plus_ultra.config import ConfigError, ModelConfig, config_from_dict
from market_nn_plus_ultra.models import (
    HEADS,
    TradingModel,
    build_backbone,
    build_head,
    build_model,
    count_parameters,
    estimate_flops,
)

ARCHITECTURES = [
    "hybrid_transformer",
    "omni_mixture",
    "moe_transformer",
    "state_space",
    "temporal_fusion",
    "multi_scale",
]
N_FEATURES = 3


def _cfg(architecture: str, **overrides: object) -> ModelConfig:
    base = dict(
        architecture=architecture,
        d_model=32,
        depth=2,
        n_heads=4,
        ff_mult=2,
        dropout=0.0,
        max_seq_len=16,
        ssm_state_dim=4,
        num_experts=4,
        top_k=2,
        coarse_factor=4,
        cross_every=1,
        dilations=[1, 2],
        tft_hidden=32,
        scales=[1, 4, 8],
    )
    base.update(overrides)
    return ModelConfig(**base)


class _LastStep(nn.Module):
    """Minimal head for these tests: a linear read-out of the last hidden step."""

    def __init__(self, d_model: int, out: int = 1) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h[:, -1])  # (B, out)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("patch_size", [1, 3])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_backbone_contract(architecture: str, patch_size: int) -> None:
    if architecture == "temporal_fusion" and patch_size > 1:
        pytest.skip("temporal_fusion reads every step (patch_size=1 only)")
    cfg = _cfg(architecture, patch_size=patch_size, market_state_embedding=True, num_regimes=3)
    backbone = build_backbone(cfg, N_FEATURES)
    assert backbone.d_model == 32
    x = torch.randn(2, 22, N_FEATURES, requires_grad=True)  # longer than max_seq_len
    state = {"regime": torch.randint(0, 3, (2, 22)), "volatility": torch.rand(2, 22) * 0.05}
    h = backbone(x, state)
    assert h.shape == (2, 22, 32)
    h.pow(2).mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in backbone.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert backbone(x).shape == (2, 22, 32)  # market state is optional


@pytest.mark.parametrize("patch_size", [1, 3])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_backbone_is_causal(architecture: str, patch_size: int) -> None:
    if architecture == "temporal_fusion" and patch_size > 1:
        pytest.skip("temporal_fusion reads every step (patch_size=1 only)")
    cfg = _cfg(architecture, patch_size=patch_size, market_state_embedding=True, num_regimes=3)
    backbone = build_backbone(cfg, N_FEATURES).eval()
    x = torch.randn(2, 21, N_FEATURES)
    state = {"regime": torch.randint(0, 3, (2, 21)), "volatility": torch.rand(2, 21)}
    for t in (0, 6, 13):
        x2, state2 = x.clone(), {k: v.clone() for k, v in state.items()}
        x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :]) * 2.0
        state2["volatility"][:, t + 1 :] *= 3.0
        with torch.no_grad():
            h, h2 = backbone(x, state), backbone(x2, state2)
        torch.testing.assert_close(h[:, : t + 1], h2[:, : t + 1], atol=1e-5, rtol=1e-5)
        assert (h[:, -1] - h2[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_activation_checkpointing_matches(architecture: str) -> None:
    plain = build_backbone(_cfg(architecture), N_FEATURES)
    ckpt = build_backbone(_cfg(architecture, activation_checkpointing=True), N_FEATURES)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 12, N_FEATURES)
    grads = []
    for model in (plain, ckpt):
        model.train()
        out = model(x)
        loss = out.pow(2).mean() + getattr(model, "aux_loss", 0.0)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_moe_backbone_aux_loss_sums_layers() -> None:
    cfg = _cfg("moe_transformer", load_balance_weight=0.1)
    model = TradingModel(build_backbone(cfg, N_FEATURES), _LastStep(32))
    model(torch.randn(3, 10, N_FEATURES))
    layers = model.backbone.moe_layers
    assert len(layers) == cfg.depth
    torch.testing.assert_close(model.aux_loss, sum(m.aux_loss for m in layers))
    # Switch loss is >= 1 (equality when balanced), times the weight, per layer
    assert model.aux_loss >= 0.1 * cfg.depth - 1e-6
    dense = TradingModel(build_backbone(_cfg("hybrid_transformer"), N_FEATURES), _LastStep(32))
    assert dense.aux_loss.item() == 0.0


def test_unknown_architecture_and_head_names() -> None:
    with pytest.raises(ValueError, match="did you mean 'omni_mixture'") as err:
        build_backbone(_cfg("omni_mixtures"), N_FEATURES)
    assert "model.architecture" in str(err.value) and "hybrid_transformer" in str(err.value)
    with pytest.raises(ValueError, match=r"model.head: unknown name 'regresion'"):
        build_head(_cfg("hybrid_transformer", head="regresion"), 32)


def test_build_model_composes_backbone_and_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HEADS, "last_step_test", lambda cfg, d: _LastStep(d, cfg.horizon))
    model = build_model(_cfg("hybrid_transformer", head="last_step_test", horizon=4), 5)
    assert isinstance(model, TradingModel)
    out = model(torch.randn(2, 9, 5))
    assert out.shape == (2, 4)
    assert count_parameters(model) == count_parameters(model.backbone) + 32 * 4 + 4


def test_config_cross_field_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"model.d_model \(32\) must be divisible by model.n_heads"
    ):
        config_from_dict({"model": {"d_model": 32, "n_heads": 5}})
    with pytest.raises(ConfigError, match=r"model.top_k \(3\) cannot exceed model.num_experts"):
        config_from_dict({"model": {"num_experts": 2, "top_k": 3}})
    with pytest.raises(ConfigError, match=r"did you mean `model.d_model`"):
        config_from_dict({"model": {"d_modl": 64}})


# Hand count for d_model=8, depth=1, n_heads=2, ff_mult=1, ssm_state_dim=2, conv_kernel=2,
# 3 features, patch 1:
#   embedding Linear(3, 8)                          3·8 + 8           =  32
#   4 RMSNorms in the block + final RMSNorm         5·8               =  40
#   attention qkv (8→24) + out (8→8), no bias       192 + 64          = 256
#   conv: depthwise (8·2 + 8) + pointwise (64 + 8)  24 + 72           =  96
#   gated SSM: in 8→16, out 8→8, SSM (8 + 16 + 16 + 32 + 8)  128 + 64 + 80 = 272
#   SwiGLU hidden 8 (ceil(2·1·8/3) to a multiple of 8): 8→16, 8→8       = 192
#   total                                                              = 888
_TINY = dict(d_model=8, depth=1, n_heads=2, ff_mult=1, ssm_state_dim=2, conv_kernel=2)


def test_estimate_flops_hand_checked() -> None:
    cfg = ModelConfig(**_TINY)
    assert count_parameters(build_backbone(cfg, 3)) == 888
    # matmul weights only (no biases, norms or SSM kernel parameters): embedding 24,
    # qkv + out 256, depthwise 8·2 + pointwise 64, SSM in + out 192, SwiGLU 192 = 744.
    # 3 · (2·744·T + 4·d·T²) with T = 10 tokens
    assert estimate_flops(cfg, 3, 10) == 3 * (2 * 744 * 10 + 4 * 8 * 10 * 10)
    # patches of 2 steps: 9 steps → 5 tokens, embedding Linear(6, 8) has 24 more weights
    patched = ModelConfig(**_TINY, patch_size=2)
    assert estimate_flops(patched, 3, 9) == 3 * (2 * 768 * 5 + 4 * 8 * 5 * 5)
    # MoE, 4 experts of 192 parameters + router 8·4: a token uses 1 expert (top_k = 1)
    moe = ModelConfig(**_TINY, architecture="moe_transformer", num_experts=4, top_k=1)
    assert count_parameters(build_backbone(moe, 3)) == 888 - 192 + 32 + 4 * 192
    assert estimate_flops(moe, 3, 10) == 3 * (2 * (744 + 32) * 10 + 4 * 8 * 10 * 10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_backbone_overfits_planted_signal(architecture: str) -> None:
    """Next return = a planted linear signal in the last two steps; the loss must fall 10×."""
    x = torch.randn(32, 16, N_FEATURES)
    y = 0.8 * x[:, -1, 0] - 0.5 * x[:, -2, 1] + 0.3 * x[:, -1, 0] * x[:, -1, 2]
    model = TradingModel(build_backbone(_cfg(architecture), N_FEATURES), _LastStep(32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = (model(x).squeeze(-1) - y).pow(2).mean()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
        opt.zero_grad()
        (loss + model.aux_loss).backward()
        opt.step()
    assert losses[-1] < losses[0] / 10, f"{architecture}: {losses[0]:.3f} → {losses[-1]:.3f}"


def test_temporal_fusion_exposes_interpretable_weights() -> None:
    model = build_backbone(_cfg("temporal_fusion"), N_FEATURES).eval()
    x = torch.randn(2, 12, N_FEATURES)
    with torch.no_grad():
        out, weights, attn = model.interpret(x)
        torch.testing.assert_close(out, model(x))  # the recording path computes the same
    assert weights is model.last_variable_weights and attn is model.last_attention
    assert weights.shape == (2, 12, N_FEATURES)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 12))
    attn = model.last_attention
    assert attn.shape == (2, 12, 12)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 12))
    assert attn.triu(1).abs().max() == 0  # no step attends to a later one


def test_state_space_cost_is_subquadratic_in_length() -> None:
    """FLOPs per step stay flat as T grows (no T × T attention term)."""
    cfg = _cfg("state_space")
    per_step = [estimate_flops(cfg, N_FEATURES, t) / t for t in (64, 4096)]
    assert per_step[1] == pytest.approx(per_step[0], rel=0.05)
    model = build_backbone(cfg, N_FEATURES)
    with torch.no_grad():
        assert model(torch.randn(1, 4096, N_FEATURES)).shape == (1, 4096, 32)
