"""Validation/test metrics score the simple return t → t+1, whatever windows.target is."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.training.module import TradingModule
from market_nn_plus_ultra.windows import MarketTensors, SlidingWindowDataset
from tests.training._train_cases import TINY


def _panel(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    """One symbol whose closes move +30% or -25% a bar, and its next simple returns by hand.

    With such moves the mean simple return is positive (+0.3 and -0.25 average +0.025)
    while the mean log return is negative (log 1.3 + log 0.75 < 0): a Sharpe computed on
    the wrong kind of return has the wrong sign.
    """
    rng = np.random.default_rng(0)
    step = np.where(rng.random(n - 1) < 0.5, 1.3, 0.75)
    close = 100.0 * np.concatenate([[1.0], np.cumprod(step)])
    days = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    frame = pd.DataFrame(
        {"timestamp": days, "symbol": "AAA", "close": close, "x": rng.normal(size=n)}
    )
    simple = np.append(step - 1.0, np.nan)  # return from bar t to t+1
    return frame.set_index(["timestamp", "symbol"]), simple


def _sharpe(returns: np.ndarray) -> float:
    return float(np.mean(returns) / np.std(returns, ddof=1) * math.sqrt(252))


@pytest.mark.parametrize("target", ["log_return", "simple_return"])
def test_validation_metrics_use_simple_returns(target):
    panel, simple = _panel()
    tensors = MarketTensors.from_panel(panel, ["close", "x"], horizon=1, target=target)
    ds = SlidingWindowDataset(tensors, 8, normalise="window_zscore")
    cfg = load_config(overrides=[*TINY, "training.cost_bps=0", f"windows.target={target}"])
    L.seed_everything(0, verbose=False)
    module = TradingModule(cfg.model, cfg.training, n_features=2, periods_per_year=252.0)
    loader = DataLoader(ds, batch_size=None, sampler=BatchSampler(SequentialSampler(ds), 16, False))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(module, dataloaders=loader, verbose=False)

    got = module.collected("val")
    t = got["t"].astype(int)
    np.testing.assert_array_equal(t, np.arange(7, 59))  # every end row with a next close
    np.testing.assert_allclose(got["realised"], simple[t], rtol=1e-6)  # simple, not log
    # the PnL the validation Sharpe scores, by hand: position_t × simple return (no costs)
    position = np.clip(got["position"].astype(np.float64), -1, 1)
    expected = _sharpe(position * simple[t])
    wrong = _sharpe(position * np.log1p(simple[t]))
    assert abs(expected - wrong) > 0.5  # the case tells the two apart
    assert float(trainer.callback_metrics["val_sharpe"]) == pytest.approx(expected, rel=1e-4)


def test_forecasts_are_simple_returns_under_a_log_target(tmp_path):
    """The predictions file's forecast and quantiles are simple returns whatever the target."""
    from market_nn_plus_ultra.inference import Agent
    from market_nn_plus_ultra.training import train
    from tests.training._train_cases import fixture_db, tiny_config

    db = fixture_db(tmp_path, rows=200)
    cfg = tiny_config(db, tmp_path / "run", "windows.target=log_return")
    result = train(cfg)
    agent = Agent.from_checkpoint(result.checkpoint_dir, device="cpu")
    frame = agent.predict(db)
    raw = agent.model(torch.zeros(1, agent.window, agent.model_info["n_features"]))
    assert agent.config.windows.target == "log_return"
    tested = pd.read_parquet(result.test_predictions)
    merged = tested.merge(frame, on=["timestamp", "symbol"], suffixes=("_run", ""))
    np.testing.assert_allclose(merged["forecast"], merged["forecast_run"], atol=1e-6)
    expected = np.expm1(raw.forecast[0, 0].item())
    assert agent._columns(raw)["forecast"][0] == pytest.approx(expected, rel=1e-6)
