"""The one-symbol requests of a batch, made ready for the model together.

A request for one symbol reads the window of that symbol's last ``W`` bars (its own
calendar is its bars, so ``calendar=union`` and ``own`` agree). For a batch of such
requests the feature pipeline runs once over every request's bars (each request its own
block, as if it were a symbol of one panel: features never mix blocks), and the windows
come from one :class:`~market_nn_plus_ultra.windows.MarketTensors` in which request ``k``
is column ``k`` holding its last ``W`` bars on rows ``0 .. W-1``. The rows stand for
"the W-th last bar .. the last bar" of every request; the tensors' timestamps are those
positions (never surfaced — each prediction carries its request's real last timestamp).
The dataset, normalisation and window gathering are the training code's, so a request's
window equals the one it gets alone (tests check it to 1e-6).

The time spent per request drops from about 0.9 ms (features, tensors, dataset of its
own) to a share of one pass (``benchmarks/service.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..windows import MarketTensors, Normaliser, SlidingWindowDataset
from .errors import ServiceError
from .outputs import ModelOutputs, check_finite, no_window

if TYPE_CHECKING:
    from .bars import BarArrays
    from .predictor import Predictor

__all__ = ["SingleSymbolBatch"]


class SingleSymbolBatch:
    """Requests ``group`` (one symbol each, checked by ``Predictor.request_arrays``) up
    to their model inputs: ``x`` ``(n_windows, W, F)``, the windows of the requests that
    have one (``row[k]`` = request k's row in ``x``, -1 with ``errors[k]`` saying why)."""

    def __init__(self, predictor: Predictor, group: list[BarArrays], started: float) -> None:
        p = predictor
        self.predictor, self.group, self.started = p, group, started
        counts = np.array([int(a.counts[0]) for a in group], dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        names = list(group[0].columns)
        columns = {c: np.concatenate([a.columns[c] for a in group]) for c in names}
        self.symbols = [a.symbols[0] for a in group]
        stamps = np.concatenate([a.stamps for a in group])
        features = p.pipeline.transform_arrays(columns, bounds, self.symbols, stamps)
        columns.update(features)
        p._check_features(columns)
        self.featured = time.perf_counter()
        self.tensors, self.dataset = self._windows(columns, bounds)
        W, B = p.window, len(group)
        t, s = self.dataset.item_keys()
        ends = s[t == W - 1]  # only the last row can end a window: rows are the last W bars
        self.row = np.full(B, -1, dtype=np.int64)
        self.row[ends] = np.arange(len(ends))
        self.x = self.dataset.batch(np.flatnonzero(t == W - 1))["x"] if len(ends) else None
        self.errors = [
            None if self.row[k] >= 0 else self._no_window(k, columns, bounds) for k in range(B)
        ]

    @property
    def n_windows(self) -> int:
        return 0 if self.x is None else int(self.x.shape[0])

    def outputs(self, k: int, columns: dict[str, np.ndarray]) -> ModelOutputs:
        """Request ``k``'s outputs from the batch's model ``columns`` (rows of ``x``)."""
        error = self.errors[k]
        if error is not None:
            raise error
        j = int(self.row[k])
        mine = {name: values[j : j + 1] for name, values in columns.items()}
        check_finite(mine, [self.symbols[k]])
        W = self.predictor.window
        result = {
            "timestamp": self.group[k].stamps[-1:].copy(),
            "symbol": np.array([self.symbols[k]], dtype=object),
            **mine,
            "realised_return": np.full(1, np.nan),  # earned after the bar
        }
        inputs = np.asarray(self.tensors.inputs[W - 1, k : k + 1], dtype=np.float32)  # (1, F)
        seconds = {
            "features": self.featured - self.started,
            "model": time.perf_counter() - self.featured,
        }
        return ModelOutputs(result, seconds, inputs)

    # ----------------------------------------------------------------------------------

    def _windows(
        self, columns: dict[str, np.ndarray], bounds: np.ndarray
    ) -> tuple[MarketTensors, SlidingWindowDataset]:
        p, cfg = self.predictor, self.predictor.windows
        W, B = p.window, len(self.group)
        last = (bounds[1:, None] - W + np.arange(W)).ravel()  # (B * W,) each one's last W
        kept = {c: v[last] for c, v in columns.items()}
        tensors = MarketTensors.from_arrays(
            kept,
            np.tile(np.arange(W, dtype=np.int64), B),
            np.repeat(np.arange(B, dtype=np.int64), W),
            pd.DatetimeIndex(np.arange(W, dtype=np.int64)).tz_localize("UTC"),  # positions
            self.symbols,
            p.feature_columns,
            horizon=p.horizon,
            target=cfg.target,
            context_columns=cfg.context_columns,
            regime_column=cfg.regime_column,
        )
        normaliser = _stack([p.normaliser([s]) for s in self.symbols])
        dataset = SlidingWindowDataset.from_config(
            tensors, cfg, normaliser=normaliser, require_targets=False
        )
        return tensors, dataset

    def _no_window(
        self, k: int, columns: dict[str, np.ndarray], bounds: np.ndarray
    ) -> ServiceError:
        """Why request ``k`` has no window at its last bar (the words of a lone request)."""
        p = self.predictor
        i = int(bounds[k + 1]) - 1
        bad = [c for c in p.feature_columns if not np.isfinite(columns[c][i])]
        stamp = pd.Timestamp(int(self.group[k].stamps[-1]), tz="UTC")
        return no_window(self.symbols[k], stamp, bad, p.window)


def _stack(parts: list[Normaliser | None]) -> Normaliser | None:
    """One normaliser whose row k is ``parts[k]``'s only row (None: no train statistics)."""
    if not parts or parts[0] is None:
        return None

    def rows(name: str) -> np.ndarray | None:
        values = [getattr(n, name) for n in parts]
        return None if values[0] is None else np.concatenate(values)

    return Normaliser(
        rows("mean"), rows("std"), parts[0].rows, rows("context_mean"), rows("context_std")
    )
