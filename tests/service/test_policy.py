"""An rl-finetune run folder is served like a supervised one: the policy's replayed
position at the last bar equals PolicyAgent.predict on the same bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.rl.finetune import finetune
from tests.rl._finetune_cases import rl_config
from tests.service._service_cases import bars_from_db, last_rows, ready_app, service_config


@pytest.fixture(scope="module")
def policy_dir(market_db, run_dir, tmp_path_factory):
    """Three PPO updates on the session's supervised run (a few seconds)."""
    tmp = tmp_path_factory.mktemp("policy")
    return finetune(rl_config(market_db, tmp), run_dir, output_dir=tmp / "rl").run_dir


def test_a_policy_run_is_served_with_its_replayed_positions(market_db, policy_dir, tmp_path):
    agent = Agent.from_checkpoint(policy_dir, device="cpu")
    app = ready_app(service_config(market_db, tmp_path), policy_dir)
    min_bars = app.state.service.holder.current.predictor.min_bars
    assert min_bars == 8 + 64 + 1  # one bar more than a full window: the replay's first step
    with TestClient(app) as c:  # the bars: the whole database (the policy replays from bar 8)
        response = c.post("/predict", json={"bars": bars_from_db(agent, market_db)})
        short = bars_from_db(agent, market_db, tail=min_bars - 1)
        too_few = c.post("/predict", json={"bars": short})
        enough = c.post("/predict", json={"bars": bars_from_db(agent, market_db, tail=min_bars)})
    assert response.status_code == 200, response.text
    assert enough.status_code == 200, enough.text
    served = pd.DataFrame(response.json()["predictions"]).set_index("symbol")
    reference = last_rows(agent.predict(market_db))
    np.testing.assert_allclose(served["model_position"], reference["position"], atol=1e-6)
    np.testing.assert_allclose(served["value"], reference["value"], atol=1e-6)
    assert too_few.status_code == 422 and "+ 1 to replay the policy from" in too_few.text
