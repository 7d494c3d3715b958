"""multi_scale: window-mean pooling, the residue-class attention, causality, config, training."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import ConfigError, ModelConfig, config_from_dict
from market_nn_plus_ultra.models import build_backbone
from market_nn_plus_ultra.models.multi_scale import (
    CrossScaleFusion,
    MultiScaleEncoder,
    causal_window_mean,
    from_residues,
    residue_attention,
    to_residues,
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


def test_window_mean_hand_computed() -> None:
    h = torch.arange(7.0).view(1, 7, 1)  # k = 3: the first two steps average what they have
    expected = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 7, 1)
    torch.testing.assert_close(causal_window_mean(h, 3), expected)
    torch.testing.assert_close(causal_window_mean(h, 1), h)


def test_residue_layout_hand_computed() -> None:
    h = torch.arange(1.0, 8.0).view(1, 7, 1)  # steps 0..6 hold 1..7; k = 3
    classes = to_residues(h, 3)  # class r: steps r, r + 3, r + 6; padding (0) last
    assert classes.squeeze(-1).tolist() == [[1.0, 4.0, 7.0], [2.0, 5.0, 0.0], [3.0, 6.0, 0.0]]
    torch.testing.assert_close(from_residues(classes, 3, 7), h)
    two = torch.randn(2, 11, 4)
    torch.testing.assert_close(from_residues(to_residues(two, 4), 4, 11), two)


def _dense_reference(q, kv, k, null_k, null_v, span):
    """Step t reads the null key and every step s <= t with s ≡ t (mod k), at most
    ``span`` of them; a (T, 1 + T) mask over all steps, softmax written out."""
    B, T, D = q.shape
    H, hd = null_k.shape[1], null_k.shape[-1]
    qh = q.view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
    kh, vh = (t.view(B, T, H, hd).transpose(1, 2) for t in kv.chunk(2, dim=-1))
    keys = torch.cat([null_k.expand(B, H, 1, hd), kh], dim=2)  # (B, H, 1 + T, hd)
    values = torch.cat([null_v.expand(B, H, 1, hd), vh], dim=2)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    visible = (s <= t) & ((t - s) % k == 0)
    if span is not None:
        visible &= (t - s) < span * k
    visible = torch.cat([torch.ones(T, 1, dtype=torch.bool), visible], dim=1)  # (T, 1 + T)
    scores = (qh @ keys.transpose(-1, -2)) / hd**0.5
    weights = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return (weights @ values).transpose(1, 2).reshape(B, T, D)


@pytest.mark.parametrize("span", [None, 1, 2, 10])
@pytest.mark.parametrize("length", [13, 16])
def test_residue_attention_matches_a_dense_reference(span: int | None, length: int) -> None:
    B, D, H, k = 2, 8, 2, 4
    q, kv = torch.randn(B, length, D), torch.randn(B, length, 2 * D)
    null_k, null_v = torch.randn(1, H, 1, D // H), torch.randn(1, H, 1, D // H)
    cache: dict = {}
    got = residue_attention(q, kv, k, (null_k, null_v), span, 0.0, cache)
    expected = _dense_reference(q, kv, k, null_k, null_v, span)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    masked = span is not None and span < -(-length // k)
    assert len(cache) == int(masked)  # is_causal (no mask) when the span covers a class
    residue_attention(q, kv, k, (null_k, null_v), span, 0.0, cache)
    assert len(cache) == int(masked)  # the band is built once


def test_coarse_token_is_read_by_its_residue_class_from_its_last_bar_on() -> None:
    """Changing the coarse token at step p moves fine steps p, p + k, p + 2k, … only."""
    k, T = 4, 14
    fusion = CrossScaleFusion(_cfg(), k).eval()
    x, coarse = torch.randn(2, T, 16), torch.randn(2, T, 16)
    steps = torch.arange(T)
    for p in (0, 3, 6, 13):
        moved = coarse.clone()
        moved[:, p] += 3.0
        with torch.no_grad():
            change = (fusion(x, coarse) - fusion(x, moved)).abs().amax(dim=(0, 2))  # (T,)
        reads = (steps >= p) & ((steps - p) % k == 0)
        assert torch.all(change[~reads] == 0), p
        assert torch.all(change[reads] > 1e-4), p


def test_first_bar_of_a_window_reaches_the_k_coarse_tokens_that_hold_it() -> None:
    """Bar b enters the window means at steps b .. b + k − 1; the scale's attention then
    carries it along each of those classes, never to an earlier step."""
    model = MultiScaleEncoder(_cfg(), F).eval()
    fine = torch.randn(1, 13, 16)
    moved = fine.clone()
    moved[:, 4] += 2.0
    with torch.no_grad():
        c, c2 = model.encode_scale(0, fine), model.encode_scale(0, moved)
    assert c.shape == (1, 13, 16)  # a coarse token at every step
    change = (c - c2).abs().amax(dim=(0, 2))  # (13,)
    assert torch.all(change[:4] == 0)
    assert torch.all(change[4:] > 1e-4)  # steps 4..7 hold bar 4; 8.. read them


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_perturbing_a_bar_changes_nothing_before_it(mode: str) -> None:
    """Around multiples of the scales 4 and 8 (T = 19: every residue class padded)."""
    model = build_backbone(_cfg(scales=[1, 4, 8]), F).train(mode == "train")
    x = torch.randn(2, 19, F)
    for t in (3, 4, 7, 8, 15, 16, 18):
        x2 = x.clone()
        x2[:, t] += 2.0
        with torch.no_grad():
            h, h2 = model(x), model(x2)
        torch.testing.assert_close(h[:, :t], h2[:, :t], atol=1e-6, rtol=1e-6)
        assert (h[:, t] - h2[:, t]).abs().max() > 1e-3, t


def test_appending_bars_changes_no_earlier_output() -> None:
    """Outputs on a prefix equal the full run's first steps: a coarse token ends at its
    own step, and the padding of a residue class comes after its last real step."""
    model = build_backbone(_cfg(scales=[1, 4, 8]), F).eval()
    x = torch.randn(2, 21, F)
    with torch.no_grad():
        full = model(x)
        for length in (3, 10, 17):
            torch.testing.assert_close(model(x[:, :length]), full[:, :length])


def test_coarse_path_reaches_every_step() -> None:
    """Perturbing the coarse encoder's weights moves every step, the first included: step
    0 reads the coarse token of bar 0 alone."""
    model = build_backbone(_cfg(), F).eval()
    x = torch.randn(1, 9, F)
    with torch.no_grad():
        h = model(x)
        for p in model.coarse.parameters():
            p.add_(0.5 * torch.randn_like(p))
        h2 = model(x)
    assert (h - h2).abs().amax(dim=-1).min() > 1e-4


def test_shorter_than_every_coarse_scale_stays_finite() -> None:
    model = build_backbone(_cfg(scales=[1, 8, 40]), F)
    x = torch.randn(2, 5, F, requires_grad=True)
    h = model(x)
    assert h.shape == (2, 5, 16) and torch.isfinite(h).all()
    h.pow(2).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    null_v = model.fusions[0].null_v.grad  # the null key is in every step's softmax
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
        "windows.window=16",  # room for both scales within a bounded look-back
        "training.max_epochs=3",
        "training.batch_size=32",
        "training.learning_rate=0.01",
    )
    result = train(cfg)
    log = pd.read_csv(tmp_path / "run" / "logs" / "csv" / "metrics.csv")
    per_epoch = log.dropna(subset=["train_loss"]).groupby("epoch")["train_loss"].mean()
    assert len(per_epoch) == 3
    # measured 0.75 → 0.70 → 0.64 on windows (supervision=last), 0.72 → 0.63 → 0.60 on
    # every position (all): the epoch means fall and the last is well below the first
    assert per_epoch.is_monotonic_decreasing, per_epoch.to_dict()
    assert per_epoch.iloc[-1] < 0.9 * per_epoch.iloc[0], per_epoch.to_dict()
    assert pd.notna(result.metrics["val_loss"])


@pytest.mark.parametrize("length", [37, 130])
def test_estimate_flops_matches_the_flop_counter_at_any_length(length: int) -> None:
    """Lengths no scale divides (the residue classes padded); with only the fine scale
    the count is the hybrid's. tests/models/test_flops.py covers divisible lengths."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from market_nn_plus_ultra.models import estimate_flops

    sizes = dict(d_model=32, depth=2, n_heads=4, dropout=0.0, scale_depth=2)
    fine_only = ModelConfig(architecture="multi_scale", scales=[1], **sizes)
    hybrid = ModelConfig(architecture="hybrid_transformer", **sizes)
    assert estimate_flops(fine_only, F, length) == estimate_flops(hybrid, F, length)
    multi = ModelConfig(architecture="multi_scale", scales=[1, 4, 16], **sizes)
    model = build_backbone(multi, F).eval()
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as c:
        model(torch.randn(1, length, F))
    assert estimate_flops(multi, F, length) == pytest.approx(3 * c.get_total_flops(), rel=1e-3)
