"""Agent: checkpoint restore, the predictions contract, causality, errors, GPU path."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.data import read_table
from market_nn_plus_ultra.inference import Agent, benchmark_returns
from market_nn_plus_ultra.training import CheckpointError, train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("agent"), rows=300)


@pytest.fixture(scope="module")
def run(db, tmp_path_factory):
    """A tiny trained run whose inputs are scaled by training-split statistics."""
    out = tmp_path_factory.mktemp("run") / "run"
    result = train(tiny_config(db, out, "windows.normalise=train_zscore"))
    return result


@pytest.fixture(scope="module")
def predictions(run, db):
    return Agent.from_checkpoint(run.checkpoint_dir, device="cpu").predict(db, batch_size=50)


def test_test_split_matches_the_training_run(run, predictions):
    tested = pd.read_parquet(run.test_predictions)
    merged = tested.merge(predictions, on=["timestamp", "symbol"], suffixes=("_run", ""))
    assert len(merged) == len(tested) > 20  # every test window is predicted
    for column in ("position", "forecast", "realised_return"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_run"], atol=1e-6)


def test_normaliser_statistics_travel_with_the_checkpoint(run):
    agent = Agent.from_checkpoint(run.best_checkpoint, device="cpu")
    state = agent.normaliser_state
    assert state is not None and state["symbols"] == ["AAA", "BBB"]
    assert tuple(state["mean"].shape) == (2, agent.model_info["n_features"])
    assert agent.checkpoint == run.best_checkpoint and not agent.model.training


def test_predictions_contract(predictions, db):
    frame = predictions
    assert list(frame.columns[:4]) == ["timestamp", "symbol", "position", "forecast"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert not frame.duplicated(["timestamp", "symbol"]).any()
    assert frame["position"].between(-1, 1).all() and frame["forecast"].notna().all()
    # realised_return: close-to-close t → t+1 recomputed from the series table
    series = read_table(db, "series").sort_values(["symbol", "timestamp"])
    series["expected"] = series.groupby("symbol")["close"].shift(-1) / series["close"] - 1
    merged = frame.merge(series[["timestamp", "symbol", "expected"]], on=["timestamp", "symbol"])
    assert len(merged) == len(frame)
    np.testing.assert_allclose(merged["realised_return"], merged["expected"], rtol=1e-5)
    last = frame.groupby("symbol")["timestamp"].transform("max") == frame["timestamp"]
    assert frame.loc[last, "realised_return"].isna().all()
    # every window-complete bar after the features' warm-up is predicted, up to the newest
    assert frame["timestamp"].max() == series["timestamp"].max()


def test_benchmark_from_the_benchmarks_table(predictions, db):
    levels = read_table(db, "benchmarks")
    ew = levels[levels["name"] == "equal_weight"].set_index("timestamp")["value"].sort_index()
    expected = (ew.shift(-1) / ew - 1).reindex(pd.DatetimeIndex(predictions["timestamp"]))
    np.testing.assert_allclose(predictions["benchmark_return"], expected.to_numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="Did you mean 'equal_weight'"):
        benchmark_returns(predictions, db, "equal_weigth")


def test_benchmark_falls_back_to_equal_weight_of_the_symbols(tmp_path):
    db = tmp_path / "bare.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE series (timestamp TEXT, symbol TEXT)")
    stamps = pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02"], utc=True)
    frame = pd.DataFrame(
        {"timestamp": stamps, "symbol": list("ABAB"), "realised_return": [0.1, 0.3, -0.2, np.nan]}
    )
    np.testing.assert_allclose(benchmark_returns(frame, db), [0.2, 0.2, -0.2, -0.2])
    with pytest.raises(ValueError, match="no `benchmarks` table"):
        benchmark_returns(frame, db, "spy")


def test_a_prediction_at_t_ignores_later_rows(run, db, tmp_path, predictions):
    cut = predictions["timestamp"].sort_values().unique()[-40]
    changed = tmp_path / "changed.db"
    shutil.copy(db, changed)
    with sqlite3.connect(changed) as con:  # a different future: prices x1.5 after the cut
        con.execute(
            "UPDATE series SET open=open*1.5, high=high*1.5, low=low*1.5, close=close*1.5, "
            "volume=volume*3 WHERE timestamp > ?",
            (cut.strftime("%Y-%m-%dT%H:%M:%SZ"),),
        )
    after = Agent.from_checkpoint(run.checkpoint_dir, device="cpu").predict(changed)
    key = ["timestamp", "symbol"]
    past = predictions[predictions["timestamp"] <= cut].set_index(key)
    new = after.set_index(key).loc[past.index]
    np.testing.assert_allclose(new["position"], past["position"], atol=1e-6)
    np.testing.assert_allclose(new["forecast"], past["forecast"], atol=1e-7)
    later = after.set_index(key).drop(past.index)
    assert not np.allclose(
        later["forecast"], predictions.set_index(key).loc[later.index, "forecast"]
    )


def test_range_and_symbol_selection(run, db, predictions):
    agent = Agent.from_checkpoint(run.checkpoint_dir, device="cpu")
    stamps = predictions["timestamp"].sort_values().unique()
    start, end = stamps[10], stamps[30]
    calls = []
    part = agent.predict(
        db,
        symbols=["BBB"],
        start=start,
        end=end.isoformat(),
        batch_size=8,
        on_batch=lambda *a: calls.append(a),
    )
    assert set(part["symbol"]) == {"BBB"} and len(part) == 21
    assert part["timestamp"].min() == start and part["timestamp"].max() == end
    assert calls and calls[-1][0] == calls[-1][1]  # progress ends at its total
    # a symbol's predictions do not depend on which others are read beside it
    full = predictions.set_index(["timestamp", "symbol"]).loc[
        part.set_index(["timestamp", "symbol"]).index
    ]
    np.testing.assert_allclose(part["position"], full["position"], atol=1e-6)
    empty = agent.predict(db, start="2100-01-01")
    assert len(empty) == 0 and {"position", "forecast", "realised_return"} <= set(empty.columns)


def test_unknown_symbol_under_train_statistics(run, db):
    agent = Agent.from_checkpoint(run.checkpoint_dir, device="cpu")
    with pytest.raises(ValueError, match="were not in the training run"):
        agent._normaliser(["AAA", "ZZZ"])


def test_checkpoint_errors(run, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Agent.from_checkpoint(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no best\.ckpt or last\.ckpt"):
        Agent.from_checkpoint(empty)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run.best_checkpoint, lone / "best.ckpt")
    with pytest.raises(CheckpointError, match=r"config\.yaml is missing"):
        Agent.from_checkpoint(lone)
    broken = tmp_path / "broken"
    shutil.copytree(run.checkpoint_dir, broken, ignore=shutil.ignore_patterns("*.ckpt", "logs"))
    (broken / "best.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Agent.from_checkpoint(broken)
    other = tmp_path / "other"
    shutil.copytree(run.checkpoint_dir, other, ignore=shutil.ignore_patterns("logs"))
    ckpt = torch.load(other / "best.ckpt", map_location="cpu", weights_only=False)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "head" not in k}
    torch.save(ckpt, other / "best.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        Agent.from_checkpoint(other)
    with pytest.raises(ValueError, match="use cpu, cuda:0 or auto"):
        Agent.from_checkpoint(run.checkpoint_dir, device="tpu:9")


def test_quantile_and_probability_columns(db, tmp_path):
    result = train(tiny_config(db, tmp_path / "q", "model.head=quantile_dirichlet"))
    frame = Agent.from_checkpoint(result.checkpoint_dir, device="cpu").predict(db)
    for column in ("prob_down", "prob_flat", "prob_up", "q05", "q50", "q95"):
        assert frame[column].notna().all(), column
    probs = frame[["prob_down", "prob_flat", "prob_up"]].sum(axis=1)
    np.testing.assert_allclose(probs, 1.0, atol=1e-5)
    assert (frame["q05"] <= frame["q50"]).all() and (frame["q50"] <= frame["q95"]).all()
    tested = pd.read_parquet(result.test_predictions)
    merged = tested.merge(frame, on=["timestamp", "symbol"], suffixes=("_run", ""))
    np.testing.assert_allclose(merged["position"], merged["position_run"], atol=1e-6)


@pytest.mark.gpu
def test_cuda_bf16_predictions_track_cpu(run, db, predictions):
    frame = Agent.from_checkpoint(run.checkpoint_dir, device="cuda:0").predict(db)
    np.testing.assert_allclose(frame["position"], predictions["position"], atol=0.05)


def test_guardrails_cap_positions_and_record_breaches(run, db):
    from market_nn_plus_ultra.config import GuardrailsConfig

    agent = Agent.from_checkpoint(run.checkpoint_dir, device="cpu")
    free = agent.predict(db)
    assert agent.breaches is None
    capped = agent.predict(db, guardrails=GuardrailsConfig(max_position=0.01))
    assert (capped["position"].abs() <= 0.01 + 1e-12).all()
    over = free["position"].abs() > 0.01
    assert len(agent.breaches) == int(over.sum()) > 0
    assert set(agent.breaches["rule"]) == {"max_position"}
    pd.testing.assert_series_equal(capped["forecast"], free["forecast"])
