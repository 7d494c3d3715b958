"""Prometheus metrics of one app, in its own registry (apps in one process never collide).

Base units throughout: seconds for durations, fractions for returns. Request metrics are
labelled by route template (``/predict``, never the raw path) and status code. Gauges
computed from state (drift, live statistics) are refreshed when ``/metrics`` is read;
an unknown value is NaN, and a labelled series whose value is unknown is absent.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from .drift import DriftReport
    from .schemas import LiveStats

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "POSITION_BUCKETS", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Request latency buckets, 0.25 ms .. 1 s (the service aims at single-digit milliseconds).
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: Served position buckets (upper bounds) over [-1, 1]; ``-0.01 .. 0.01`` is flat.
POSITION_BUCKETS = (-1.0, -0.75, -0.5, -0.25, -0.1, -0.01, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0)


class ServiceMetrics:
    """Every metric the service exports; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ProcessCollector(registry=reg)
        self.requests = Counter(
            "plus_ultra_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.request_seconds = Histogram(
            "plus_ultra_request_duration_seconds",
            "Wall time from request start to the response's last byte.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inference_seconds = Histogram(
            "plus_ultra_inference_duration_seconds",
            "Time of one prediction's stages: features, model, guardrails, total.",
            ["mode", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "plus_ultra_predictions",
            "Predictions served (one per symbol and request).",
            registry=reg,
        )
        self.model_info = Gauge(
            "plus_ultra_model_info",
            "The model in service (value 1): version, checkpoint, architecture, head.",
            ["version", "checkpoint", "architecture", "head"],
            registry=reg,
        )
        self.model_loaded = Gauge(
            "plus_ultra_model_loaded_timestamp_seconds",
            "Unix time the model in service was swapped in.",
            registry=reg,
        )
        self.reloads = Counter(
            "plus_ultra_reloads",
            "Model loads by outcome: loaded or refused (corrupt or incompatible checkpoint).",
            ["outcome"],
            registry=reg,
        )
        self.breaches = Counter(
            "plus_ultra_guardrail_breaches",
            "Guardrail breaches on served bars, by rule.",
            ["rule"],
            registry=reg,
        )
        self.derisk = Counter(
            "plus_ultra_derisk_actions",
            "Predictions with a breach, by the de-risking action taken (guardrails.on_breach).",
            ["action"],
            registry=reg,
        )
        self.outcomes = Counter(
            "plus_ultra_outcomes",
            "Realised returns reported through /outcomes and matched to a prediction.",
            registry=reg,
        )
        self.live_pnl = Gauge(
            "plus_ultra_live_pnl",
            "Sum of position x realised return over reported outcomes (model in service).",
            registry=reg,
        )
        self.roi_drift = Gauge(
            "plus_ultra_roi_drift",
            "Live mean return per outcome minus the backtest's mean per prediction.",
            registry=reg,
        )
        self.hit_rate_drift = Gauge(
            "plus_ultra_hit_rate_drift",
            "Live directional hit rate minus the backtest's (calibration of the forecasts).",
            registry=reg,
        )

        self._monitoring(reg)

    def _monitoring(self, reg: CollectorRegistry) -> None:
        """Positions, freshness, live statistics and drift."""
        self._lock = threading.Lock()
        self._newest_bar = -math.inf
        self._series: dict[int, set[str]] = {}  # label values in each labelled gauge
        self.model_data_end = Gauge(
            "plus_ultra_model_data_end_timestamp_seconds",
            "Unix time of the newest bar the model in service was trained on (its staleness).",
            registry=reg,
        )
        self.model_data_end.set(math.nan)
        self.input_bar = Gauge(
            "plus_ultra_input_bar_timestamp_seconds",
            "Unix time of the newest input bar any prediction has read (data freshness).",
            registry=reg,
        )
        self.input_bar.set(math.nan)  # no prediction yet: no freshness to judge
        self.positions = Histogram(
            "plus_ultra_position",
            "Served positions (target exposure in [-1, 1]), one per symbol and prediction.",
            buckets=POSITION_BUCKETS,
            registry=reg,
        )
        self.gross = Gauge(
            "plus_ultra_gross_exposure",
            "Mean |position| of the latest served prediction.",
            registry=reg,
        )
        self.net = Gauge(
            "plus_ultra_net_exposure",
            "Mean position of the latest served prediction.",
            registry=reg,
        )
        self.live_outcomes = Gauge(
            "plus_ultra_live_outcomes",
            "Outcomes matched to the predictions of the model in service.",
            registry=reg,
        )
        self.roi_drift_z = Gauge(
            "plus_ultra_roi_drift_z",
            "ROI drift over the live mean's standard error (|z| > 2 is unlikely without drift).",
            registry=reg,
        )
        self.calibration_error = Gauge(
            "plus_ultra_calibration_error",
            "Live calibration of the model in service: ece (probabilities) or "
            "quantile_coverage (quantile heads), as the training diagnostics measure it.",
            ["statistic"],
            registry=reg,
        )
        self.calibration_drift = Gauge(
            "plus_ultra_calibration_drift",
            "Live calibration error minus the run's last validation epoch's.",
            ["statistic"],
            registry=reg,
        )
        self.feature_psi = Gauge(
            "plus_ultra_feature_drift_psi",
            "Population stability index of a feature's served values against training.",
            ["feature"],
            registry=reg,
        )
        self.feature_ks = Gauge(
            "plus_ultra_feature_drift_ks",
            "Two-sample KS statistic of a feature's served values against training.",
            ["feature"],
            registry=reg,
        )
        self.drift_available = Gauge(
            "plus_ultra_drift_available",
            "1 when feature drift is measured (a reference and enough served rows), else 0.",
            registry=reg,
        )
        self.drift_rows = Gauge(
            "plus_ultra_drift_window_rows",
            "Served feature rows in the drift window.",
            registry=reg,
        )
        self.drifted_features = Gauge(
            "plus_ultra_drifted_features",
            "Features whose PSI is above service.psi_threshold.",
            registry=reg,
        )
        self.regime_shift = Gauge(
            "plus_ultra_regime_shift",
            "1 when at least service.regime_shift_share of the features drifted at once.",
            registry=reg,
        )

    def set_model(
        self,
        version: str,
        checkpoint: str,
        architecture: str,
        head: str,
        loaded_at: float,
        data_end: float | None = None,
    ) -> None:
        """Point the model gauges at a newly swapped-in model (``data_end``: unix time of
        its newest training bar)."""
        self.model_info.clear()
        self.model_info.labels(version, checkpoint, architecture, head).set(1)
        self.model_loaded.set(loaded_at)
        self.model_data_end.set(math.nan if data_end is None else data_end)

    def observe_served(self, positions: np.ndarray, newest_bar: float) -> None:
        """One served prediction: its positions and its newest input bar (unix seconds)."""
        values = positions.tolist()  # plain floats: cheaper than numpy on a few symbols
        for p in values:
            self.positions.observe(p)
        if values:
            self.gross.set(sum(map(abs, values)) / len(values))
            self.net.set(sum(values) / len(values))
        if newest_bar > self._newest_bar:  # only moves forward: a backfill does not rewind it
            with self._lock:
                if newest_bar > self._newest_bar:
                    self._newest_bar = newest_bar
                    self.input_bar.set(newest_bar)

    def publish_live(self, stats: LiveStats) -> None:
        """The live statistics of the model in service."""
        self.live_pnl.set(stats.pnl)
        self.live_outcomes.set(stats.n)
        self.roi_drift.set(_value(stats.roi_drift))
        self.roi_drift_z.set(_value(stats.roi_drift_z))
        self.hit_rate_drift.set(_value(stats.hit_rate_drift))
        errors = {"ece": stats.ece, "quantile_coverage": stats.quantile_coverage_error}
        drifts = {"ece": stats.ece_drift, "quantile_coverage": stats.quantile_coverage_error_drift}
        self._replace(self.calibration_error, {k: v for k, v in errors.items() if v is not None})
        self._replace(self.calibration_drift, {k: v for k, v in drifts.items() if v is not None})

    def publish_drift(self, report: DriftReport) -> None:
        """The feature drift of the served inputs."""
        self.drift_available.set(int(report.available))
        self.drift_rows.set(report.rows)
        self._replace(self.feature_psi, {d.feature: d.psi for d in report.features})
        self._replace(self.feature_ks, {d.feature: d.ks for d in report.features})
        self.drifted_features.set(len(report.drifted) if report.available else math.nan)
        self.regime_shift.set(int(report.regime_shift) if report.available else math.nan)

    def _replace(self, gauge: Gauge, values: dict[str, float]) -> None:
        """Set the one-label ``gauge`` to ``values`` and drop its other series. Series that
        stay are overwritten, never cleared first: a concurrent scrape sees each of them
        throughout (a gap would restart the ``for:`` clock of an alert on it)."""
        with self._lock:
            known = self._series.get(id(gauge), set())
            for key, value in values.items():
                gauge.labels(key).set(value)
            for key in known - values.keys():
                gauge.remove(key)
            self._series[id(gauge)] = set(values)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _value(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan
