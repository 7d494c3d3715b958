"""Bars, configs and apps shared by the service tests (not a test module)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.features.compute import compute_features
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.service import create_app

KEY_ENV = "PLUS_ULTRA_TEST_API_KEY"
KEY = "test-key-0123456789"


def service_config(db: Path, tmp: Path, *overrides: str) -> Config:
    """The service's config: the fixture database, its own log under ``tmp``, the test key."""
    return load_config(
        None,
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"service.database={tmp / 'service.db'}",
            f"service.api_key_env={KEY_ENV}",
            *overrides,
        ],
    )


def ready_app(cfg: Config, checkpoint: Path):
    """An app whose model is loaded synchronously (no lifespan needed)."""
    app = create_app(cfg, checkpoint)
    state = app.state.service
    state.on_load(state.holder.load(checkpoint))
    return app


def bars_from_db(agent: Agent, db: Path, tail: int | None = None) -> list[dict[str, Any]]:
    """The raw columns a bars request needs, read (and alternative data joined) from ``db``
    exactly as ``Agent.predict`` reads them; the last ``tail`` bars per symbol."""
    run = agent.config
    data = run.data.model_copy(update={"sqlite_path": db, "symbols": None, "end": None})
    panel, _ = compute_features(data, run.features)
    from market_nn_plus_ultra.service.predictor import Predictor

    columns = Predictor(agent, data).required_columns
    frame = panel[columns].reset_index()
    if tail is not None:
        frame = frame.groupby("symbol").tail(tail)
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def last_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's newest row of a predictions frame."""
    return frame.sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")


def metric(client, sample: str) -> float | None:
    """The value of one sample line of GET /metrics (``name{labels}``), None when absent."""
    for row in client.get("/metrics").text.splitlines():
        if row.startswith(sample + " "):
            return float(row.split()[-1])
    return None
