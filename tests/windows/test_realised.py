"""The simple return t → t+1 travels beside the targets, whatever the training target is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.windows import MarketTensors, SlidingWindowDataset


def _panel() -> pd.DataFrame:
    """Two symbols on different calendars with large moves (log and simple returns differ)."""
    days = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")
    a = pd.DataFrame(
        {"timestamp": days, "symbol": "A", "close": [100, 150, 75, 75, 90, 45, 60, 120.0]}
    )
    b = pd.DataFrame(
        {"timestamp": days[::2], "symbol": "B", "close": [10, 20, 5, 6.0]}  # own bars only
    )
    frame = pd.concat([a, b])
    frame["x"] = np.arange(len(frame), dtype=float)
    return frame.set_index(["timestamp", "symbol"]).sort_index()


# by hand: A's next simple returns, B's on its own bars (rows 0, 2, 4, 6)
A_SIMPLE = [0.5, -0.5, 0.0, 0.2, -0.5, 1 / 3, 1.0, np.nan]
B_SIMPLE = {0: 1.0, 2: -0.75, 4: 0.2, 6: np.nan}


@pytest.mark.parametrize("target", ["simple_return", "log_return"])
def test_realised_is_the_simple_return(target):
    tensors = MarketTensors.from_panel(_panel(), ["close", "x"], horizon=2, target=target)
    a, b = tensors.symbols.index("A"), tensors.symbols.index("B")
    rows = np.arange(8)
    got_a = tensors.realised_at(rows, np.full(8, a))
    np.testing.assert_allclose(got_a, A_SIMPLE, rtol=1e-6, equal_nan=True)
    got_b = tensors.realised_at(np.array(list(B_SIMPLE)), np.full(4, b))
    np.testing.assert_allclose(got_b, list(B_SIMPLE.values()), rtol=1e-6, equal_nan=True)
    first = tensors.targets[:, a, 0]
    expected = np.log1p(A_SIMPLE) if target == "log_return" else A_SIMPLE
    np.testing.assert_allclose(first, expected, rtol=1e-6, equal_nan=True)  # targets unchanged
    # the extra [T, S] array exists only when the targets are not already simple returns
    assert (tensors.simple_returns is not None) == (target == "log_return")


def test_batches_carry_the_simple_return_with_log_targets(tmp_path):
    tensors = MarketTensors.from_panel(_panel(), ["close", "x"], horizon=1, target="log_return")
    for cached in (tensors, tensors.to_memmap(tmp_path / "cache")):
        ds = SlidingWindowDataset(cached, 2, normalise="none")
        batch = ds.batch(np.arange(len(ds)))
        t, s = batch["t_index"].numpy(), batch["symbol_index"].numpy()
        a = cached.symbols.index("A")
        expected = [A_SIMPLE[i] if j == a else B_SIMPLE[i] for i, j in zip(t, s, strict=True)]
        np.testing.assert_allclose(batch["realised"].numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(batch["y"][:, 0].numpy(), np.log1p(expected), rtol=1e-6)
        # multi-symbol items: realised [B, S], 0 where the symbol has no target
        every = SlidingWindowDataset(cached, 2, normalise="none", symbols_per_item="all")
        item = every.batch(np.arange(len(every)))
        assert item["realised"].shape == item["y"].shape[:2]
        known = item["y_mask"][..., 0].numpy()
        np.testing.assert_allclose(
            item["realised"].numpy()[known], np.expm1(item["y"][..., 0].numpy()[known]), rtol=1e-5
        )
        assert (item["realised"].numpy()[~known] == 0).all()
    reopened = MarketTensors.open_memmap(tmp_path / "cache")
    np.testing.assert_array_equal(reopened.missing, tensors.missing)
    np.testing.assert_array_equal(reopened.simple_returns, tensors.simple_returns)
