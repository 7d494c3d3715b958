"""Live performance from reported outcomes, against the served run's own backtest.

Simple, documented estimators over the outcomes matched to one model version's
predictions, with r = served position × realised return (gross of costs):

- ``pnl`` = Σ r; ``mean_return`` = Σ r / n.
- ``expected_return``: the same mean over the run's test predictions
  (``test_predictions.parquet`` of the run folder: position × realised_return).
- ``roi_drift`` = mean_return − expected_return; ``roi_drift_z`` = roi_drift / (s / √n),
  s the live standard deviation of r (n ≥ 2): |z| > 2 is unlikely under no drift.
- ``hit_rate``: share of outcomes where sign(forecast) = sign(realised return) (a zero
  return or forecast counts as a miss; predictions without a forecast are left out);
  ``expected_hit_rate`` the test predictions'.
- ``coverage``: share of realised returns inside the outermost quantiles (q05..q95 by
  default) when the head has them; ``expected_coverage`` the test predictions' — a
  falling coverage means the forecast bands have become too narrow.

Calibration, with the estimators of the training diagnostics
(:mod:`~market_nn_plus_ultra.training.diagnostics`), over the newest
``service.calibration_window`` outcomes of the version:

- ``ece``: top-label expected calibration error of ``prob_down/prob_flat/prob_up``
  against the realised direction (``direction_labels`` with the run's
  ``model.flat_band``; ``diagnostics.calibration_bins`` bins);
- ``quantile_coverage_error``: mean |share of returns at or below q_τ − τ| over the
  head's quantile levels;
- ``expected_ece`` / ``expected_quantile_coverage_error``: the run's last validation
  epoch (``diagnostics.parquet``); the ``*_drift`` fields are live minus expected.

Statistics live in memory and are rebuilt from the prediction log at start.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..models.losses import direction_labels
from ..training.diagnostics import expected_calibration_error, quantile_coverage
from .schemas import LiveStats

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Expectation", "LiveTracker", "band"]


def band(outputs: dict[str, float]) -> tuple[float, float] | None:
    """The outermost quantile forecasts (``q05``, ``q95``, …) of one prediction, if any."""
    levels = sorted((_level(k), v) for k, v in outputs.items() if _level(k) is not None)
    return (levels[0][1], levels[-1][1]) if len(levels) >= 2 else None


def _level(name: str) -> float | None:
    if not name.startswith("q") or not name[1:].replace("_", "").isdigit():
        return None
    return float(name[1:].replace("_", "."))


@dataclass(frozen=True)
class Expectation:
    """What the run's backtest (its test predictions) expects of the live numbers."""

    mean_return: float | None = None
    hit_rate: float | None = None
    coverage: float | None = None
    ece: float | None = None  # the last validation epoch's (diagnostics.parquet)
    quantile_coverage_error: float | None = None
    flat_band: float = 0.0  # model.flat_band: what counts as a flat realised return
    calibration_bins: int = 10  # diagnostics.calibration_bins

    def of_model(self, config: Config) -> Expectation:
        """This expectation with the served run's calibration settings."""
        return replace(
            self,
            flat_band=float(config.model.flat_band),
            calibration_bins=int(config.diagnostics.calibration_bins),
        )

    @classmethod
    def from_run(cls, run: Path) -> Expectation:
        """Read ``test_predictions.parquet`` and ``diagnostics.parquet`` in ``run`` (None
        for what is absent)."""
        validation = _validation_calibration(run / "diagnostics.parquet")
        path = run / "test_predictions.parquet"
        if not path.is_file():
            return cls(**validation)
        frame = pd.read_parquet(path).dropna(subset=["realised_return"])
        if not len(frame):
            return cls(**validation)
        ret = frame["realised_return"].to_numpy(dtype=np.float64)
        pos = frame["position"].to_numpy(dtype=np.float64)
        hit = None
        if "forecast" in frame.columns:
            hit = float(np.mean(np.sign(frame["forecast"].to_numpy()) * np.sign(ret) > 0))
        names = [c for c in frame.columns if _level(str(c)) is not None]
        coverage = None
        if len(names) >= 2:
            lo, hi = min(names, key=_level), max(names, key=_level)
            inside = (frame[lo].to_numpy() <= ret) & (ret <= frame[hi].to_numpy())
            coverage = float(np.mean(inside))
        return cls(float(np.mean(pos * ret)), hit, coverage, **validation)


def _validation_calibration(path: Path) -> dict[str, float]:
    """ECE and quantile coverage error of the last validation epoch that measured them."""
    if not path.is_file():
        return {}
    frame = pd.read_parquet(path)
    if "kind" not in frame.columns:
        return {}
    rows = frame[frame["kind"] == "validation"]
    out = {}
    for name in ("ece", "quantile_coverage_error"):
        if name in rows.columns and rows[name].notna().any():
            out[name] = float(rows[name].dropna().iloc[-1])
    return out


@dataclass(frozen=True)
class _Record:
    """What the calibration of one outcome needs."""

    realised: float
    probs: tuple[float, float, float] | None  # prob_down, prob_flat, prob_up
    levels: tuple[float, ...] | None  # quantile levels and the forecasts at them
    quantiles: tuple[float, ...] | None


