"""benchmarks/peers.py: the planted fixture holds the edge it states, and our tensors
read the same next return from its closes that the peers read from its ``ret`` column."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from market_nn_plus_ultra.config import WindowsConfig
from market_nn_plus_ultra.windows import build_tensors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from peers import AUTOCORR, EDGE, _truth, planted_fixture


@pytest.fixture(scope="module")
def fixture():
    return planted_fixture(n_series=2, n_rows=20_000, seed=3)


def test_closes_give_the_returns_every_library_reads(fixture):
    frame, inputs = fixture
    panel = frame.rename(columns={"series": "symbol"}).set_index(["timestamp", "symbol"])
    tensors = build_tensors(panel[["close", *inputs]], WindowsConfig(horizon=5))
    truth = _truth(frame)  # realised = ret one row later, what pytorch-forecasting predicts
    for s, symbol in enumerate(tensors.symbols):
        mine = truth[truth.series == symbol].sort_values("t")
        ours = tensors.targets[mine.t.to_numpy(), s, 0]  # close[t+1] / close[t] - 1
        np.testing.assert_allclose(ours, mine.realised.to_numpy(), rtol=2e-4, atol=1e-7)
        # the h-th target is the return h rows ahead
        ret = frame[frame.series == symbol]["ret"].to_numpy()
        np.testing.assert_allclose(tensors.targets[100, s, 4], ret[105], rtol=2e-4)


def test_oracle_is_the_conditional_mean(fixture):
    frame, _ = fixture
    truth = _truth(frame)
    x, y = truth["oracle"].to_numpy(), truth["realised"].to_numpy()
    slope = np.cov(x, y)[0, 1] / np.var(x, ddof=1)
    se = np.std(y - slope * x) / (np.std(x) * np.sqrt(len(x)))
    assert abs(slope - 1.0) < 4 * se  # E[r_{t+1} | inputs at t] = oracle: slope 1
    # its correlation with the next return is about √(a² + b²) (u has near-unit variance)
    assert np.corrcoef(x, y)[0, 1] == pytest.approx(np.hypot(EDGE, AUTOCORR), abs=0.015)
    # and the oracle is a linear function of the inputs at t: ret and f01..f04
    inputs = frame.loc[truth.index, ["ret", "f01", "f02", "f03", "f04"]].to_numpy()
    design = np.column_stack([inputs, np.ones(len(inputs))])
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    np.testing.assert_allclose(design @ coef, x, atol=1e-6)
    assert coef[0] == pytest.approx(AUTOCORR, rel=1e-4)  # ret enters with the lag-1 loading
