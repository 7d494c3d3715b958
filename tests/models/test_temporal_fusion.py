"""The TFT backbone's fused variable selection against the paper's per-variable loop.

The reference below is the straightforward TFT variable selection network (Lim et al.
2021, eq. 6–8): embed each scalar input, run each variable through its own GRN in a
Python loop, weigh them by the softmax of a GRN over the flattened embedding. The
backbone folds the embedding into the first layers and runs the F GRNs as one fused
autograd function over blocks of rows; outputs and every gradient must agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import build_backbone, estimate_flops
from market_nn_plus_ultra.models import temporal_fusion as tft

N_FEATURES = 5
HIDDEN = 16


def _cfg(width: int | None = None, dropout: float = 0.0, hidden: int = HIDDEN) -> ModelConfig:
    cfg = ModelConfig(architecture="temporal_fusion", tft_hidden=hidden, n_heads=2, dropout=dropout)
    # model_copy does not validate: the backbone's own check of the width is reached too
    return cfg.model_copy(update={"tft_variable_width": width})


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter drawn at random (LayerNorm scales and biases too), in float64."""
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module


def _reference_select(vsn: tft.VariableSelectionNetwork, x: torch.Tensor):
    """TFT eq. 6–8, one variable at a time, without dropout: ``(B, T, d), (B, T, F)``."""
    grns, e, b = vsn.variable_grns, vsn.embed_weight, vsn.embed_bias
    xi = x.unsqueeze(-1) * e + b  # (B, T, F, v)
    weights = vsn.weight_grn(xi.flatten(2)).softmax(dim=-1)  # (B, T, F)
    outs = []
    for j in range(x.shape[-1]):
        a = xi[:, :, j]  # (B, T, v)
        eta = F.elu(a @ grns.w2[j] + grns.b2[j]) @ grns.w1[j] + grns.b1[j]
        value, gate = (eta @ grns.wg[j] + grns.bg[j]).chunk(2, dim=-1)
        skip = a @ grns.ws[j] + grns.bs[j] if hasattr(grns, "ws") else a
        out = F.layer_norm(skip + torch.sigmoid(gate) * value, value.shape[-1:])
        outs.append(out * grns.ln_weight[j] + grns.ln_bias[j])  # (B, T, d)
    selected = (weights.unsqueeze(-1) * torch.stack(outs, dim=2)).sum(dim=2)
    return selected, weights


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Tiny tensors: one intra-op thread (a parallel region per small op costs more than
    the op, on a busy machine tens of ms — gradcheck runs thousands of them)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 9 rows (5 variables × 2 × 16 channels × 4 bytes × 9): several blocks per
    batch and a partial last one."""
    monkeypatch.setitem(tft._BLOCK_BYTES, "cpu", N_FEATURES * 2 * HIDDEN * 4 * 9)


@pytest.mark.parametrize("width", [None, 3, 1])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_selection_equals_the_per_variable_loop(width, mode, small_blocks) -> None:
    """Outputs, variable weights and every gradient (parameters and inputs) to 1e-5."""
    vsn = _randomised(build_backbone(_cfg(width), N_FEATURES).select)
    getattr(vsn, mode)()  # dropout 0: training mode runs the same function
    x = torch.randn(3, 13, N_FEATURES, dtype=torch.float64, requires_grad=True)  # 39 rows
    upstream = torch.randn(3, 13, HIDDEN, dtype=torch.float64)
    leaves = [x, *vsn.parameters()]
    got, got_w = vsn(x)
    want, want_w = _reference_select(vsn, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((got * upstream).sum() + got_w.sum(), leaves)
    expected = torch.autograd.grad((want * upstream).sum() + want_w.sum(), leaves)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_fused_selection_in_float32_matches_the_loop() -> None:
    vsn = build_backbone(_cfg(), N_FEATURES).select
    x = torch.randn(4, 50, N_FEATURES)
    with torch.no_grad():
        got, _ = vsn(x)
        want, _ = _reference_select(vsn, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_with_dropout_pass_gradcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """With dropout the masks are drawn in the forward pass and reused by the backward
    pass: re-seeding before each call makes the function deterministic for gradcheck.
    3 variables of width 3 → hidden 4 (a projected skip), blocks of 4 rows over 6."""
    monkeypatch.setitem(tft._BLOCK_BYTES, "cpu", 3 * 2 * 4 * 4 * 4)
    vsn = _randomised(build_backbone(_cfg(3, dropout=0.3, hidden=4), 3).select).train()
    params = dict(vsn.named_parameters())
    names = [n for n in params if not n.startswith("weight_grn")]  # the fused function's
    x = torch.randn(1, 6, 3, dtype=torch.float64, requires_grad=True)

    def run(x, *chosen):
        torch.manual_seed(1)
        return functional_call(vsn, params | dict(zip(names, chosen, strict=True)), (x,))

    chosen = [params[n].detach().clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(run, (x, *chosen), eps=1e-6, atol=1e-6, rtol=1e-4)
    torch.manual_seed(1)
    dropped, _ = vsn(x)
    torch.manual_seed(2)
    assert (vsn(x)[0] - dropped).abs().max() > 1e-3  # dropout acts in training


def test_state_dict_layout_is_unchanged_at_the_default_width() -> None:
    """A checkpoint from before the per-variable width existed still loads."""
    keys = {k for k in build_backbone(_cfg(), N_FEATURES).state_dict() if k.startswith("select")}
    grn = "select.variable_grns."
    weight_grn = [f"select.weight_grn.{k}" for k in ("skip", "fc2", "fc1", "glu.proj", "norm")]
    assert keys == {
        "select.embed_weight",
        "select.embed_bias",
        *(grn + p for p in ("w2", "b2", "w1", "b1", "wg", "bg", "ln_weight", "ln_bias")),
        *(f"{m}.{p}" for m in weight_grn for p in ("weight", "bias")),
    }
    narrow = build_backbone(_cfg(4), N_FEATURES).select
    assert narrow.embed_weight.shape == (N_FEATURES, 4)
    assert narrow.variable_grns.wg.shape == (N_FEATURES, 4, 2 * HIDDEN)
    assert narrow.variable_grns.ws.shape == (N_FEATURES, 4, HIDDEN)
    assert narrow.weight_grn.fc2.weight.shape == (HIDDEN, N_FEATURES * 4)


def test_parameter_count_at_a_narrow_width() -> None:
    """Per variable at width v, hidden d: embedding 2v, W2 v²+v, W1 v²+v, gate 2vd+2d,
    skip vd+d, LayerNorm 2d; the weight GRN reads F·v inputs."""
    v, d, f = 4, HIDDEN, N_FEATURES
    per_variable = 2 * v + 2 * (v * v + v) + (2 * v * d + 2 * d) + (v * d + d) + 2 * d
    weight_grn = (f * v * f + f) + (f * v * d + d) + (d * d + d) + (d * 2 * f + 2 * f) + 2 * f
    select = build_backbone(_cfg(v), f).select
    assert sum(p.numel() for p in select.parameters()) == f * per_variable + weight_grn


def _lstm_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten.mkldnn_rnn_layer`` (one CPU LSTM layer over ``(T, B, ·)``): both matmuls."""
    steps, batch = input_shape[0], input_shape[1]
    return 2 * steps * batch * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


