"""Masked reconstruction and TS2Vec contrastive objectives against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from market_nn_plus_ultra.config import ModelConfig, PretrainingConfig
from market_nn_plus_ultra.training.contrastive import (
    ContrastiveModule,
    augment_view,
    hierarchical_contrastive_loss,
    info_nce,
)
from market_nn_plus_ultra.training.masked import (
    MaskedTimeSeriesModule,
    apply_mask_token,
    masked_reconstruction_loss,
    sample_time_mask,
)

MODEL = ModelConfig(d_model=16, depth=1, n_heads=2, dropout=0.0)


def test_reconstruction_loss_counts_masked_steps_only():
    target = torch.zeros(1, 3, 2)
    prediction = torch.tensor([[[1.0, 3.0], [100.0, -50.0], [2.0, 0.0]]])
    positions = torch.tensor([[True, False, True]])
    # masked steps 0 and 2: squared errors 1 + 9 + 4 + 0 = 14 over 2 steps · 2 features
    assert masked_reconstruction_loss(prediction, target, positions).item() == pytest.approx(3.5)
    changed = prediction.clone()
    changed[0, 1] = torch.tensor([-7.0, 8.0])  # the unmasked step may be anything
    assert masked_reconstruction_loss(changed, target, positions).item() == pytest.approx(3.5)
    prediction.requires_grad_(True)
    masked_reconstruction_loss(prediction, target, positions).backward()
    assert torch.equal(prediction.grad[0, 1], torch.zeros(2))
    assert prediction.grad[0, 0].tolist() == pytest.approx([2 * 1 / 4, 2 * 3 / 4])


def test_time_mask_patches_align_to_the_last_step_and_hit_the_rate():
    gen = torch.Generator().manual_seed(0)
    mask = sample_time_mask(4000, 10, 0.3, patch_len=4, generator=gen)
    # 10 steps in patches of 4 ending at the last step: [0,1], [2..5], [6..9]
    assert torch.equal(mask[:, 0], mask[:, 1])
    assert all(torch.equal(mask[:, 2], mask[:, j]) for j in range(3, 6))
    assert all(torch.equal(mask[:, 6], mask[:, j]) for j in range(7, 10))
    assert mask[:, [0, 2, 6]].float().mean().item() == pytest.approx(0.3, abs=0.02)
    steps = sample_time_mask(2000, 50, 0.15, generator=gen)
    assert steps.float().mean().item() == pytest.approx(0.15, abs=0.01)


def test_mask_token_zero_and_window_mean():
    x = torch.tensor([[[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [0.0, 0.0]]])
    masked = torch.tensor([[False, True, False, False]])
    valid = torch.tensor([[True, True, True, False]])
    zero = apply_mask_token(x, masked, valid, "zero")
    assert zero[0, 1].tolist() == [0.0, 0.0] and torch.equal(zero[0, [0, 2]], x[0, [0, 2]])
    mean = apply_mask_token(x, masked, valid, "mean")  # mean of valid, unmasked steps 0 and 2
    assert mean[0, 1].tolist() == [3.0, 20.0] and torch.equal(mean[0, 3], x[0, 3])


def test_masked_module_loss_equals_manual_reconstruction():
    torch.manual_seed(0)
    cfg = PretrainingConfig(mask_prob=0.4, mask_value="mean")
    module = MaskedTimeSeriesModule(MODEL, cfg, n_features=3).eval()
    x = torch.randn(4, 12, 3)
    valid = torch.ones(4, 12, dtype=torch.bool)
    valid[0, :5] = False
    batch = {"x": x * valid.unsqueeze(-1), "mask": valid}
    loss = module.compute_loss(batch, generator=torch.Generator().manual_seed(5))

    masked = sample_time_mask(4, 12, 0.4, generator=torch.Generator().manual_seed(5)) & valid
    tokens = apply_mask_token(batch["x"], masked, valid, "mean")
    recon = module.reconstruction(module.backbone(tokens))
    err = ((recon - batch["x"]) ** 2).mean(dim=-1)  # (B, T)
    assert loss.item() == pytest.approx(err[masked].mean().item(), rel=1e-5)


def test_info_nce_matches_hand_computed_cases():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    a = torch.stack([e1, e2])[None]  # (N=1, K=2, C=2)
    # each anchor: positive cosine 1, two negatives cosine 0 → -log(e^(1/τ) / (e^(1/τ) + 2))
    assert info_nce(a, a.clone(), 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert info_nce(a, a.clone(), 0.5).item() == pytest.approx(
        math.log(1 + 2 / math.e**2), rel=1e-6
    )
    # scaling a vector changes nothing (cosine); a mismatched pair raises the loss
    assert info_nce(3 * a, a.clone(), 1.0).item() == pytest.approx(math.log(1 + 2 / math.e))
    b = torch.stack([e1, -e1])[None]
    # anchors a0=e1: sims to [a1, b0, b1] = [0, 1, -1]; a1=e2: [0, 0, 0];
    # b0=e1: [1, 0, -1] positive a0; b1=-e1: [-1, 0, -1] positive a1 (cosine 0)
    rows = [
        -math.log(math.e / (1 + math.e + math.exp(-1))),
        -math.log(1 / 3),
        -math.log(math.e / (math.e + 1 + math.exp(-1))),
        -math.log(1 / (math.exp(-1) + 1 + math.exp(-1))),
    ]
    assert info_nce(a, b, 1.0).item() == pytest.approx(sum(rows) / 4, rel=1e-6)
    assert info_nce(a[:, :1], a[:, :1], 1.0).item() == 0.0  # one item: nothing to contrast


def test_hierarchical_loss_averages_max_pooled_levels():
    torch.manual_seed(1)
    z1, z2 = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    tau, w = 0.2, 0.3
    levels = []
    a, b = z1, z2
    for _ in range(3):  # T = 4, 2, 1
        term = (1 - w) * info_nce(a.transpose(0, 1), b.transpose(0, 1), tau)
        if a.shape[1] > 1:
            term = term + w * info_nce(a, b, tau)
        levels.append(term)
        if a.shape[1] == 1:
            break
        a = F.max_pool1d(a.transpose(1, 2), 2).transpose(1, 2)
        b = F.max_pool1d(b.transpose(1, 2), 2).transpose(1, 2)
    expected = sum(levels) / 3
    got = hierarchical_contrastive_loss(z1, z2, tau, w)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)


def test_augment_view_identity_and_fill():
    x = torch.randn(2, 6, 3)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 0] = False
    plain = augment_view(
        x, valid, jitter_std=0.0, scale_std=0.0, time_mask_prob=0.0, time_mask_fill="zero"
    )
    assert torch.equal(plain, x * valid.unsqueeze(-1))
    masked = augment_view(
        x, valid, jitter_std=0.0, scale_std=0.0, time_mask_prob=0.99, time_mask_fill="zero"
    )
    assert (masked == 0).float().mean().item() > 0.8


def test_contrastive_module_trains_the_backbone():
    torch.manual_seed(0)
    module = ContrastiveModule(MODEL, PretrainingConfig(objective="contrastive"), n_features=3)
    batch = {"x": torch.randn(6, 8, 3), "mask": torch.ones(6, 8, dtype=torch.bool)}
    loss = module.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    grads = [p.grad for p in module.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
