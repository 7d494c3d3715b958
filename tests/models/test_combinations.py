"""Every backbone with every head, and the state-space backbone's linear memory in T."""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import BACKBONES, HEADS, HeadOutput, build_model

ARCHITECTURES = sorted(BACKBONES)
HEAD_NAMES = sorted(HEADS)
B, T, F, H = 3, 20, 4, 2
QUANTILES = [0.1, 0.5, 0.9]
CLASS_HEADS = {"action", "dirichlet", "quantile_dirichlet"}
QUANTILE_HEADS = {"quantile", "quantile_dirichlet"}


def _cfg(architecture: str, head: str = "regression", **overrides: object) -> ModelConfig:
    base = dict(
        architecture=architecture,
        head=head,
        d_model=16,
        depth=2,
        n_heads=2,
        ff_mult=2,
        dropout=0.0,
        max_seq_len=16,
        ssm_state_dim=4,
        num_experts=3,
        top_k=2,
        coarse_factor=4,
        cross_every=1,
        dilations=[1, 2],
        tft_hidden=16,
        horizon=H,
        quantiles=QUANTILES,
    )
    base.update(overrides)
    return ModelConfig(**base)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: a second intra-op thread only adds contention on a shared 2-core box
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_registries_hold_the_five_backbones_and_five_heads() -> None:
    assert ARCHITECTURES == [
        "hybrid_transformer",
        "moe_transformer",
        "multi_scale",
        "omni_mixture",
        "state_space",
        "temporal_fusion",
    ]
    assert HEAD_NAMES == ["action", "dirichlet", "quantile", "quantile_dirichlet", "regression"]


def _check_output(out: HeadOutput, head: str) -> None:
    """The HeadOutput contract: shapes, ranges, and which optional fields are set."""
    assert out.position.shape == (B,)
    assert bool(((out.position >= -1) & (out.position <= 1)).all())
    assert out.forecast.shape == (B, H)
    if head in CLASS_HEADS:
        assert out.probs.shape == (B, 3) and out.logits.shape == (B, 3)
        torch.testing.assert_close(out.probs.sum(-1), torch.ones(B))
        # the position is p_up − p_down for every direction head
        torch.testing.assert_close(out.position, out.probs[:, 2] - out.probs[:, 0])
    else:
        assert out.probs is None and out.logits is None
    if head in {"dirichlet", "quantile_dirichlet"}:
        assert out.concentration.shape == (B, 3) and bool((out.concentration >= 1).all())
    else:
        assert out.concentration is None
    if head in QUANTILE_HEADS:
        assert out.quantiles.shape == (B, H, len(QUANTILES))
        assert bool((out.quantiles.diff(dim=-1) >= 0).all())
        torch.testing.assert_close(out.forecast, out.quantiles[..., 1])  # the 0.5 anchor
    else:
        assert out.quantiles is None


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_backbone_with_every_head_trains(architecture: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(architecture, head), F).train()
    x = torch.randn(B, T, F, requires_grad=True)
    targets = 0.01 * torch.randn(B, H)
    out = model(x)
    _check_output(out, head)
    loss = model.head.loss(out, targets) + model.aux_loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    # the input embedding (first layer) and the head's read-out (last) both learn
    first = next(n for n in grads if n.startswith("backbone."))
    assert grads[first] is not None and grads[first].abs().sum() > 0, first
    assert grads["head.norm.weight"].abs().sum() > 0


def _saved_activation_bytes(fn, *args: torch.Tensor, exclude: set[int]) -> int:
    """Bytes of the distinct storages autograd saves for backward while running ``fn``.

    Storages in ``exclude`` (the parameters' data pointers) do not depend on the input
    length and are left out, so what remains is activation memory.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args).float().pow(2).mean().backward()
    return sum(seen.values())


def _explicit_attention(x: torch.Tensor) -> torch.Tensor:
    """Softmax(x xᵀ) x with the (B, T, T) score matrix kept: quadratic memory in T."""
    scores = (x @ x.transpose(1, 2) / x.shape[-1] ** 0.5).softmax(-1)  # (B, T, T)
    return scores @ x


def test_saved_tensor_bytes_see_a_quadratic_score_matrix() -> None:
    # the probe must tell quadratic from linear before it vouches for the SSM below
    short = _saved_activation_bytes(
        _explicit_attention, torch.randn(1, 64, 8, requires_grad=True), exclude=set()
    )
    long = _saved_activation_bytes(
        _explicit_attention, torch.randn(1, 256, 8, requires_grad=True), exclude=set()
    )
    assert 12 < long / short <= 16.5  # (256/64)² = 16, minus the linear parts


def test_state_space_activation_memory_grows_linearly_with_length() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg("state_space", d_model=32, ssm_state_dim=8), F).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    buffers = {b.untyped_storage().data_ptr() for b in model.buffers()}

    def run(length: int) -> int:
        x = torch.randn(2, length, F, requires_grad=True)
        return _saved_activation_bytes(lambda x: model.backbone(x), x, exclude=params | buffers)

    short, long = run(256), run(1024)
    ratio = long / short
    assert 3.6 < ratio < 4.4, (short, long)  # length ×4: linear is ×4, quadratic ×16
