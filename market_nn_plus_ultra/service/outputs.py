"""A request's model outputs (:class:`ModelOutputs`) and the check that they are finite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from .errors import ServiceError

__all__ = ["ModelOutputs", "check_finite", "no_window"]


@dataclass(frozen=True, eq=False)
class ModelOutputs:
    """One request's model outputs: ``columns`` (one row per symbol, sorted by
    (timestamp, symbol): ``timestamp`` int64 ns UTC, ``symbol``, ``position``,
    ``forecast``, [prob_*], [q*], ``realised_return`` = NaN), stage times in seconds and
    ``features``: float32 ``(rows, F)``, the model's raw (unnormalised) input row at each
    predicted bar, aligned with the rows (what the drift monitor watches). ``frame``: the
    same rows as a DataFrame (built on first use; the hot path reads ``columns``)."""

    columns: dict[str, np.ndarray]
    seconds: dict[str, float]
    features: np.ndarray

    @cached_property
    def frame(self) -> pd.DataFrame:
        """``columns`` as a DataFrame, ``timestamp`` as UTC datetimes."""
        stamps = pd.DatetimeIndex(pd.to_datetime(self.columns["timestamp"], utc=True))
        return pd.DataFrame({**self.columns, "timestamp": stamps}, copy=False)


def check_finite(outputs: Mapping[str, np.ndarray], symbols: Sequence[str]) -> None:
    """422 naming the first symbol whose outputs (row i for ``symbols[i]``) are not finite
    (columns that are NaN for every row, a head's absent outputs, are not checked)."""
    checked = [v for k, v in outputs.items() if k == "position" or not np.isnan(v).all()]
    broken = ~np.isfinite(np.column_stack(checked)).all(axis=1)
    if broken.any():
        symbol = symbols[int(np.argmax(broken))]
        raise ServiceError(
            422,
            f"{symbol}: the model's outputs are not finite — its bars hold values far "
            "outside the data it was trained on; check the prices, volumes and columns",
        )


def no_window(symbol: str, stamp: object, bad: Sequence[str], window: int) -> ServiceError:
    """The 422 for a symbol without a window at its last bar: the non-finite features
    there (``bad``), else too short a history."""
    why = (
        f"feature(s) {list(bad)[:8]} are not finite there — check the bars' values"
        if bad
        else f"fewer than {window} bars of history — send more bars"
    )
    return ServiceError(422, f"{symbol}: no prediction at its last bar {stamp}: {why}")
