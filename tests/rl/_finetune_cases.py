"""A tiny supervised run and tiny fine-tuning settings shared by the rl-finetune tests."""

from __future__ import annotations

import math
from pathlib import Path

from market_nn_plus_ultra.config import Config
from market_nn_plus_ultra.training import TrainResult, train
from tests.training._train_cases import fixture_db, tiny_config

#: A few hundred env steps per update: an update takes a fraction of a second on a CPU.
RL_TINY = [
    "windows.normalise=train_zscore",
    "reinforcement.env.num_envs=4",
    "reinforcement.env.episode_length=16",
    "reinforcement.ppo.steps_per_rollout=12",
    "reinforcement.ppo.minibatches=2",
    "reinforcement.ppo.update_epochs=2",
    "reinforcement.ppo.learning_rate=0.003",
    "reinforcement.updates=3",
]

#: UpdateStats fields that measure time, not what the run computed.
TIMINGS = ("steps_per_second", "rollout_seconds", "update_seconds")


def supervised_run(tmp: Path, rows: int = 300) -> tuple[TrainResult, Path]:
    """A two-symbol daily database and a one-epoch supervised run on it (about 2 s)."""
    db = fixture_db(tmp, rows=rows)
    return train(tiny_config(db, tmp / "supervised", "windows.normalise=train_zscore")), db


def rl_config(db: Path, tmp: Path, *overrides: str) -> Config:
    """The supervised run's config with the tiny RL settings, writing under ``tmp``."""
    return tiny_config(db, tmp / "supervised", *RL_TINY, *overrides)


def differing(a: dict, b: dict) -> list[str]:
    """The keys whose values differ (NaN equals NaN; timings are left out)."""
    differ = []
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if key in TIMINGS or x == y:
            continue
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        differ.append(key)
    return sorted(differ)
