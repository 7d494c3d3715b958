"""PolicyAgent: predicting from an rl-finetune run folder — the supervised run's frame when
the policy has not moved, the env's own portfolio path, causality, ranges, warm starts."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.predictions import check_predictions
from market_nn_plus_ultra.evaluation.sample import METADATA_KEY
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.inference.policy_agent import PolicyAgent
from market_nn_plus_ultra.models import build_model
from market_nn_plus_ultra.rl import ActorCritic, VectorTradingEnv, read_supervised
from market_nn_plus_ultra.rl.finetune import finetune
from market_nn_plus_ultra.training import CheckpointError
from market_nn_plus_ultra.training.warm_start import save_backbone
from tests.rl._finetune_cases import rl_config, supervised_run

KEY = ["timestamp", "symbol"]


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    torch.set_num_threads(1)
    return supervised_run(tmp_path_factory.mktemp("policy_agent"))


@pytest.fixture(scope="module")
def run(supervised, tmp_path_factory):
    """Three updates at a real learning rate: the actor reads the portfolio by now."""
    result, db = supervised
    tmp = tmp_path_factory.mktemp("rl")
    return finetune(rl_config(db, tmp), result.checkpoint_dir, output_dir=tmp / "rl").run_dir


@pytest.fixture(scope="module")
def predictions(run, supervised):
    return Agent.from_checkpoint(run, device="cpu").predict(supervised[1])


def test_from_checkpoint_finds_the_policy(run):
    for path in (run, run / "policy.pt"):
        agent = Agent.from_checkpoint(path, device="cpu")
        assert isinstance(agent, PolicyAgent) and agent.checkpoint == run / "policy.pt"
        assert agent.head is not None and not agent.policy.training
    assert agent.stage_settings["window"] == agent.window == 8


def test_an_unmoved_policy_predicts_what_the_supervised_run_does(supervised, tmp_path):
    # warm-started actor = the supervised position; at lr 1e-12 the update changes nothing
    result, db = supervised
    cfg = rl_config(
        db, tmp_path, "reinforcement.ppo.learning_rate=1e-12", "reinforcement.updates=1"
    )
    folder = finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "rl").run_dir
    policy = Agent.from_checkpoint(folder, device="cpu").predict(db)
    sup = Agent.from_checkpoint(result.checkpoint_dir, device="cpu").predict(db)
    columns = list(sup.columns)
    assert list(policy.columns) == [*columns[:4], "value", *columns[4:]]
    pd.testing.assert_frame_equal(policy[KEY], sup[KEY])
    np.testing.assert_allclose(policy["position"], sup["position"], atol=1e-6)
    np.testing.assert_allclose(policy["forecast"], sup["forecast"], atol=1e-7)
    for column in ("realised_return", "benchmark_return", "sample"):
        pd.testing.assert_series_equal(policy[column], sup[column])
    bounds = {k: v for k, v in policy.attrs[METADATA_KEY].items() if k != "run"}
    assert bounds == {k: v for k, v in sup.attrs[METADATA_KEY].items() if k != "run"}


def test_the_predictions_contract(predictions):
    frame = check_predictions(predictions)  # finite, in [-1, 1], unique sorted keys
    assert str(frame["timestamp"].dt.tz) == "UTC" and set(frame["symbol"]) == {"AAA", "BBB"}
    assert frame["position"].between(-1, 1).all() and frame["value"].notna().all()
    assert frame["forecast"].notna().all()
    assert set(frame["sample"]) == {"train", "val", "test"}
    # one critic value per bar: the portfolio's, the same for every symbol
    assert (frame.groupby("timestamp")["value"].nunique() == 1).all()


def test_positions_replay_the_environment(run, predictions):
    # an episode of the env built the training way (from the config), stepped by hand
    agent = Agent.from_checkpoint(run, device="cpu")
    rows = 30
    overrides = ["reinforcement.env.split=all", f"reinforcement.env.episode_length={rows}"]
    env = VectorTradingEnv.from_config(load_config(run / "config.yaml", overrides), 1)
    first = int(env.start_rows.min())  # the first bar with a full window
    obs, _ = env.reset(options={"start_rows": [first]})
    stamps, symbols = env.market.tensors.timestamps, list(env.market.tensors.symbols)
    assert stamps[first] == predictions["timestamp"].min()
    wide = predictions.pivot(index="timestamp", columns="symbol", values="position")[symbols]
    values = predictions.groupby("timestamp")["value"].first()
    gaps = []
    with torch.no_grad():
        for k in range(rows):
            out = agent.policy(obs)
            action = ActorCritic.mode(out)  # (1, S)
            np.testing.assert_allclose(action[0], wide.loc[stamps[first + k]], atol=1e-6)
            assert float(out.value[0]) == pytest.approx(values[stamps[first + k]], abs=1e-6)
            flat = agent.policy({**obs, "portfolio": torch.zeros_like(obs["portfolio"])})
            gaps.append(float((ActorCritic.mode(flat) - action).abs().max()))
            obs, *_ = env.step(action)
    assert max(gaps) > 1e-4  # the portfolio the env evolves does move the actor


def test_a_position_at_t_ignores_later_rows(run, supervised, predictions, tmp_path):
    _, db = supervised
    cut = predictions["timestamp"].sort_values().unique()[-60]
    changed = tmp_path / "changed.db"
    shutil.copy(db, changed)
    with sqlite3.connect(changed) as con:  # a different future: prices x1.5 after the cut
        con.execute(
            "UPDATE series SET open=open*1.5, high=high*1.5, low=low*1.5, close=close*1.5, "
            "volume=volume*3 WHERE timestamp > ?",
            (cut.strftime("%Y-%m-%dT%H:%M:%SZ"),),
        )
    after = Agent.from_checkpoint(run, device="cpu").predict(changed).set_index(KEY)
    before = predictions.set_index(KEY)
    past = before[before.index.get_level_values("timestamp") <= cut]
    for column in ("position", "value", "forecast"):
        np.testing.assert_allclose(after.loc[past.index, column], past[column], atol=1e-6)
    later = after.drop(past.index)
    assert not np.allclose(later["position"], before.loc[later.index, "position"], atol=1e-4)


def test_start_and_end_only_select_rows(run, supervised, predictions):
    agent = Agent.from_checkpoint(run, device="cpu")
    stamps = predictions["timestamp"].sort_values().unique()
    calls = []
    part = agent.predict(
        supervised[1], start=stamps[100], end=stamps[120], on_batch=lambda *a: calls.append(a)
    )
    assert part["timestamp"].min() == stamps[100] and part["timestamp"].max() == stamps[120]
    full = predictions.set_index(KEY).loc[part.set_index(KEY).index]
    for column in ("position", "value"):  # the replay always starts at the first bar
        np.testing.assert_array_equal(part[column], full[column])
    np.testing.assert_allclose(part["forecast"], full["forecast"], atol=1e-8)
    assert calls and calls[-1][0] == calls[-1][1]
    empty = agent.predict(supervised[1], start="2100-01-01")
    assert len(empty) == 0 and {"position", "forecast", "value"} <= set(empty.columns)


def test_a_pretraining_backbone_gives_no_forecast(supervised, tmp_path):
    result, db = supervised
    model, n_features, _, _ = read_supervised(result.checkpoint_dir)
    columns = list(pd.read_json(result.model_info_path, typ="series")["feature_columns"])
    path = save_backbone(tmp_path / "b.pt", build_model(model, n_features).backbone, model, columns)
    cfg = rl_config(db, tmp_path, "reinforcement.updates=1")
    folder = finetune(
        cfg, result.checkpoint_dir, warm_start_checkpoint=path, output_dir=tmp_path / "rl"
    ).run_dir
    agent = Agent.from_checkpoint(folder, device="cpu")
    frame = agent.predict(db)
    assert agent.head is None and frame["forecast"].isna().all()
    check_predictions(frame)  # a NaN forecast is allowed; positions are what is scored
    scored = backtest(frame[frame["sample"] == "test"], cost_bps=5.0)
    assert scored.metrics["n_periods"] > 20


def test_a_discrete_policy_holds_short_flat_or_long(supervised, tmp_path):
    result, db = supervised
    cfg = rl_config(db, tmp_path, "reinforcement.env.action=discrete", "reinforcement.updates=1")
    folder = finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "rl").run_dir
    frame = Agent.from_checkpoint(folder, device="cpu").predict(db, start="2020-01-01")
    assert len(frame) and set(frame["position"].unique()) <= {-1.0, 0.0, 1.0}


def test_a_foreign_policy_file_is_refused(run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    torch.save({"format": "something_else"}, folder / "policy.pt")
    with pytest.raises(CheckpointError, match="not a policy written by `plus-ultra rl-finetune`"):
        Agent.from_checkpoint(folder, device="cpu")