def _record(outputs: dict[str, float], realised: float) -> _Record:
    names = ("prob_down", "prob_flat", "prob_up")
    probs = tuple(float(outputs[k]) for k in names) if all(k in outputs for k in names) else None
    levels = sorted((_level(k) / 100, v) for k, v in outputs.items() if _level(k) is not None)
    if not levels:  # q05 is the 5% quantile: levels as fractions
        return _Record(realised, probs, None, None)
    return _Record(
        realised, probs, tuple(lv for lv, _ in levels), tuple(float(v) for _, v in levels)
    )


@dataclass
class _Sums:
    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    forecasts: int = 0  # outcomes whose prediction had a forecast
    hits: int = 0
    banded: int = 0
    covered: int = 0
    expectation: Expectation = field(default_factory=Expectation)
    recent: deque[_Record] = field(default_factory=deque)  # newest outcomes (calibration)


class LiveTracker:
    """Running sums of the outcomes, per model version (calibration over the newest
    ``calibration_window`` of them)."""

    def __init__(self, calibration_window: int = 2000) -> None:
        self.calibration_window = calibration_window
        self._sums: dict[str, _Sums] = {}
        self._lock = threading.Lock()

    def _of(self, version: str) -> _Sums:
        if version not in self._sums:
            self._sums[version] = _Sums(recent=deque(maxlen=self.calibration_window))
        return self._sums[version]

    def set_expectation(self, version: str, expectation: Expectation) -> None:
        with self._lock:
            self._of(version).expectation = expectation

    def add(
        self, version: str, position: float, forecast: float | None, outputs: str, realised: float
    ) -> None:
        """Count one outcome of a prediction (``outputs``: its logged JSON head outputs)."""
        r = position * realised
        heads = json.loads(outputs)
        quantiles = band(heads)
        record = _record(heads, realised)
        with self._lock:
            s = self._of(version)
            if record.probs is not None or record.levels is not None:
                s.recent.append(record)
            s.n += 1
            s.total += r
            s.squares += r * r
            if forecast is not None:
                s.forecasts += 1
                s.hits += int(np.sign(forecast) * np.sign(realised) > 0)
            if quantiles is not None:
                s.banded += 1
                s.covered += int(quantiles[0] <= realised <= quantiles[1])

    def stats(self, version: str | None) -> LiveStats:
        """The live statistics of ``version`` (zeros before any outcome)."""
        with self._lock:
            s = self._sums.get(version or "", _Sums())
            n, total, squares, forecasts = s.n, s.total, s.squares, s.forecasts
            hits, banded, covered, e = s.hits, s.banded, s.covered, s.expectation
            recent = list(s.recent)
        mean = total / n if n else None
        drift = z = None
        if mean is not None and e.mean_return is not None:
            drift = mean - e.mean_return
            if n >= 2:
                var = max(squares / n - mean * mean, 0.0) * n / (n - 1)
                z = drift / math.sqrt(var / n) if var > 0 else None
        hit = hits / forecasts if forecasts else None
        coverage = covered / banded if banded else None
        ece, coverage_error = _calibration(recent, e)
        return LiveStats(
            model_version=version,
            n=n,
            pnl=total,
            mean_return=mean,
            expected_return=e.mean_return,
            roi_drift=drift,
            roi_drift_z=z,
            hit_rate=hit,
            expected_hit_rate=e.hit_rate,
            hit_rate_drift=None if hit is None or e.hit_rate is None else hit - e.hit_rate,
            coverage=coverage,
            expected_coverage=e.coverage,
            calibration_n=len(recent),
            ece=ece,
            expected_ece=e.ece,
            ece_drift=_minus(ece, e.ece),
            quantile_coverage_error=coverage_error,
            expected_quantile_coverage_error=e.quantile_coverage_error,
            quantile_coverage_error_drift=_minus(coverage_error, e.quantile_coverage_error),
        )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _calibration(records: list[_Record], e: Expectation) -> tuple[float | None, float | None]:
    """ECE and quantile coverage error of ``records``, as the training diagnostics measure
    them on a validation epoch (None where the head has neither)."""
    ece = coverage_error = None
    with_probs = [r for r in records if r.probs is not None]
    if with_probs:
        probs = np.array([r.probs for r in with_probs])  # (N, 3)
        realised = torch.tensor([r.realised for r in with_probs], dtype=torch.float64)
        labels = direction_labels(realised, e.flat_band).numpy()  # (N,) 0 down, 1 flat, 2 up
        ece = expected_calibration_error(probs, labels, e.calibration_bins)
    with_bands = [r for r in records if r.levels is not None]
    if with_bands:
        levels = with_bands[-1].levels
        same = [r for r in with_bands if r.levels == levels]  # one head per version
        quantiles = np.array([r.quantiles for r in same])[:, None, :]  # (N, H=1, Q)
        realised = np.array([[r.realised] for r in same])  # (N, H=1)
        coverage_error = quantile_coverage(quantiles, realised, levels)["error"]
    return ece, coverage_error
