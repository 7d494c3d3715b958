"""The compiled turnover cap equals the per-bar numpy loop it replaces."""

from __future__ import annotations

import numpy as np

from market_nn_plus_ultra.evaluation.guardrails import _turnover_kernel


def _loop(target, forced, cap):
    """The old formulation, one vectorised numpy step per bar."""
    held, adjusted = np.zeros(target.shape[1]), target.copy()
    level = np.full(target.shape[0], np.nan)
    for t in range(target.shape[0]):
        present = ~np.isnan(target[t])
        if not present.any():
            continue
        move = np.where(forced[t, present], 0.0, target[t, present] - held[present])
        turnover = level[t] = np.abs(target[t, present] - held[present]).mean()
        if turnover > cap:
            new = np.where(forced[t, present], 0.0, held[present] + move * cap / turnover)
            adjusted[t, present] = new
        held[present] = adjusted[t, present]
    return adjusted, level


def test_compiled_turnover_cap_equals_the_loop():
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (300, 7))
    target[rng.random(target.shape) < 0.1] = np.nan  # symbols absent on some bars
    target[17] = np.nan  # an empty bar
    forced = rng.random(target.shape) < 0.05
    adjusted, level = _turnover_kernel(target, forced, 0.3)
    ref_adjusted, ref_level = _loop(target, forced, 0.3)
    np.testing.assert_allclose(adjusted, ref_adjusted, rtol=0, atol=1e-12)
    np.testing.assert_allclose(level, ref_level, rtol=0, atol=1e-12)
    assert np.isnan(level[17])


def test_hand_computed_cap():
    # one symbol, cap 0.5: 0 → 1 asks 1.0 (scaled to 0.5); then 0.5 → 1 asks 0.5 (kept)
    adjusted, level = _turnover_kernel(np.array([[1.0], [1.0]]), np.zeros((2, 1), bool), 0.5)
    np.testing.assert_allclose(adjusted.ravel(), [0.5, 1.0])
    np.testing.assert_allclose(level, [1.0, 0.5])
