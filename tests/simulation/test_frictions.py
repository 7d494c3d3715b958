"""``SimulationConfig.frictions_off``: derived from the field declarations, not a hand list."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import Field

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.stress import simulate_backtest
from tests.simulation.test_execution import _ragged_predictions

# The decision recorded for every field; a new field must be added to one of the two.
FRICTIONS = {
    "fixed_cost": 0.0,
    "half_spread_bps": 0.0,
    "spread_vol_mult": 0.0,
    "impact_coef": 0.0,
    "participation_cap": None,
    "latency_bars": [0],
    "latency_probs": None,
    "borrow_bps": 0.0,
    "leverage_funding_bps": 0.0,
    "funding_column": "",
    "max_position": None,
    "max_gross": None,
}
NOT_FRICTIONS = {
    "enabled",
    "cost_bps",  # the convention's own cost: kept by frictions_off
    "capital",
    "volume_column",
    "volatility_column",
    "vol_window",
    "adv_window",
    "device",
    "seed",
    "scenarios",
    "scenario_resample",
    "scenario_block",
    "scenario_vol_scale",
    "scenario_crash",
    "scenario_chunk",
    "percentiles",
}

EVERY_FRICTION_ON = SimulationConfig(
    cost_bps=7.5,
    fixed_cost=2.0,
    capital=50_000.0,
    half_spread_bps=4.0,
    spread_vol_mult=0.5,
    impact_coef=0.3,
    participation_cap=0.2,
    latency_bars=[0, 1],
    latency_probs=[0.5, 0.5],
    borrow_bps=150.0,
    leverage_funding_bps=200.0,
    funding_column="funding_rate",
    max_position=0.6,
    max_gross=0.5,
    seed=3,
)


def test_every_field_is_declared_a_friction_or_not():
    declared = {
        name: field.json_schema_extra for name, field in SimulationConfig.model_fields.items()
    }
    undeclared = [n for n, extra in declared.items() if not isinstance(extra, dict)]
    assert undeclared == [], f"declare these fields friction or not: {undeclared}"
    assert SimulationConfig.frictions() == FRICTIONS
    not_frictions = {n for n, extra in declared.items() if extra["friction"] is False}
    assert not_frictions == NOT_FRICTIONS
    assert set(FRICTIONS) | NOT_FRICTIONS == set(SimulationConfig.model_fields)


def test_a_new_undeclared_field_is_refused():
    class Extended(SimulationConfig):
        queue_penalty_bps: float = Field(0.0, description="a friction someone forgot to mark")

    with pytest.raises(TypeError, match=r"SimulationConfig.queue_penalty_bps declares neither"):
        Extended.frictions()


def test_frictions_off_keeps_cost_and_the_rest_and_copies():
    off = EVERY_FRICTION_ON.frictions_off()
    for name, value in FRICTIONS.items():
        assert getattr(off, name) == value, name
    for name in NOT_FRICTIONS:
        assert getattr(off, name) == getattr(EVERY_FRICTION_ON, name), name
    assert EVERY_FRICTION_ON.impact_coef == 0.3  # the original is untouched
    off.latency_bars.append(5)  # a list off value is a fresh copy each time
    assert SimulationConfig.frictions()["latency_bars"] == [0]
    assert EVERY_FRICTION_ON.frictions_off().latency_bars == [0]


@pytest.mark.parametrize("seed", [0, 1])
def test_frictions_off_reproduce_the_convention(seed):
    rng = np.random.default_rng(seed)
    frame = _ragged_predictions(seed)
    # Columns every friction would read: they must be ignored once frictions are off.
    frame = frame.assign(
        dollar_volume=rng.uniform(1e3, 1e5, len(frame)),
        volatility=rng.uniform(0.01, 0.05, len(frame)),
        funding_rate=rng.uniform(0.0, 0.01, len(frame)),
    )
    expected = backtest(frame, cost_bps=7.5)
    on, _ = simulate_backtest(frame, EVERY_FRICTION_ON)
    assert on.metrics["total_return"] != pytest.approx(expected.metrics["total_return"])
    got, _ = simulate_backtest(frame, EVERY_FRICTION_ON.frictions_off())
    np.testing.assert_allclose(got.returns.to_numpy(), expected.returns.to_numpy(), atol=1e-12)
    for key, value in expected.metrics.items():
        assert got.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), key
