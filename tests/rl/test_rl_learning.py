"""Done-when: PPO fine-tuning from a supervised run keeps a planted edge out of sample, and
finds nothing in a random walk.

The fixture's return shocks carry a lag-1 autocorrelation (``write_fixture(autocorr=)``).
The desktop preset trains on it, ``finetune`` fine-tunes that run with PPO on episodes
of its training split, and the RL run folder predicts every bar; the positions of the
supervised run's test split — bars neither training nor fine-tuning saw — are backtested
at ``evaluation.cost_bps`` and the t-statistic of the portfolio's mean net return per bar
must be at least 2. On a random walk (no autocorrelation) the same procedure's |t| stays
below 3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.rl.finetune import finetune
from market_nn_plus_ultra.training import train

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
ROWS = 3000
AUTOCORR = 0.2
RL = ["reinforcement.updates=6"]  # the preset's CPU settings: 16 envs x 64 steps, frozen backbone


def _t(returns: np.ndarray) -> float:
    r = returns[np.isfinite(returns)]
    return float(r.mean() / r.std(ddof=1) * math.sqrt(len(r)))


def _run(tmp: Path, autocorr: float) -> tuple[float, float, int]:
    """(t of the fine-tuned policy's test net returns, t of the supervised run's, bars)."""
    db = write_fixture(
        tmp / "market.db",
        symbols=SYMBOLS,
        rows=ROWS,
        freq="1D",
        alt_features=0,
        seed=3,
        autocorr=autocorr,
    )
    cfg = load_config(
        ROOT / "configs" / "default_desktop.yaml",
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"training.checkpoint_dir={tmp / 'run'}",
            "training.progress_bar=false",
            *RL,
        ],
    )
    train(cfg)
    finetune(cfg, tmp / "run", output_dir=tmp / "rl")
    scores = []
    for run in (tmp / "rl", tmp / "run"):
        frame = Agent.from_checkpoint(run, device="cpu").predict()
        test = frame[frame["sample"] == "test"]
        result = backtest(test, cost_bps=cfg.evaluation.cost_bps)
        scores.append(_t(result.returns.to_numpy()))
    return scores[0], scores[1], int(test["timestamp"].nunique())


@pytest.mark.slow
def test_finetuned_policy_keeps_a_planted_edge_out_of_sample(tmp_path):
    t_rl, t_supervised, n = _run(tmp_path, AUTOCORR)
    assert n > 300
    assert t_rl >= 2, f"fine-tuned t = {t_rl:.2f} (supervised {t_supervised:.2f}) over {n} bars"


@pytest.mark.slow
def test_finetuned_policy_finds_nothing_in_a_random_walk(tmp_path):
    t_rl, t_supervised, _ = _run(tmp_path, 0.0)
    assert abs(t_rl) < 3, f"fine-tuned t = {t_rl:.2f} (supervised {t_supervised:.2f}) on a walk"
