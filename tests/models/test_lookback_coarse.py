"""Bounded look-back of the coarse-path backbones (``omni_mixture``, ``multi_scale``).

The checks of tests/models/test_lookback.py — position t of a long sequence equals the
last step of its own window of R rows, and rows outside ``t − R + 1 .. t`` change
nothing — plus: the look-back the spans add up to is really read (the coarse path is not
cut to nothing), and without a receptive field a prefix gives the full run's first steps.
"""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import build_backbone, registry
from market_nn_plus_ultra.models.multi_scale import lookback_spans as multi_scale_spans
from market_nn_plus_ultra.models.omni_mixture import lookback_spans as omni_spans

R, F = 24, 5
ARCHITECTURES = ("omni_mixture", "multi_scale")
# per architecture: the defaults (coarse factor 4; scales shortened to fit R) and a
# configuration whose coarse attentions read more than one coarse step
CASES = {
    "omni_mixture": [{}, {"cross_every": 1, "coarse_factor": 2, "dilations": [1]}],
    "multi_scale": [
        {"scales": [1, 4, 8]},
        {"scales": [1, 3, 6], "scale_depth": 1, "dilations": [1]},
    ],
}
PARAMS = [(a, extra) for a in ARCHITECTURES for extra in CASES[a]]


@pytest.fixture(autouse=True)
def _bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry builds these two with a receptive field."""
    allowed = tuple(dict.fromkeys((*registry.SEQUENCE_ARCHITECTURES, *ARCHITECTURES)))
    monkeypatch.setattr(registry, "SEQUENCE_ARCHITECTURES", allowed)


def _cfg(architecture: str, receptive_field: int | None = R, **extra) -> ModelConfig:
    fields = {"d_model": 32, "depth": 2, "n_heads": 4, "dropout": 0.0, "max_seq_len": 64}
    return ModelConfig(
        architecture=architecture, receptive_field=receptive_field, **(fields | extra)
    )


@pytest.mark.parametrize(("architecture", "extra"), PARAMS)
def test_every_position_equals_its_own_window(architecture: str, extra: dict) -> None:
    torch.manual_seed(0)
    model = build_backbone(_cfg(architecture, **extra), F).eval()
    x = torch.randn(2, 90, F)
    with torch.no_grad():
        long = model(x)  # (2, 90, D)
        for t in (R - 1, 40, 61, 89):
            window = model(x[:, t - R + 1 : t + 1])[:, -1]  # (2, D)
            torch.testing.assert_close(long[:, t], window, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("architecture", "extra"), PARAMS)
@pytest.mark.parametrize("train", [False, True])
def test_rows_outside_the_look_back_change_nothing(
    architecture: str, extra: dict, train: bool
) -> None:
    torch.manual_seed(1)
    model = build_backbone(_cfg(architecture, dropout=0.1, **extra), F).train(train)
    x = torch.randn(1, 70, F)
    t = 50
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :]) * 5  # the future
    y[:, : t - R + 1] += torch.randn_like(y[:, : t - R + 1]) * 5  # beyond the look-back
    torch.manual_seed(2)
    a = model(x)[:, t]
    torch.manual_seed(2)  # the same dropout masks
    b = model(y)[:, t]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("architecture", "extra", "lookback"),
    [
        # convs 2 + 2, SSM spans 3 (2 + 2 rows), two cross-scale blocks of
        # pool 1 + coarse attention 2 + cross attention 2 rows (spans of 2 coarse steps)
        ("omni_mixture", CASES["omni_mixture"][1], 4 + 4 + 2 * 5),
        # fine: convs 2 + 2, four attention/SSM spans of 3 (4 · 2 rows); the ×3 scale:
        # window mean 2 + two attentions of 2 coarse steps (2 · 3 rows)
        ("multi_scale", CASES["multi_scale"][1], 4 + 8 + 2 + 6),
    ],
)
def test_the_look_back_is_read_to_its_end(architecture: str, extra: dict, lookback: int) -> None:
    """Row ``t − lookback`` (≤ R − 1 back) still moves output t; the row before it not."""
    torch.manual_seed(3)
    model = build_backbone(_cfg(architecture, **extra), F).eval()
    x = torch.randn(1, 60, F)
    t = 59
    with torch.no_grad():
        base = model(x)[:, t]
        moved = []
        for back in (lookback, lookback + 1):
            y = x.clone()
            y[:, t - back] += 3.0
            moved.append((model(y)[:, t] - base).abs().max().item())
    assert lookback <= R - 1
    assert moved[0] > 0 and moved[1] == 0, moved


def test_spans_hand_computed() -> None:
    # omni: 2 blocks, convs kernel 3 at dilations 1, 2 (2 + 4 rows), one cross-scale
    # block (cross_every 2) pooling 4 steps (3 rows); 2 SSMs + 2 attentions share 23 − 9
    assert omni_spans(_cfg("omni_mixture")) == (1 + 14 // 4, 1 + 3 // 4)
    # R = 64, factor 4, cross_every 1: fixed 6 + 2 · 3, six mixers share 51 rows → 9
    # rows each, 1 + 8 // 4 = 3 coarse steps
    assert omni_spans(_cfg("omni_mixture", 64, cross_every=1)) == (9, 3)
    # multi_scale R = 64, scales [1, 4, 8], scale_depth 2: fixed convs 6 + widest mean 7;
    # 4 fine mixers + 3 per scale share 50 → 8 rows; the fine stack reads 6 + 4 · 7 = 34,
    # leaving 29: the ×4 path 1 + (29 − 3) // 3 = 9 rows → 1 + 8 // 4 = 3 steps, the ×8
    # path 1 + (29 − 7) // 3 = 8 rows → 1 + 7 // 8 = 1 step
    cfg = _cfg("multi_scale", 64, scales=[1, 4, 8])
    assert multi_scale_spans(cfg) == (8, [3, 1])
    assert omni_spans(_cfg("omni_mixture", None)) == (None, None)
    assert multi_scale_spans(_cfg("multi_scale", None)) == (None, [None, None])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_too_short_a_receptive_field_names_the_fix(architecture: str) -> None:
    extra = {"scales": [1, 8, 40]} if architecture == "multi_scale" else {}
    with pytest.raises(ValueError, match=r"too short for .* lengthen windows\.window"):
        build_backbone(_cfg(architecture, 12, **extra), F)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_unbounded_prefix_gives_the_first_steps(architecture: str) -> None:
    """Without a receptive field a step reads its whole history; appending bars (of any
    count, so the residue classes' padding changes) leaves the earlier outputs alone."""
    torch.manual_seed(4)
    extra = {"scales": [1, 4, 8]} if architecture == "multi_scale" else {}
    model = build_backbone(_cfg(architecture, None, **extra), F).eval()
    x = torch.randn(2, 41, F)
    with torch.no_grad():
        full = model(x)
        for length in (3, 10, 17, 30):
            torch.testing.assert_close(model(x[:, :length]), full[:, :length])
        y = x.clone()
        y[:, 0] += 3.0  # the first bar still reaches the last step
        assert (model(y)[:, -1] - full[:, -1]).abs().max() > 1e-4
