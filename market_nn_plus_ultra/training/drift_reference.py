"""The drift reference of a run: each input feature's training distribution, saved beside
the checkpoint so a service can measure how far its inputs drift from what the model saw.

    ref = fit_drift_reference(dm.tensors, dm.splits["train"].input_rows, bins=10, quantiles=1000)
    save_drift_reference(ref, run / DRIFT_REFERENCE_FILE)      # train() does this
    ref = load_drift_reference(run / DRIFT_REFERENCE_FILE)

Per feature — the model's raw input columns, before any normalisation — over the valid
cells of the training split's input rows (``tensors.mask``; at most ``_MAX_VALUES``
values, an even stride through the cells beyond that):

- ``edges``: the inner edges of ``bins`` quantile bins (levels k/bins, k = 1..bins-1;
  equal edges of a discrete feature merged). Bin i holds ``edges[i-1] < x <= edges[i]``
  (:func:`bin_index`), the first and last bins are open-ended.
- ``expected``: the share of the training values in each bin (``len(edges) + 1``); a
  feature with ties has unequal shares, measured, not assumed.
- ``quantiles``: ``m = min(quantiles, cells)`` training quantiles at levels (i + ½)/m, a
  sketch of the distribution the two-sample KS statistic compares live values with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import write_json
from ..windows import MarketTensors

__all__ = [
    "DRIFT_REFERENCE_FILE",
    "DriftReference",
    "bin_index",
    "fit_drift_reference",
    "load_drift_reference",
    "save_drift_reference",
]

DRIFT_REFERENCE_FILE = "drift_reference.json"
_FORMAT, _VERSION = "plus_ultra_drift_reference", 1
_MAX_VALUES = 10_000_000  # cells x features gathered (40 MB of float32)


@dataclass(frozen=True)
class DriftReference:
    """Bins and quantiles of each feature's training values (see the module docstring)."""

    features: list[str]
    bins: int  # bins asked for; a feature with ties may have fewer
    edges: list[np.ndarray]  # per feature: inner edges, ascending
    expected: list[np.ndarray]  # per feature: training share per bin (len(edges) + 1)
    quantiles: np.ndarray  # (F, m) training quantiles at levels (i + 0.5) / m
    rows: tuple[int, int]  # the training input rows [start, stop) they came from
    cells: int  # training cells (timestamp, symbol) measured


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value: i where ``edges[i-1] < x <= edges[i]`` (0 .. len(edges))."""
    return np.searchsorted(edges, values, side="left")


def _training_values(tensors: MarketTensors, rows: range) -> np.ndarray:
    """The feature rows ``(N, F)`` of the valid cells in ``rows`` (strided when many)."""
    lo, hi = max(0, rows.start), min(rows.stop, tensors.n_rows)
    S, F = tensors.n_symbols, tensors.n_features
    cells = np.flatnonzero(np.asarray(tensors.mask[lo:hi]).ravel())  # flat (row, symbol)
    step = max(1, math.ceil(len(cells) * F / _MAX_VALUES))
    r, s = np.divmod(cells[::step], S)
    return np.asarray(tensors.inputs[lo + r, s], dtype=np.float32)  # (N, F)


def fit_drift_reference(
    tensors: MarketTensors, rows: range, *, bins: int = 10, quantiles: int = 1000
) -> DriftReference:
    """Fit the bins and quantiles of every feature on ``rows`` (the training split's
    ``input_rows``: rows outside it are never read)."""
    if bins < 2 or quantiles < 1:
        raise ValueError(
            f"drift reference: bins must be >= 2 and quantiles >= 1, got {bins}, {quantiles}"
        )
    values = _training_values(tensors, rows)
    if not len(values):
        raise ValueError(
            f"drift reference: no valid training cells in rows {rows.start}..{rows.stop - 1} — "
            "the training split holds no row with every feature finite"
        )
    levels = np.arange(1, bins) / bins
    m = min(quantiles, len(values))
    sketch = np.empty((values.shape[1], m))
    edges, expected = [], []
    for f in range(values.shape[1]):
        x = values[:, f].astype(np.float64)
        inner = np.unique(np.quantile(x, levels))
        counts = np.bincount(bin_index(x, inner), minlength=len(inner) + 1)
        edges.append(inner)
        expected.append(counts / len(x))
        sketch[f] = np.quantile(x, (np.arange(m) + 0.5) / m)
    return DriftReference(
        features=list(tensors.feature_names),
        bins=bins,
        edges=edges,
        expected=expected,
        quantiles=sketch,
        rows=(rows.start, rows.stop),
        cells=len(values),
    )


def _short(values: np.ndarray) -> list[float]:
    """9 significant digits: every float32 input value round-trips; the file stays small."""
    return [float(f"{v:.9g}") for v in np.asarray(values, dtype=np.float64).tolist()]


def save_drift_reference(reference: DriftReference, path: str | Path) -> Path:
    """Write ``reference`` as JSON, atomically; returns the path."""
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "features": reference.features,
        "bins": reference.bins,
        "rows": list(reference.rows),
        "cells": reference.cells,
        "edges": [_short(e) for e in reference.edges],
        "expected": [_short(e) for e in reference.expected],
        "quantiles": [_short(q) for q in reference.quantiles],
    }
    return write_json(Path(path), payload, indent=None)


def load_drift_reference(path: str | Path) -> DriftReference:
    """Read a :func:`save_drift_reference` file; a foreign or damaged one is a ValueError."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the drift reference ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a drift reference (format {_FORMAT!r} expected)")
    if raw.get("version") != _VERSION:
        raise ValueError(
            f"{path}: drift reference version {raw.get('version')!r}, this build reads "
            f"{_VERSION} — retrain, or delete the file to refit it from the training split"
        )
    try:
        features = [str(f) for f in raw["features"]]
        edges = [np.asarray(e, dtype=np.float64) for e in raw["edges"]]
        expected = [np.asarray(e, dtype=np.float64) for e in raw["expected"]]
        sketch = np.asarray(raw["quantiles"], dtype=np.float64)
        rows = (int(raw["rows"][0]), int(raw["rows"][1]))
        reference = DriftReference(
            features, int(raw["bins"]), edges, expected, sketch, rows, int(raw["cells"])
        )
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: damaged drift reference ({type(err).__name__}: {err})") from None
    shapes_ok = (
        len(edges) == len(expected) == len(features)
        and sketch.ndim == 2
        and sketch.shape[0] == len(features)
        and all(len(x) == len(e) + 1 for e, x in zip(edges, expected, strict=True))
    )
    if not shapes_ok:
        raise ValueError(f"{path}: damaged drift reference (per-feature lists do not line up)")
    return reference
