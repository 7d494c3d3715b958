"""Feature drift of the served inputs against the training distribution: PSI and KS.

The service keeps the newest ``service.drift_window`` feature rows it served (one per
symbol and prediction: the model's raw inputs at the bar it predicted from) and compares
each feature with the run's training distribution (its ``drift_reference.json``, see
:mod:`~market_nn_plus_ultra.training.drift_reference`):

- **PSI** (population stability index) over the reference's quantile bins, with
  a = live share and e = training share of each bin, both floored at ``PSI_FLOOR``::

      PSI = Σ_bins (a − e) · ln(a / e)

  Below 0.1 is stable, 0.1–0.25 a moderate shift, above 0.25 (``service.psi_threshold``)
  a significant one.
- **KS**: the two-sample Kolmogorov–Smirnov statistic (``scipy.stats.ks_2samp``) between
  the live values and the reference's training quantiles: the largest gap between the two
  empirical CDFs, in [0, 1].
- **Regime shift**: raised when at least ``service.regime_shift_share`` of the features
  are beyond ``psi_threshold`` at once — the inputs as a whole have left the training
  distribution, not one indicator.

Adding rows is a copy into a ring buffer (the request path); the statistics are computed
when they are read (a ``/metrics`` scrape, ``GET /drift``). A run without the reference
file (trained before it existed) is fitted once at load from its training split, with a
warning; where that fails too, drift reads as unavailable, with the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import ks_2samp

from ..config import ServiceConfig
from ..training.drift_reference import (
    DRIFT_REFERENCE_FILE,
    DriftReference,
    bin_index,
    fit_drift_reference,
    load_drift_reference,
)

if TYPE_CHECKING:
    from .holder import Served

__all__ = [
    "PSI_FLOOR",
    "DriftMonitor",
    "DriftReport",
    "FeatureDrift",
    "drift_reference_for",
    "population_stability_index",
]

log = logging.getLogger("market_nn_plus_ultra.service")

#: Shares below this count as this (an empty bin would make the PSI infinite).
PSI_FLOOR = 1e-4


def population_stability_index(actual: np.ndarray, expected: np.ndarray) -> float:
    """PSI of the live bin shares ``actual`` against the training shares ``expected``
    (both summing to 1; shares floored at :data:`PSI_FLOOR`)."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift over the window."""

    feature: str
    psi: float
    ks: float


@dataclass(frozen=True)
class DriftReport:
    """The drift of the served inputs now (``available`` False: ``reason`` says why)."""

    available: bool
    reason: str | None
    source: str | None  # checkpoint | source_checkpoint | training_split
    rows: int  # rows in the window
    window: int
    min_rows: int
    psi_threshold: float
    features: list[FeatureDrift] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)  # PSI above the threshold
    regime_shift: bool = False


