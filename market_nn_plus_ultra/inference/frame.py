"""The pieces of a predictions frame that every agent shares.

:func:`read_run_panel` reads a database the way a run's config builds its panel,
:func:`prediction_items` picks the windows ending in ``start..end`` and
:func:`finish_frame` turns one output per window into the frame of the predictions-file
contract (realised and benchmark returns, the ``sample`` label, sorting, guardrails and
the split bounds in ``frame.attrs``). :class:`~.agent.Agent` and
:class:`~.policy_agent.PolicyAgent` differ only in how they compute the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, GuardrailsConfig, WindowsConfig
from ..evaluation.guardrails import apply_guardrails, sectors_from_assets
from ..evaluation.sample import METADATA_KEY, SAMPLE_COLUMN, label_samples
from ..features.compute import compute_features
from ..training.checks import check_config
from ..windows import MarketTensors, SlidingWindowDataset
from .benchmark import benchmark_returns

__all__ = ["finish_frame", "prediction_items", "read_run_panel"]


def read_run_panel(
    config: Config,
    columns: Sequence[str],
    db: str | Path | None = None,
    symbols: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, WindowsConfig]:
    """The feature panel of ``db`` as the run ``config`` builds it, and its windows section.

    Reads from the run's ``data.start`` (warm-up-dependent features match training) to the
    newest bar; ``symbols`` default to the run's; the windows read ``columns`` in order.
    """
    check_config(config, head=False)  # feature names (plugins included), before the read
    data = config.data.model_copy(
        update={
            "sqlite_path": Path(db) if db is not None else config.data.sqlite_path,
            "symbols": list(symbols) if symbols else config.data.symbols,
            "end": None,
        }
    )
    panel, _ = compute_features(data, config.features)
    missing = [c for c in columns if c not in panel.columns]
    if missing:
        raise ValueError(
            f"{data.sqlite_path}: the model reads feature column(s) {missing[:8]} that the "
            "panel lacks — the database needs the same indicators and alt_* tables as "
            f"the training database ({config.data.sqlite_path}); columns present: "
            f"{sorted(map(str, panel.columns))[:20]}"
        )
    return panel, config.windows.model_copy(update={"feature_columns": list(columns)})


def prediction_items(
    dataset: SlidingWindowDataset,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> np.ndarray:
    """Indices of the windows of ``dataset`` whose end bar lies in ``start..end``."""
    t, _ = dataset.item_keys()
    stamps = dataset.tensors.timestamps[t]
    keep = np.ones(len(t), dtype=bool)
    if start is not None:
        keep &= stamps >= _utc(start, "start")
    if end is not None:
        keep &= stamps <= _utc(end, "end")
    return np.flatnonzero(keep)


def finish_frame(
    dataset: SlidingWindowDataset,
    items: np.ndarray,
    outputs: dict[str, np.ndarray],
    *,
    db: Path,
    benchmark: str | None,
    bounds: dict[str, Any],
    guardrails: GuardrailsConfig | None,
    run: Path,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The predictions frame of ``outputs`` (one value per item) and the guardrail breaches.

    Adds ``realised_return``, ``benchmark_return`` and ``sample`` (from the run's split
    ``bounds``), sorts by (timestamp, symbol), applies ``guardrails`` to the positions and
    puts the bounds and ``run`` in ``frame.attrs``.
    """
    tensors = dataset.tensors
    t, s = dataset.item_keys(items)
    frame = pd.DataFrame(
        {
            "timestamp": tensors.timestamps[t],
            "symbol": np.asarray(tensors.symbols, dtype=object)[s],
            **outputs,
            "realised_return": _realised(tensors, t, s),
        }
    )
    frame["benchmark_return"] = benchmark_returns(frame, db, benchmark)
    frame[SAMPLE_COLUMN] = label_samples(frame["timestamp"], bounds)
    frame = frame.sort_values(["timestamp", "symbol"], ignore_index=True)
    breaches = None
    if guardrails is not None:
        frame, breaches = _guard(frame, guardrails, db)
    frame.attrs[METADATA_KEY] = {**bounds, "run": str(run)}
    return frame, breaches


def _utc(value: str | pd.Timestamp, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--{name} {value!r}: not a timestamp ({err}) — use ISO-8601") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _realised(tensors: MarketTensors, t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Simple return t → t+1 of each (t, s) cell; NaN where the next close is unknown."""
    if not len(t):
        return np.empty(0)
    value = np.asarray(tensors.targets[t, s, 0], dtype=np.float64)
    known = np.asarray(tensors.target_mask[t, s, 0], dtype=bool)
    if tensors.target == "log_return":
        value = np.expm1(value)
    return np.where(known, value, np.nan)


def _guard(
    frame: pd.DataFrame, cfg: GuardrailsConfig, db: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the guardrails to the positions; sectors come from the database's assets."""
    sectors = None
    if cfg.max_sector_gross is not None or cfg.sector_caps:
        sectors = sectors_from_assets(db)
    return apply_guardrails(frame, cfg, sectors)
