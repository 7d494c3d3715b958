"""The compiled participation-cap recursion equals the per-bar tensor loop it replaces."""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.simulation.execution import _fill_with_cap


def _loop(targets, present, limit, initial):
    """The old formulation: one clip per bar in Python."""
    limit = torch.where(present, limit.nan_to_num(0.0).clamp(min=0.0), 0.0)
    h, held = initial, []
    for t in range(targets.shape[1]):
        h = h + torch.minimum(torch.maximum(targets[:, t] - h, -limit[:, t]), limit[:, t])
        held.append(h)
    return torch.stack(held, dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_fill_equals_the_per_bar_loop(dtype):
    g = torch.Generator().manual_seed(0)
    B, T, S = 3, 40, 4
    targets = (torch.rand(B, T, S, generator=g, dtype=dtype) * 2 - 1).round(decimals=1)
    present = torch.rand(B, T, S, generator=g) > 0.2
    limit = torch.rand(1, T, S, generator=g, dtype=dtype) * 0.3  # broadcast over B
    limit[0, 5, 1] = float("nan")  # unknown volume: no fill
    initial = torch.rand(B, S, generator=g, dtype=dtype)
    got = _fill_with_cap(targets, present, limit, initial)
    torch.testing.assert_close(got, _loop(targets, present, limit, initial), rtol=0, atol=1e-12)
    assert got.shape == (B, T, S) and got.dtype == dtype


def test_hand_computed_partial_fills():
    targets = torch.tensor([[[1.0], [1.0], [-0.5], [-0.5]]])  # (1, 4, 1)
    limit = torch.full((1, 4, 1), 0.4)
    present = torch.ones(1, 4, 1, dtype=torch.bool)
    got = _fill_with_cap(targets, present, limit, torch.zeros(1, 1)).flatten()
    torch.testing.assert_close(got, torch.tensor([0.4, 0.8, 0.4, 0.0]))


def test_gradient_path_still_differentiates():
    targets = torch.rand(2, 6, 3, requires_grad=True)
    limit = torch.full((2, 6, 3), 0.1)
    present = torch.ones(2, 6, 3, dtype=torch.bool)
    held = _fill_with_cap(targets, present, limit, torch.zeros(2, 3))
    held.sum().backward()
    assert targets.grad is not None
    with torch.no_grad():
        fast = _fill_with_cap(targets, present, limit, torch.zeros(2, 3))
    torch.testing.assert_close(held.detach(), fast)
