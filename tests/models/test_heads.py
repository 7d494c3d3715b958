"""Output heads: shapes, ranges, non-crossing quantiles, losses that learn a planted batch."""

from __future__ import annotations

import math

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import heads as heads_module
from market_nn_plus_ultra.models.heads import HeadOutput, non_crossing_quantiles
from market_nn_plus_ultra.models.losses import pinball_loss, regression_loss
from market_nn_plus_ultra.models.registry import HEADS, build_head

HEAD_NAMES = ["regression", "action", "quantile", "dirichlet", "quantile_dirichlet"]
D_MODEL, H = 16, 3


def _cfg(head: str, **kw) -> ModelConfig:
    return ModelConfig(head=head, d_model=D_MODEL, n_heads=2, horizon=H, **kw)


def test_every_head_is_registered():
    assert heads_module.__name__ in {h.__module__ for h in HEADS.values()}
    assert set(HEAD_NAMES) <= set(HEADS)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_shapes_and_ranges(name):
    torch.manual_seed(0)
    head = build_head(_cfg(name, quantiles=[0.05, 0.25, 0.5, 0.75, 0.95]), D_MODEL)
    h = torch.randn(7, 5, D_MODEL) * 10  # large inputs push every activation to its limits
    out = head(h)
    assert isinstance(out, HeadOutput)
    assert out.position.shape == (7,) and out.forecast.shape == (7, H)
    assert out.position.abs().max() <= 1.0
    if name in ("action", "dirichlet", "quantile_dirichlet"):
        assert out.probs.shape == (7, 3) and out.logits.shape == (7, 3)
        torch.testing.assert_close(out.probs.sum(-1), torch.ones(7))
        torch.testing.assert_close(out.position, out.probs[:, 2] - out.probs[:, 0])
    if name in ("dirichlet", "quantile_dirichlet"):
        assert (out.concentration > 0).all()
        torch.testing.assert_close(
            out.probs, out.concentration / out.concentration.sum(-1, keepdim=True)
        )
    if name in ("quantile", "quantile_dirichlet"):
        assert out.quantiles.shape == (7, H, 5)
        assert (out.quantiles.diff(dim=-1) >= 0).all()
        torch.testing.assert_close(out.forecast, out.quantiles[..., 2])  # the median
    else:
        assert out.quantiles is None


def test_only_the_last_step_is_read():
    head = build_head(_cfg("regression"), D_MODEL).eval()
    h = torch.randn(4, 6, D_MODEL)
    changed = h.clone()
    changed[:, :-1] = torch.randn(4, 5, D_MODEL)
    torch.testing.assert_close(head(h).forecast, head(changed).forecast)


def test_non_crossing_quantiles_by_hand_and_under_extreme_inputs():
    raw = torch.zeros(1, 3)
    ln2 = math.log(2.0)
    assert non_crossing_quantiles(raw, [0.1, 0.5, 0.9]).tolist()[0] == pytest.approx(
        [-ln2, 0.0, ln2]
    )
    # five levels: offsets accumulate outwards from the median
    raw5 = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    assert non_crossing_quantiles(raw5, [0.1, 0.3, 0.5, 0.7, 0.9]).tolist()[0] == pytest.approx(
        [1 - 2 * ln2, 1 - ln2, 1.0, 1 + ln2, 1 + 2 * ln2]
    )
    wild = torch.randn(1000, 4) * 50
    q = non_crossing_quantiles(wild, [0.1, 0.2, 0.6, 0.9])  # no 0.5: anchor is 0.6
    assert (q.diff(dim=-1) >= 0).all()
    torch.testing.assert_close(q[:, 2], wild[:, 2])


def test_forecast_is_in_return_units_and_position_follows_it():
    head = build_head(_cfg("regression", return_scale=0.02), D_MODEL)
    out = head(torch.randn(5, 2, D_MODEL))
    torch.testing.assert_close(out.position, torch.tanh(out.forecast[:, 0] / 0.02))
    targets = torch.randn(5, H) * 0.02
    expected = regression_loss(out.forecast / 0.02, targets / 0.02, "huber", 1.0)
    torch.testing.assert_close(head.loss(out, targets), expected)


def test_learned_position_mode_has_its_own_output():
    head = build_head(_cfg("quantile", position_mode="learned"), D_MODEL)
    out = head(torch.randn(5, 2, D_MODEL))
    assert head.position.proj is not None
    assert not torch.allclose(out.position, torch.tanh(out.forecast[:, 0] / 0.01))
    assert out.position.abs().max() <= 1.0


def test_quantile_loss_is_the_pinball_loss_in_scaled_units():
    head = build_head(_cfg("quantile"), D_MODEL)
    out = head(torch.randn(6, 3, D_MODEL))
    targets = torch.randn(6, H) * 0.01
    expected = pinball_loss(out.quantiles / 0.01, targets / 0.01, torch.tensor([0.05, 0.5, 0.95]))
    torch.testing.assert_close(head.loss(out, targets), expected)


def test_dirichlet_kl_weight_anneals_in_training_only():
    head = build_head(_cfg("dirichlet", loss={"evidential_anneal_steps": 4}), D_MODEL)
    h, targets = torch.randn(8, 2, D_MODEL), torch.randn(8, H) * 0.01
    assert head.dirichlet.kl_weight.item() == 0.0
    for _ in range(2):
        head.loss(head(h), targets)
    assert head.dirichlet.kl_weight.item() == pytest.approx(0.5)
    head.eval()
    head.loss(head(h), targets)
    assert head.dirichlet.kl_weight.item() == pytest.approx(0.5)  # evaluation does not advance
    head.train()
    for _ in range(5):
        head.loss(head(h), targets)
    assert head.dirichlet.kl_weight.item() == 1.0
    assert "dirichlet.step" in head.state_dict()  # resumes where it left off


def test_target_shape_mismatch_names_the_horizon():
    head = build_head(_cfg("action"), D_MODEL)
    out = head(torch.randn(4, 2, D_MODEL))
    with pytest.raises(ValueError, match=r"model.horizon=3"):
        head.loss(out, torch.zeros(4, 5))


def test_bad_hidden_shape_is_explained():
    head = build_head(_cfg("regression"), D_MODEL)
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        head(torch.randn(4, 8))


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_loss_falls_on_a_planted_batch(name):
    """Targets are a fixed function of the last hidden step: the head can learn them."""
    torch.manual_seed(1)
    head = build_head(_cfg(name, loss={"evidential_anneal_steps": 10}), D_MODEL)
    h = torch.randn(128, 4, D_MODEL)
    signal = h[:, -1, :H]  # (B, H)
    targets = 0.01 * signal + 0.001 * torch.randn(128, H)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = head.loss(head(h), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], (losses[0], losses[-1])
    out = head.eval()(h)
    # the learned position leans the right way on the first-horizon return
    agreement = (torch.sign(out.position) == torch.sign(targets[:, 0])).float().mean()
    assert agreement > 0.8
