"""One-pass inference equals the per-window path, for models trained at every position.

With ``training.supervision=all`` the model's output at row t reads rows t−W+1..t only,
so running each symbol's history in long chunks must give the numbers one forward
pass per window gives (to float rounding), for every head and with market state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import training_model
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.inference.one_pass import CHUNK_POSITIONS, chunk_plan
from market_nn_plus_ultra.training import train
from tests.training._train_cases import fixture_db, tiny_config

COLUMNS = ["position", "forecast"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    # long enough that a symbol's history spans several chunks of CHUNK_POSITIONS rows
    return fixture_db(tmp_path_factory.mktemp("one_pass"), rows=1300)


def _agent(db, tmp, *overrides: str) -> Agent:
    cfg = tiny_config(
        db, tmp / "run", "windows.window=12", "model.depth=2", "training.max_steps=4", *overrides
    )
    assert training_model(cfg).receptive_field == 12
    train(cfg)
    return Agent.from_checkpoint(tmp / "run", device="cpu")


def _both(agent: Agent, db) -> tuple[pd.DataFrame, pd.DataFrame]:
    fast = agent.predict(db, one_pass=True, batch_size=64)
    slow = agent.predict(db, one_pass=False, batch_size=64)
    return fast, slow


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.head=quantile_dirichlet", "model.architecture=state_space"),
        ("model.market_state_embedding=true", "model.architecture=moe_transformer"),
    ],
    ids=["regression-hybrid", "quantile_dirichlet-ssm", "market_state-moe"],
)
def test_one_pass_equals_per_window(db, tmp_path, overrides):
    agent = _agent(db, tmp_path, *overrides)
    fast, slow = _both(agent, db)
    assert len(fast) == len(slow) > 2 * CHUNK_POSITIONS
    pd.testing.assert_frame_equal(
        fast.drop(columns=[c for c in fast if c in COLUMNS or c.startswith(("q", "prob_"))]),
        slow.drop(columns=[c for c in slow if c in COLUMNS or c.startswith(("q", "prob_"))]),
    )
    numeric = [c for c in fast if c in COLUMNS or c.startswith(("q", "prob_"))]
    assert set(numeric) >= set(COLUMNS)
    np.testing.assert_allclose(fast[numeric], slow[numeric], atol=1e-5, rtol=1e-5)


def test_one_pass_is_the_default_for_models_trained_at_every_position(db, tmp_path):
    agent = _agent(db, tmp_path)
    default = agent.predict(db, batch_size=64)
    fast = agent.predict(db, one_pass=True, batch_size=64)
    pd.testing.assert_frame_equal(default, fast)


def test_chunk_plan_places_every_cell_once():
    t = np.array([5, 6, 7, 30, 31, 9, 10, 40])
    s = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    chunks, chunk_of, offset = chunk_plan(t, s, window=4, positions=10)
    lo = chunks[chunk_of, 0]
    np.testing.assert_array_equal(lo + offset, t)  # each cell's row inside its chunk
    np.testing.assert_array_equal(chunks[chunk_of, 1], s)
    assert (offset >= 3).all() and (offset < 10 + 3).all()  # W − 1 rows of context before it
    assert (chunks[:, 0] >= 0).all()


def test_last_step_models_keep_the_per_window_path(db, tmp_path):
    cfg = tiny_config(
        db,
        tmp_path / "run",
        "windows.window=12",
        "training.supervision=last",
        "training.max_steps=4",
    )
    train(cfg)
    agent = Agent.from_checkpoint(tmp_path / "run", device="cpu")
    assert agent.config.model.receptive_field is None
    with torch.no_grad():
        frame = agent.predict(db, batch_size=256)
    assert len(frame) > 0
