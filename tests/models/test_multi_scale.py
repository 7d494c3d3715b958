"""multi_scale: causal pooling, the visibility rule at block boundaries, config, training."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import ConfigError, ModelConfig, config_from_dict
from market_nn_plus_ultra.models import build_backbone
from market_nn_plus_ultra.models.multi_scale import (
    CrossScaleFusion,
    MultiScaleEncoder,
    causal_block_mean,
    coarse_visibility,
)

F = 3


def _cfg(**overrides: object) -> ModelConfig:
    base = dict(
        architecture="multi_scale",
        d_model=16,
        depth=1,
        n_heads=2,
        ff_mult=2,
        dropout=0.0,
        max_seq_len=16,
        ssm_state_dim=4,
        dilations=[1, 2],
        scales=[1, 4],
        scale_depth=1,
    )
    base.update(overrides)
    return ModelConfig(**base)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_block_mean_hand_computed() -> None:
    h = torch.arange(7.0).view(1, 7, 1)  # steps 0..6, k = 3: blocks [0,1,2], [3,4,5]; 6 open
    torch.testing.assert_close(causal_block_mean(h, 3), torch.tensor([[[1.0], [4.0]]]))
    assert causal_block_mean(h, 8).shape == (1, 0, 1)  # no block closed yet


def test_visibility_hand_computed() -> None:
    # T = 7, k = 3: blocks close at steps 2 and 5; column 0 is the null token
    expected = torch.tensor(
        [
            [1, 0, 0],
            [1, 0, 0],
            [1, 1, 0],
            [1, 1, 0],
            [1, 1, 0],
            [1, 1, 1],
            [1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(coarse_visibility(7, 3), expected)


def test_coarse_token_becomes_visible_when_its_last_bar_closes() -> None:
    """Changing coarse token j leaves fine steps < (j+1)·k − 1 alone and moves the rest."""
    k, T = 4, 14
    fusion = CrossScaleFusion(_cfg(), k).eval()
    x, coarse = torch.randn(2, T, 16), torch.randn(2, T // k, 16)
    for j in range(T // k):
        moved = coarse.clone()
        moved[:, j] += 3.0
        with torch.no_grad():
            y, y2 = fusion(x, coarse), fusion(x, moved)
        opens = (j + 1) * k - 1
        torch.testing.assert_close(y[:, :opens], y2[:, :opens], atol=0, rtol=0)
        assert (y[:, opens:] - y2[:, opens:]).abs().amax(dim=-1).min() > 1e-4, j


def test_first_bar_of_a_block_reaches_the_coarse_token_of_that_block_only() -> None:
    model = MultiScaleEncoder(_cfg(), F).eval()
    fine = torch.randn(1, 13, 16)
    moved = fine.clone()
    moved[:, 4] += 2.0  # bar j·k with j = 1, k = 4
    with torch.no_grad():
        c, c2 = model.encode_scale(0, fine), model.encode_scale(0, moved)
    assert c.shape == (1, 3, 16)  # 13 // 4 blocks closed; bar 12 is in an open block
    torch.testing.assert_close(c[:, 0], c2[:, 0], atol=0, rtol=0)  # block 0 ends before
    assert (c[:, 1] - c2[:, 1]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_perturbing_a_bar_changes_nothing_before_it(mode: str) -> None:
    """Around each block boundary of scale 4 and 8 (T = 19 fits neither)."""
    model = build_backbone(_cfg(scales=[1, 4, 8]), F).train(mode == "train")
    x = torch.randn(2, 19, F)
    for t in (3, 4, 7, 8, 15, 16, 18):
        x2 = x.clone()
        x2[:, t] += 2.0
        with torch.no_grad():
            h, h2 = model(x), model(x2)
        torch.testing.assert_close(h[:, :t], h2[:, :t], atol=1e-6, rtol=1e-6)
        assert (h[:, t] - h2[:, t]).abs().max() > 1e-3, t


def test_appending_bars_does_not_move_the_blocks() -> None:
    """Outputs on a prefix equal the full run's first steps: blocks count from bar 0."""
    model = build_backbone(_cfg(scales=[1, 4, 8]), F).eval()
    x = torch.randn(2, 21, F)
    with torch.no_grad():
        full = model(x)
        for length in (3, 10, 17):
            torch.testing.assert_close(model(x[:, :length]), full[:, :length])