class DriftMonitor:
    """The window of served feature rows and their drift against one reference."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._reference: DriftReference | None = None
        self._source: str | None = None
        self._why = "no model loaded yet"
        self._rows = np.empty((0, 0))  # (drift_window, F) ring buffer
        self._next = 0  # where the next row goes
        self._count = 0
        self._shifted = False

    def set_reference(
        self, reference: DriftReference | None, source: str | None, reason: str | None = None
    ) -> None:
        """Measure against ``reference`` from now on (None: drift unavailable, ``reason``).
        The window is kept when the features stay the same (a reload of a compatible model)."""
        with self._lock:
            old = self._reference
            self._reference, self._source = reference, source
            self._why = reason or "no drift reference"
            if reference is None:
                return
            if old is None or old.features != reference.features:
                self._rows = np.empty((self.cfg.drift_window, len(reference.features)))
                self._next = self._count = 0

    def observe(self, rows: np.ndarray) -> None:
        """Add served feature rows ``(n, F)`` (the reference's feature order) to the window."""
        with self._lock:
            if self._reference is None or not len(rows):
                return
            rows = np.asarray(rows)
            if rows.ndim != 2 or rows.shape[1] != self._rows.shape[1]:
                return  # a model in a reload's gap: its rows do not fit this reference
            size = len(self._rows)
            rows = rows[-size:]
            start, n = self._next, len(rows)
            head = min(n, size - start)
            self._rows[start : start + head] = rows[:head]
            self._rows[: n - head] = rows[head:]  # the part that wraps around
            self._next = (start + n) % size
            self._count = min(size, self._count + n)

    def rows(self) -> np.ndarray:
        """The window's feature rows ``(n, F)``, oldest first (a copy)."""
        with self._lock:
            if self._count < len(self._rows):
                return self._rows[: self._count].copy()
            return np.roll(self._rows, -self._next, axis=0)

    def report(self) -> DriftReport:
        """PSI and KS of every feature over the window, and the regime-shift flag."""
        cfg = self.cfg
        with self._lock:
            reference, source, why = self._reference, self._source, self._why
            values = self._rows[: self._count].copy()
        base = {
            "source": source,
            "rows": len(values),
            "window": cfg.drift_window,
            "min_rows": cfg.drift_min_rows,
            "psi_threshold": cfg.psi_threshold,
        }
        if reference is None:
            return DriftReport(available=False, reason=why, **base)
        if len(values) < cfg.drift_min_rows:
            reason = (
                f"{len(values)} served rows so far; drift is measured from {cfg.drift_min_rows}"
            )
            return DriftReport(available=False, reason=reason, **base)
        ks = np.atleast_1d(
            ks_2samp(values, reference.quantiles.T, axis=0, method="asymp").statistic
        )
        features = []
        for f, name in enumerate(reference.features):
            x = values[:, f]
            edges = reference.edges[f]
            shares = np.bincount(bin_index(x, edges), minlength=len(edges) + 1) / len(x)
            psi = population_stability_index(shares, reference.expected[f])
            features.append(FeatureDrift(name, psi, float(ks[f])))
        drifted = [d.feature for d in features if d.psi > cfg.psi_threshold]
        shifted = len(drifted) >= cfg.regime_shift_share * len(features)
        self._log_shift(shifted, drifted, len(features))
        return DriftReport(
            available=True,
            reason=None,
            features=features,
            drifted=drifted,
            regime_shift=shifted,
            **base,
        )

    def _log_shift(self, shifted: bool, drifted: list[str], n: int) -> None:
        with self._lock:
            changed, self._shifted = shifted != self._shifted, shifted
        if not changed:
            return
        fields = {"event": "regime_shift" if shifted else "regime_shift_cleared"}
        fields.update(drifted=drifted, features=n, psi_threshold=self.cfg.psi_threshold)
        if shifted:
            log.warning(
                "regime shift: %d of %d features beyond PSI %g (%s)",
                len(drifted),
                n,
                self.cfg.psi_threshold,
                ", ".join(drifted[:8]),
                extra={"fields": fields},
            )
        else:
            log.info(
                "regime shift cleared: %d features drifted", len(drifted), extra={"fields": fields}
            )


def drift_reference_for(
    served: Served, cfg: ServiceConfig
) -> tuple[DriftReference | None, str | None, str | None]:
    """The drift reference of a served model: ``(reference, source, why not)``.

    Its run folder's ``drift_reference.json``, else (a fine-tuned policy) that of the
    supervised run it started from, else fitted once on the run's training split (an
    older run: logged as a warning). None, with the reason, when none of these works.
    """
    columns = list(served.agent.feature_columns)
    places = [(served.run_dir, "checkpoint")]
    source = served.agent.model_info.get("source_checkpoint")
    if source:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        places.append((folder, "source_checkpoint"))
    for folder, kind in places:
        path = folder / DRIFT_REFERENCE_FILE
        if not path.is_file():
            continue
        try:
            reference = load_drift_reference(path)
        except ValueError as err:
            log.warning("%s — drift is refitted from the training split", err)
            break
        if reference.features != columns:
            return None, None, f"{path} lists other features than the model reads — retrain"
        return reference, kind, None
    log.warning(
        "%s has no %s: fitting the drift bins once on its training split",
        served.run_dir,
        DRIFT_REFERENCE_FILE,
        extra={"fields": {"event": "drift_reference_refit", "run": str(served.run_dir)}},
    )
    try:
        from ..training import MarketDataModule

        dm = MarketDataModule(served.agent.config)
        dm.setup()
        rows = dm.splits["train"].input_rows
        reference = fit_drift_reference(
            dm.tensors, rows, bins=cfg.psi_bins, quantiles=cfg.drift_quantiles
        )
    except Exception as err:  # the run's database moved, changed or is gone
        why = (
            f"{served.run_dir} has no {DRIFT_REFERENCE_FILE} and its training split could not "
            f"be read ({type(err).__name__}: {err}) — retrain, or restore the run's database"
        )
        log.warning("drift unavailable: %s", why)
        return None, None, why
    if reference.features != columns:
        return None, None, "the refitted training split has other features than the model reads"
    return reference, "training_split", None
