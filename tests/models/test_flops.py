"""``estimate_flops`` against torch's own FLOP counter, for every registered backbone.

The reference is ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass
(times 3 for forward + backward, the convention ``estimate_flops`` documents), never the
estimate itself. It counts matmuls, convolutions and attention only — no elementwise
ops (norms, activations, gates, softmax), which ``estimate_flops`` leaves out too — and
the SSM's FFT convolutions not at all, so ``state_space`` and the SSM branches are
compared on their matmul work, which is what the estimate counts. Three gaps of the
counter on CPU are closed here, each from the op's own operand shapes:

- attention runs on the math SDPA backend, which the counter sees as two batched
  matmuls (the fused CPU flash kernel is not in its registry);
- ``aten._grouped_mm`` (the MoE experts) costs ``2 · rows · d_in · d_out``;
- ``aten.mkldnn_rnn_layer`` (one CPU LSTM layer) costs ``2 · T · B · (|W_ih| + |W_hh|)``.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import BACKBONES, build_backbone, estimate_flops

N_FEATURES = 5
# measured: every backbone's ratio is 1.0000 at these sizes (both sides count the same
# matmuls); the margin leaves room for other torch builds' kernel decompositions
TOLERANCE = 0.05


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``(rows, d_in) @ (groups, d_in, d_out)`` split by row offsets: each row meets one
    group's weights."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


def _mkldnn_lstm_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs):
    """One LSTM layer over ``input (T, B, d_in)``: both gate matmuls at every step."""
    steps, batch = input_shape[0], input_shape[1]
    return 2 * steps * batch * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


_EXTRA = {
    torch.ops.aten._grouped_mm: _grouped_mm_flops,
    torch.ops.aten.mkldnn_rnn_layer: _mkldnn_lstm_flops,
}


def _measured_forward(cfg: ModelConfig, seq_len: int) -> int:
    model = build_backbone(cfg, N_FEATURES).eval()
    with (
        torch.no_grad(),
        sdpa_kernel([SDPBackend.MATH]),
        FlopCounterMode(display=False, custom_mapping=_EXTRA) as counter,
    ):
        model(torch.randn(1, seq_len, N_FEATURES))
    return counter.get_total_flops()


def _cfg(architecture: str, width: int, **overrides) -> ModelConfig:
    sizes = dict(
        d_model=width,
        tft_hidden=width,
        depth=2,
        n_heads=4,
        dropout=0.0,
        scales=[1, 4, 16],
        num_experts=4,
        top_k=2,
        coarse_factor=8,
        cross_every=1,
    )
    return ModelConfig(architecture=architecture, **(sizes | overrides))


@pytest.mark.parametrize("architecture", sorted(BACKBONES))
@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("seq_len", [64, 256])
def test_estimate_matches_the_flop_counter(architecture: str, width: int, seq_len: int) -> None:
    cfg = _cfg(architecture, width)
    measured = 3 * _measured_forward(cfg, seq_len)
    ratio = estimate_flops(cfg, N_FEATURES, seq_len) / measured
    assert ratio == pytest.approx(1.0, abs=TOLERANCE), (architecture, width, seq_len, ratio)


def test_patched_tokens_match_the_flop_counter() -> None:
    """Patches of 4 steps: 250 steps → 63 tokens (the first patch left-padded)."""
    cfg = _cfg("hybrid_transformer", 32, patch_size=4)
    ratio = estimate_flops(cfg, N_FEATURES, 250) / (3 * _measured_forward(cfg, 250))
    assert ratio == pytest.approx(1.0, abs=TOLERANCE)


def test_temporal_fusion_ignores_the_stack_fields() -> None:
    """The TFT has one attention layer of width tft_hidden; the old count took
    ``depth`` (16) layers at ``d_model`` (512) from the config, about 5.7× too high."""
    default = ModelConfig(architecture="temporal_fusion", dropout=0.0)
    assert (default.depth, default.d_model, default.tft_hidden) == (16, 512, 64)
    small = default.model_copy(update={"depth": 1, "d_model": 8})
    assert estimate_flops(default, N_FEATURES, 128) == estimate_flops(small, N_FEATURES, 128)
    ratio = estimate_flops(default, N_FEATURES, 128) / (3 * _measured_forward(default, 128))
    assert ratio == pytest.approx(1.0, abs=TOLERANCE)


def test_backward_costs_twice_the_forward() -> None:
    """The ×3 of forward + backward, measured on the hybrid (input gradients included):
    1.040× the forward's 3× here, the math attention kernel's backward doing a little
    more than two matmuls per forward one."""
    cfg = _cfg("hybrid_transformer", 32)
    model = build_backbone(cfg, N_FEATURES)
    x = torch.randn(1, 128, N_FEATURES, requires_grad=True)
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    assert counter.get_total_flops() == pytest.approx(
        3 * _measured_forward(cfg, 128), rel=TOLERANCE
    )