@pytest.mark.parametrize("width", [None, 8])
def test_flop_estimate_counts_the_folded_layers_once(width) -> None:
    """``estimate_flops`` against torch's counter: the folded embedding layers (W2, the
    skip projection, the weight GRN's input layer) do no matmul per row."""
    cfg = _cfg(width).model_copy(update={"tft_hidden": 32})
    model = build_backbone(cfg, N_FEATURES).eval()
    mapping = {torch.ops.aten.mkldnn_rnn_layer: _lstm_flops}
    with (
        torch.no_grad(),
        sdpa_kernel([SDPBackend.MATH]),  # the counter sees the math kernel's two matmuls
        FlopCounterMode(display=False, custom_mapping=mapping) as counter,
    ):
        model(torch.randn(1, 128, N_FEATURES))
    ratio = estimate_flops(cfg, N_FEATURES, 128) / (3 * counter.get_total_flops())
    assert ratio == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("width", [None, 3])
def test_backbone_is_causal_across_blocks(width, small_blocks) -> None:
    """Perturbing rows after t leaves every output at or before t unchanged; the blocks of
    the fused selection cut across sequences and steps."""
    model = build_backbone(_cfg(width), N_FEATURES).eval()
    x = torch.randn(3, 17, N_FEATURES)
    for t in (0, 8, 15):
        later = x.clone()
        later[:, t + 1 :] += 3.0 * torch.randn_like(later[:, t + 1 :])
        with torch.no_grad():
            h, h2 = model(x), model(later)
        torch.testing.assert_close(h[:, : t + 1], h2[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert (h[:, -1] - h2[:, -1]).abs().max() > 1e-3


def test_fused_backward_keeps_no_per_variable_activations() -> None:
    """The graph keeps the inputs and parameters for the variable GRNs, never an
    ``(N, F, d)`` activation (the loop keeps several): under a quarter of one."""
    vsn = build_backbone(_cfg(), N_FEATURES).select.train()
    rows = 1024
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    x, weights = torch.randn(rows, N_FEATURES), torch.rand(rows, N_FEATURES)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vsn.variable_grns(x, weights, vsn.embed_weight, vsn.embed_bias)
    assert 0 < sum(saved) < rows * N_FEATURES * HIDDEN / 4


def test_attention_dropout_acts_on_heads_and_output_not_on_the_matrix() -> None:
    """As in the reference TFT: dropout on each head's output and on the projected
    output (about p of the outputs exactly 0); the attention matrix stays a causal
    distribution in training, and without dropout both paths compute the same."""
    model = build_backbone(_cfg(dropout=0.5), N_FEATURES).train()
    h = torch.randn(4, 12, HIDDEN)
    out = model.attention(h)  # (4, 12, d)
    assert 0.4 < (out == 0).float().mean() < 0.6
    _, _, attn = model.interpret(torch.randn(2, 12, N_FEATURES))
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 12))
    assert attn.triu(1).abs().max() == 0
    model.attention.dropout = 0.0
    fused = model.attention(h)
    model.record_weights = True
    torch.testing.assert_close(model.attention(h), fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [0, -2, 2.5])
def test_bad_variable_width_names_the_field(width) -> None:
    with pytest.raises(ValueError, match=r"model\.tft_variable_width"):
        build_backbone(_cfg(width), N_FEATURES)
