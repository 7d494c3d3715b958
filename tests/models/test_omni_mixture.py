"""omni_mixture: the cross-scale block against a dense reference, pooling, FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import build_backbone, estimate_flops
from market_nn_plus_ultra.models.layers import apply_rotary
from market_nn_plus_ultra.models.omni_mixture import CrossScaleBlock

D, H = 16, 2


def _cfg(**extra) -> ModelConfig:
    fields = dict(architecture="omni_mixture", d_model=D, n_heads=H, coarse_factor=4)
    return ModelConfig(**(fields | {"dropout": 0.0} | extra))


def _attend(q, k, v, visible):
    """Softmax attention written out: ``q (B, H, T, hd)``, ``visible (T, S)`` bool."""
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return scores.masked_fill(~visible, float("-inf")).softmax(dim=-1) @ v


def _reference(block: CrossScaleBlock, x: torch.Tensor, span: int | None) -> torch.Tensor:
    """The block written with (T, T) masks over all steps and a loop for the pooling.

    Coarse token p = pool(concat of normalised steps p − c + 1 .. p, zeros before the
    first); it reads the coarse tokens s ≤ p with s ≡ p (mod c), rotary position s // c;
    fine step t reads the null key and the coarse tokens of its own class likewise.
    """
    B, T, _ = x.shape
    c, hd = block.factor, D // H
    steps = torch.arange(T)
    padded = F.pad(block.pool_norm(x), (0, 0, c - 1, 0))  # (B, c − 1 + T, D)
    g = torch.stack([block.pool(padded[:, p : p + c].reshape(B, c * D)) for p in range(T)], 1)
    gap = steps[:, None] - steps[None, :]  # (T, T): t − s
    visible = (gap >= 0) & (gap % c == 0)
    if span is not None:
        visible &= gap < span * c
    attn = block.coarse_attn
    q, k, v = attn.qkv(block.coarse_norms[0](g)).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
    cos, sin = attn.rotary(T)
    at = steps // c  # position inside the residue class
    q, k = apply_rotary(q, cos[at], sin[at]), apply_rotary(k, cos[at], sin[at])
    g = g + attn.proj(_attend(q, k, v, visible).transpose(1, 2).reshape(B, T, D))
    g = g + block.coarse_ffn(block.coarse_norms[1](g))
    keys = torch.cat([block.null.expand(B, 1, D), g], dim=1)  # (B, 1 + T, D)
    kv = block.kv(block.kv_norm(keys)).view(B, 1 + T, 2, H, hd).permute(2, 0, 3, 1, 4)
    q = block.q(block.q_norm(x)).view(B, T, H, hd).transpose(1, 2)
    with_null = torch.cat([torch.ones(T, 1, dtype=torch.bool), visible], dim=1)
    y = _attend(q, kv[0], kv[1], with_null).transpose(1, 2).reshape(B, T, D)
    return x + block.proj(y)


@pytest.mark.parametrize("span", [None, 1, 2])
@pytest.mark.parametrize("length", [13, 16])  # 13: the residue classes padded
def test_cross_scale_block_matches_a_dense_reference(span: int | None, length: int) -> None:
    torch.manual_seed(0)
    block = CrossScaleBlock(_cfg(), span).eval()
    with torch.no_grad():
        block.null.normal_()  # a non-zero null key
        x = torch.randn(2, length, D)
        torch.testing.assert_close(block(x), _reference(block, x, span), atol=1e-5, rtol=1e-5)


def test_a_step_reads_its_own_pooled_block_from_its_last_bar_on() -> None:
    """Bar b enters the coarse tokens at b .. b + c − 1 and, through the class attention,
    later ones; no step before b moves, and step b moves through its own coarse token
    even with the fine residual removed."""
    torch.manual_seed(1)
    block = CrossScaleBlock(_cfg()).eval()
    x = torch.randn(1, 12, D)
    moved = x.clone()
    moved[:, 5] += 2.0
    with torch.no_grad():
        change = (block.coarse(x) - block.coarse(moved)).abs().amax(dim=(0, 2))  # (12,)
        delta = (block(x) - x) - (block(moved) - moved)  # the cross-attention branch
    assert torch.all(change[:5] == 0) and torch.all(change[5:] > 1e-4)
    assert delta[:, :5].abs().max() == 0 and delta[:, 5].abs().max() > 1e-4


def test_state_dict_keeps_its_names_and_shapes() -> None:
    """Checkpoints of the block-aligned design load: the parameters did not change."""
    block = CrossScaleBlock(_cfg())
    shapes = {name: tuple(p.shape) for name, p in block.state_dict().items()}
    assert shapes["pool.weight"] == (D, 4 * D) and shapes["null"] == (1, 1, D)
    assert shapes["kv.weight"] == (2 * D, D) and shapes["coarse_attn.qkv.weight"] == (3 * D, D)
    assert not any("cache" in name or "rotary" in name for name in shapes)


@pytest.mark.parametrize("length", [37, 130])
def test_estimate_flops_matches_the_flop_counter_at_any_length(length: int) -> None:
    """Lengths the coarse factor does not divide; tests/models/test_flops.py covers the
    divisible ones."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = ModelConfig(
        architecture="omni_mixture", d_model=32, depth=2, n_heads=4, dropout=0.0, cross_every=1
    )
    model = build_backbone(cfg, 5).eval()
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as c:
        model(torch.randn(1, length, 5))
    assert estimate_flops(cfg, 5, length) == pytest.approx(3 * c.get_total_flops(), rel=1e-3)