def test_coarse_path_changes_the_output_at_the_boundary() -> None:
    """Perturbing the coarse encoder's weights moves every step from 3 on (block 0 of
    k = 4 closes at bar 3) and none before (they read the null token only)."""
    model = build_backbone(_cfg(), F).eval()
    x = torch.randn(1, 9, F)
    with torch.no_grad():
        h = model(x)
        for p in model.coarse.parameters():
            p.add_(0.5 * torch.randn_like(p))
        h2 = model(x)
    torch.testing.assert_close(h[:, :3], h2[:, :3], atol=0, rtol=0)
    assert (h[:, 3:] - h2[:, 3:]).abs().amax(dim=-1).min() > 1e-4


def test_shorter_than_every_coarse_scale_stays_finite() -> None:
    model = build_backbone(_cfg(scales=[1, 8, 40]), F)
    x = torch.randn(2, 5, F, requires_grad=True)
    h = model(x)
    assert h.shape == (2, 5, 16) and torch.isfinite(h).all()
    h.pow(2).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    null_v = model.fusions[0].null_v.grad  # every step read the null token
    assert null_v is not None and null_v.abs().sum() > 0


@pytest.mark.parametrize(
    "scales", [[2, 8], [1, 8, 8], [1, 40, 8], [], [1, 0]], ids=lambda s: str(s)
)
def test_scales_must_start_at_one_and_increase(scales: list[int]) -> None:
    with pytest.raises(ConfigError, match=r"model.scales .* must start with 1"):
        config_from_dict({"model": {"scales": scales}})


@pytest.mark.slow  # a real Lightning run: ~15 s on a loaded 2-core box
def test_tiny_training_run_learns(tmp_path) -> None:
    from market_nn_plus_ultra.training.train import train
    from tests.training._train_cases import fixture_db, tiny_config

    db = fixture_db(tmp_path, rows=300, planted_signal=0.5)
    cfg = tiny_config(
        db,
        tmp_path / "run",
        "model.architecture=multi_scale",
        "model.scales=[1,2,4]",
        "model.scale_depth=1",
        "training.max_epochs=3",
        "training.batch_size=32",
        "training.learning_rate=0.01",
    )
    result = train(cfg)
    log = pd.read_csv(tmp_path / "run" / "logs" / "csv" / "metrics.csv")
    per_epoch = log.dropna(subset=["train_loss"]).groupby("epoch")["train_loss"].mean()
    assert len(per_epoch) == 3
    # measured 0.83 → 0.73 → 0.61: the epoch means fall and the last is well below the first
    assert per_epoch.is_monotonic_decreasing, per_epoch.to_dict()
    assert per_epoch.iloc[-1] < 0.85 * per_epoch.iloc[0], per_epoch.to_dict()
    assert pd.notna(result.metrics["val_loss"])


def test_estimate_flops_tracks_the_flop_counter() -> None:
    """With only the fine scale it is the hybrid's count. The coarse scales add FLOPs
    that torch's FlopCounterMode (forward + backward) measures at 1.06× / 1.24× below the
    estimate at T = 64 / 256: the counter does not see the fused CPU attention kernel
    (tests/models/test_flops.py closes that gap and finds exact agreement)."""
    from torch.utils.flop_counter import FlopCounterMode

    from market_nn_plus_ultra.models import estimate_flops

    sizes = dict(d_model=32, depth=2, n_heads=4, dropout=0.0, scale_depth=2)
    fine_only = ModelConfig(architecture="multi_scale", scales=[1], **sizes)
    hybrid = ModelConfig(architecture="hybrid_transformer", **sizes)
    assert estimate_flops(fine_only, F, 64) == estimate_flops(hybrid, F, 64)

    def measured(cfg: ModelConfig, T: int) -> int:
        model = build_backbone(cfg, F)
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, T, F)).sum().backward()
        return counter.get_total_flops()

    multi = ModelConfig(architecture="multi_scale", scales=[1, 4, 16], **sizes)
    for T in (64, 256):
        estimated = estimate_flops(multi, F, T) - estimate_flops(fine_only, F, T)
        ratio = estimated / (measured(multi, T) - measured(fine_only, T))
        assert 1.0 <= ratio <= 1.5, (T, ratio)
