"""The predictions contract: finite positions in [-1, 1], unique sorted keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.predictions import check_predictions


def _frame() -> pd.DataFrame:
    stamps = pd.date_range("2021-01-04", periods=30, freq="B", tz="UTC")
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "timestamp": np.repeat(stamps, 2),
            "symbol": np.tile(["AAA", "BBB"], 30),
            "position": rng.uniform(-1, 1, 60),
            "realised_return": rng.normal(0, 0.01, 60),
        }
    )


@pytest.mark.parametrize("value", [3.0, -7.5])
def test_positions_outside_the_unit_interval_are_refused(value):
    frame = _frame()
    frame.loc[7, "position"] = value
    with pytest.raises(ValueError, match=rf"1 positions lie outside \[-1, 1\].*\({value:g}\)"):
        backtest(frame)
    with pytest.raises(ValueError, match="--clip-positions"):
        check_predictions(frame)
    clipped = backtest(frame, clip_positions=True)
    expected = frame.assign(position=frame["position"].clip(-1, 1))
    assert clipped.metrics["sharpe"] == pytest.approx(backtest(expected).metrics["sharpe"])


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_positions_are_refused(value):
    frame = _frame()
    frame.loc[3, "position"] = value
    with pytest.raises(ValueError, match=r"1 rows are NaN, infinite.*2021-01-05.*BBB"):
        backtest(frame)


def test_duplicated_and_conflicting_keys_are_refused():
    frame = _frame()
    same = pd.concat([frame, frame.iloc[[4]]]).sort_values(["timestamp", "symbol"])
    with pytest.raises(ValueError, match=r"1 duplicated \(timestamp, symbol\) rows, first"):
        backtest(same)
    other = frame.iloc[[4]].assign(position=-frame["position"].iloc[4])
    conflicting = pd.concat([frame, other]).sort_values(["timestamp", "symbol"])
    with pytest.raises(ValueError, match="1 of them with conflicting positions"):
        backtest(conflicting)


def test_unsorted_files_are_refused_at_the_file_boundary_only():
    frame = _frame()
    shuffled = frame.sample(frac=1.0, random_state=0)
    with pytest.raises(ValueError, match=r"not sorted by \(timestamp, symbol\).*sort_values"):
        check_predictions(shuffled)
    # the library backtest takes any order and gives the same numbers
    assert backtest(shuffled).metrics == pytest.approx(backtest(frame).metrics, nan_ok=True)
    assert check_predictions(frame) is frame
