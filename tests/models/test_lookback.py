"""Bounded look-back: position t of a long sequence equals the last step of its own window.

With ``model.receptive_field = R`` an output reads rows ``t − R + 1 .. t`` only, the same
function wherever the sequence starts; that is what every-position supervision and
one-pass inference rely on.
"""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.config import SEQUENCE_ARCHITECTURES, ModelConfig
from market_nn_plus_ultra.models import build_backbone
from market_nn_plus_ultra.models.lookback import band_mask, split_lookback

R, F = 24, 5


def _cfg(architecture: str, **extra) -> ModelConfig:
    fields = {"d_model": 32, "depth": 2, "n_heads": 4, "dropout": 0.0, "max_seq_len": 64}
    fields["scales"] = [1, 4, 8]  # multi_scale: coarse scales that fit R rows
    return ModelConfig(
        architecture=architecture, num_experts=4, receptive_field=R, **(fields | extra)
    )


@pytest.mark.parametrize("architecture", SEQUENCE_ARCHITECTURES)
def test_every_position_equals_its_own_window(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(_cfg(architecture), F).eval()
    x = torch.randn(2, 90, F)
    with torch.no_grad():
        long = model(x)  # (2, 90, D)
        for t in (R - 1, 40, 89):
            window = model(x[:, t - R + 1 : t + 1])[:, -1]  # (2, D)
            torch.testing.assert_close(long[:, t], window, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", SEQUENCE_ARCHITECTURES)
@pytest.mark.parametrize("train", [False, True])
def test_rows_outside_the_look_back_change_nothing(architecture: str, train: bool) -> None:
    torch.manual_seed(1)
    model = build_backbone(_cfg(architecture, dropout=0.1), F).train(train)
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


def test_band_mask_shows_span_rows() -> None:
    visible = band_mask(6, 3, torch.device("cpu"), torch.float32) == 0
    assert visible.sum(dim=1).tolist() == [1, 2, 3, 3, 3, 3]
    assert visible[5].tolist() == [False, False, False, True, True, True]


def test_spans_add_up_to_at_most_the_receptive_field() -> None:
    # 2 blocks, convs with kernel 3 at dilations 1 and 2 take 2 + 4 rows; 4 mixers share 57
    assert split_lookback(64, 6, 4, "x") == 1 + 57 // 4
    with pytest.raises(ValueError, match="too short"):
        split_lookback(8, 6, 4, "2 hybrid blocks")


def test_unbounded_backbones_refuse_a_receptive_field() -> None:
    with pytest.raises(ValueError, match="unbounded look-back"):
        build_backbone(ModelConfig(architecture="temporal_fusion", receptive_field=R), F)
