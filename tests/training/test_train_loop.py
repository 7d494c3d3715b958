"""train(): outputs, reproducibility, exact mid-epoch resume, checkpoint errors, metrics."""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.data import read_table
from market_nn_plus_ultra.training.metrics import cross_section_ic, split_metrics
from market_nn_plus_ultra.training.module import TradingModule, warmup_cosine
from market_nn_plus_ultra.training.train import CheckpointError, train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("loop"), rows=400)


class _Killed(RuntimeError):
    pass


class _KillAt(L.Callback):
    """Raise after optimiser step ``step`` — a run dying mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise _Killed(f"killed at step {trainer.global_step}")


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu")["state_dict"]


def test_outputs_and_checkpoints(db, tmp_path):
    cfg = tiny_config(db, tmp_path / "run", "model.dropout=0.1")
    result = train(cfg)
    out = tmp_path / "run"
    assert result.best_checkpoint == out / "best.ckpt" and result.best_checkpoint.exists()
    assert result.last_checkpoint == out / "last.ckpt"
    assert load_config(result.config_path) == cfg  # the resolved config reloads equal
    info = json.loads(result.model_info_path.read_text())
    assert info["symbols"] == ["AAA", "BBB"] and info["window"] == 8 and info["horizon"] == 1
    assert info["n_features"] == len(info["feature_columns"])
    assert info["periods_per_year"] == pytest.approx(252, rel=0.05)
    assert (out / "logs" / "csv" / "metrics.csv").exists()
    for key in ("val_loss", "val_ic", "val_sharpe", "test_ic", "test_directional_accuracy"):
        assert math.isfinite(result.metrics[key]), key
    saved = json.loads(result.metrics_path.read_text())
    assert saved["metrics"]["test_ic"] == pytest.approx(result.metrics["test_ic"])

    preds = pd.read_parquet(result.test_predictions)
    assert list(preds.columns) == [
        "timestamp",
        "symbol",
        "position",
        "forecast",
        "realised_return",
    ]
    assert preds["position"].between(-1, 1).all()
    # the logged test IC is the Spearman correlation of the saved predictions
    ic = spearmanr(preds["forecast"], preds["realised_return"]).statistic
    assert result.metrics["test_ic"] == pytest.approx(ic, abs=1e-5)
    # realised_return is the close-to-close return from t to t+1, straight from the database
    series = read_table(db, "series").sort_values(["symbol", "timestamp"])
    series["next"] = series.groupby("symbol")["close"].shift(-1) / series["close"] - 1
    joined = preds.merge(series[["timestamp", "symbol", "next"]], on=["timestamp", "symbol"])
    assert len(joined) == len(preds)
    np.testing.assert_allclose(joined["realised_return"], joined["next"], rtol=1e-5)
    module = TradingModule.load_from_checkpoint(result.best_checkpoint)
    assert module.hparams["n_features"] == info["n_features"]


def test_same_seed_same_numbers(db, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(db, tmp_path / name, "model.dropout=0.1", "training.max_epochs=2")
        runs.append(train(cfg))
    assert runs[0].metrics == runs[1].metrics
    a, b = _weights(runs[0].last_checkpoint), _weights(runs[1].last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_run_resumes_to_the_same_end(db, tmp_path):
    args = ("model.dropout=0.1", "training.max_epochs=2", "training.checkpoint_every_n_steps=2")
    whole = train(tiny_config(db, tmp_path / "whole", *args))
    steps_per_epoch = whole.global_step // 2
    kill = steps_per_epoch + 3  # mid-way through the second epoch
    cfg = tiny_config(db, tmp_path / "killed", *args)
    with pytest.raises(_Killed):
        train(cfg, callbacks=[_KillAt(kill)])
    saved = sorted((tmp_path / "killed" / "steps").glob("step-*.ckpt"))
    resume_from = saved[-1]
    step = int(resume_from.stem.split("-")[1])
    assert step == (kill // 2) * 2 and steps_per_epoch < step < kill
    resumed = train(cfg, resume=resume_from)
    assert resumed.global_step == whole.global_step
    a, b = _weights(whole.last_checkpoint), _weights(resumed.last_checkpoint)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert resumed.metrics["val_loss"] == pytest.approx(whole.metrics["val_loss"], rel=1e-5)
    assert resumed.metrics["test_ic"] == pytest.approx(whole.metrics["test_ic"], abs=1e-5)


def test_resume_errors_name_the_problem(db, tmp_path):
    cfg = tiny_config(db, tmp_path / "run")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(cfg, resume=tmp_path / "missing.ckpt")
    first = train(cfg)
    wider = tiny_config(db, tmp_path / "run", "model.d_model=32")
    with pytest.raises(CheckpointError, match=r"model\.d_model: checkpoint 16, config 32"):
        train(wider, resume=first.last_checkpoint)
    with pytest.raises(CheckpointError, match="no such file"):
        train(cfg, pretrain_checkpoint=tmp_path / "nope.pt")


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 14, 0.1) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 14, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 14, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(9, 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos = 0
    assert warmup_cosine(14, 4, 14, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 10, 0.0) == pytest.approx(1.0)


def test_split_metrics_hand_computed():
    t = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0, 1, 2, 0, 1, 2])
    forecast = np.array([0.1, 0.2, 0.3, 0.3, 0.2, 0.1])
    realised = np.array([0.01, 0.02, 0.03, 0.01, 0.03, 0.02])
    # bar 0: ranks agree (1); bar 1: f ranks (3,2,1), r ranks (1,3,2) → ρ = -0.5
    assert cross_section_ic(t, forecast, realised) == pytest.approx((1.0 - 0.5) / 2)
    m = split_metrics(t, s, forecast, np.ones(6), realised, cost_bps=10.0)
    assert m["ic"] == pytest.approx(spearmanr(forecast, realised).statistic)
    assert m["directional_accuracy"] == 1.0
    # long 1 everywhere: bar 0 pays 10 bps to enter on each symbol, bar 1 trades nothing
    net = np.array([0.02 - 0.001, 0.02])
    assert m["sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
