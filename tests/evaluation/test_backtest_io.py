"""``backtest_file``: one typed run per predictions file; the cost comes from one place."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import EvaluationConfig, SimulationConfig
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.backtest_io import BacktestRun, backtest_file


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    ts = pd.date_range("2024-01-02", periods=60, freq="B", tz="UTC")
    n = len(ts) * 2
    frame = pd.DataFrame(
        {
            "timestamp": np.repeat(ts, 2),
            "symbol": np.tile(["AAA", "BBB"], len(ts)),
            "position": rng.uniform(-1, 1, n),
            "realised_return": rng.normal(0.0005, 0.01, n),
            "dollar_volume": 5e6,
        }
    )
    frame.loc[frame.timestamp == ts[-1], "realised_return"] = np.nan
    return frame


@pytest.fixture
def path(tmp_path, frame):
    target = tmp_path / "p.parquet"
    frame.to_parquet(target)
    return target


def test_convention_uses_evaluation_cost_and_leaves_configs_alone(path, frame):
    evaluation, simulation = EvaluationConfig(cost_bps=3.0), SimulationConfig(cost_bps=9.0)
    run = backtest_file(path, evaluation, simulation)
    assert isinstance(run, BacktestRun) and not run.simulator and run.cost_bps == 3.0
    assert run.metrics["sharpe"] == pytest.approx(backtest(frame, cost_bps=3.0).metrics["sharpe"])
    assert run.title == "Backtest (convention, 3 bps; sample unknown)"
    explicit = backtest_file(path, evaluation, simulation, cost_bps=8.0)
    assert explicit.cost_bps == 8.0
    assert explicit.metrics["sharpe"] == pytest.approx(
        backtest(frame, cost_bps=8.0).metrics["sharpe"]
    )
    # the old command wrote --cost-bps into both sections; the library changes neither
    assert evaluation.cost_bps == 3.0 and simulation.cost_bps == 9.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.cost_bps = 1.0  # type: ignore[misc]


def test_simulator_uses_simulation_cost(path, frame):
    run = backtest_file(path, EvaluationConfig(cost_bps=3.0), SimulationConfig(enabled=True))
    assert run.simulator and run.cost_bps == 5.0 and run.metrics["cost_bps"] == 5.0
    # no friction on: the simulator at 5 bps is the convention at 5 bps
    expected = backtest(frame, cost_bps=5.0).metrics
    assert run.metrics["total_return"] == pytest.approx(expected["total_return"], rel=1e-12)
    assert run.title == "Backtest (execution simulator; sample unknown)"


def test_convention_stress_paths_carry_no_friction(path):
    # frictions set in the config but the simulator off: the stress paths must ignore them
    simulation = SimulationConfig(
        impact_coef=2.0, half_spread_bps=50.0, fixed_cost=100.0, scenarios=2,
        scenario_resample=False,
    )  # fmt: skip
    seen: list[int] = []
    run = backtest_file(path, EvaluationConfig(cost_bps=4.0), simulation, on_chunk=seen.append)
    assert seen == [2] and run.stress is not None
    p50 = run.stress.summary["percentiles"]["total_return"]["p50"]
    assert p50 == pytest.approx(run.metrics["total_return"], rel=1e-5)


def test_to_dict_and_write_are_strict_json(path, tmp_path):
    run = backtest_file(path, EvaluationConfig(), SimulationConfig())
    payload = run.to_dict()
    assert payload["simulator"] is False and "scenarios" not in payload
    assert payload["sample"]["scored"] == "as_given"
    nan_run = dataclasses.replace(
        run, result=dataclasses.replace(run.result, metrics={**run.metrics, "sharpe": np.nan})
    )
    out = nan_run.write(tmp_path / "m" / "metrics.json")
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["sharpe"] is None and written["n_periods"] == run.metrics["n_periods"] == 59
