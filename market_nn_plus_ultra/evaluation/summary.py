"""The walk-forward summary as typed, frozen results, and its JSON file format.

:class:`WalkForwardSummary` is what :meth:`~.walkforward.WalkForwardBacktester.run`
returns in ``WalkForwardResult.summary``; the CLI, the report and the demo read it by
attribute (``summary.strategies["model"].stitched["sharpe"]``). ``summary.json`` is a
public file format: :meth:`WalkForwardSummary.to_dict` gives exactly its structure
(every key, in the order the file has always had), and
:meth:`WalkForwardSummary.from_dict` reads it back. Older files that lack the
``bootstrap``, ``sample`` or ``sharpe_difference`` blocks, or individual keys of a block,
load with those parts absent (``None`` / empty).

The file::

    {"settings": {train_window, test_window, step, embargo, expanding, cost_bps},
     "n_splits", "oos_start", "oos_end",              # ISO-8601 bounds of the test bars
     "strategies": {name: {"stitched": {metric: value}, "split_mean": {...},
                           "split_std": {...}, "regimes"?: {label: {metric: value}}}},
     "skipped_baselines": {name: why},
     "sample"?: {scored, start, end, n_bars, n_rows, n_left_out, notice, description},
     "bootstrap"?: {level, reps, block_length, "model": {metric: {estimate, low, high}},
                    "prob_model_sharpe_exceeds": {baseline: p},
                    "sharpe_difference": {baseline: {estimate, low, high, p_value, ...}}},
     "guardrail_breaches"?: {rule: count},
     "retrain"?: {output_dir, predictions, window, horizon, folds: [...]}}

Keys marked ``?`` appear only when that part was computed. Metric values are floats
(annualised with the data's periods per year); an undefined one (NaN in memory) is
``null`` in the file and ``None`` after :meth:`~WalkForwardSummary.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .sample import ScoredSample

__all__ = [
    "BootstrapSummary",
    "Interval",
    "RetrainSummary",
    "SampleSummary",
    "SharpeDifference",
    "StrategySummary",
    "WalkForwardSettings",
    "WalkForwardSummary",
    "is_walkforward_summary",
]

Metrics = Mapping[str, Any]  # metric key → float (None where the file holds null)


def _stamp(value: Any) -> pd.Timestamp | None:
    """An ISO-8601 text or timestamp as a UTC ``pd.Timestamp`` (None stays None)."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def _block(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``raw[key]`` when it is a mapping, else an empty one (older or hand-written files)."""
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _metrics(raw: Any) -> dict[str, Any]:
    return dict(raw) if isinstance(raw, Mapping) else {}


@dataclass(frozen=True, slots=True)
class WalkForwardSettings:
    """The folds' settings: windows in bars, costs in bps per unit of |Δposition|."""

    train_window: int | None = None
    test_window: int | None = None
    step: int | None = None  # the test window when the config left it null
    embargo: int | None = None
    expanding: bool | None = None
    cost_bps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_window": self.train_window,
            "test_window": self.test_window,
            "step": self.step,
            "embargo": self.embargo,
            "expanding": self.expanding,
            "cost_bps": self.cost_bps,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WalkForwardSettings:
        return cls(
            raw.get("train_window"),
            raw.get("test_window"),
            raw.get("step"),
            raw.get("embargo"),
            raw.get("expanding"),
            raw.get("cost_bps"),
        )


@dataclass(frozen=True, slots=True)
class StrategySummary:
    """One strategy's metrics: over the stitched test bars, and mean / std over folds.

    ``regimes``: label → metrics over the bars of that label (None without a regime
    column).
    """

    stitched: Metrics = field(default_factory=dict)
    split_mean: Metrics = field(default_factory=dict)
    split_std: Metrics = field(default_factory=dict)
    regimes: Mapping[str, Metrics] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stitched": dict(self.stitched),
            "split_mean": dict(self.split_mean),
            "split_std": dict(self.split_std),
        }
        if self.regimes is not None:
            out["regimes"] = {label: dict(m) for label, m in self.regimes.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StrategySummary:
        regimes = raw.get("regimes")
        return cls(
            _metrics(raw.get("stitched")),
            _metrics(raw.get("split_mean")),
            _metrics(raw.get("split_std")),
            None
            if not isinstance(regimes, Mapping)
            else {str(k): _metrics(v) for k, v in regimes.items()},
        )


@dataclass(frozen=True, slots=True)
class Interval:
    """A bootstrap percentile interval around a point estimate."""

    estimate: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Interval:
        return cls(raw.get("estimate"), raw.get("low"), raw.get("high"))


# The keys of one paired Sharpe difference, in the file's order (see paired.sharpe_differences).
_DIFFERENCE_KEYS = (
    "estimate",
    "low",
    "high",
    "p_value",
    "p_adjusted",
    "low_adjusted",
    "high_adjusted",
    "significant",
    "n",
    "prob_beat",
    "level",
    "reps",
    "block_length",
    "adjust",
)


@dataclass(frozen=True, slots=True)
class SharpeDifference:
    """Sharpe(model) − Sharpe(baseline) on the same resampled bars (paired bootstrap).

    ``estimate``: annualised difference; ``low``/``high``: percentile interval at
    ``level``; ``p_value``: two-sided; ``p_adjusted`` and ``low_adjusted``/
    ``high_adjusted``: after the multiple-comparison ``adjust`` (holm by default);
    ``significant``: ``p_adjusted < 1 − level``; ``n``: shared bars; ``prob_beat``: share
    of resamples with a positive difference; ``block_length``: mean block, in bars.
    Fields an older file lacks are None.
    """

    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    low_adjusted: float | None = None
    high_adjusted: float | None = None
    significant: bool | None = None
    n: int | None = None
    prob_beat: float | None = None
    level: float | None = None
    reps: int | None = None
    block_length: float | None = None
    adjust: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _DIFFERENCE_KEYS}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SharpeDifference:
        return cls(**{key: raw.get(key) for key in _DIFFERENCE_KEYS})


@dataclass(frozen=True, slots=True)
class BootstrapSummary:
    """Stationary-bootstrap results at ``level`` with ``reps`` resamples.

    ``model``: metric → interval of the model's stitched returns; ``block_length``: the
    mean block in bars; ``prob_model_sharpe_exceeds``: baseline → P(model Sharpe >
    baseline Sharpe); ``sharpe_difference``: baseline → paired difference (empty in
    files written before it existed, or without baselines).
    """

    level: float | None = None
    reps: int | None = None
    block_length: float | None = None
    model: Mapping[str, Interval] = field(default_factory=dict)
    prob_model_sharpe_exceeds: Mapping[str, float | None] = field(default_factory=dict)
    sharpe_difference: Mapping[str, SharpeDifference] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "reps": self.reps,
            "block_length": self.block_length,
            "model": {metric: i.to_dict() for metric, i in self.model.items()},
            "prob_model_sharpe_exceeds": dict(self.prob_model_sharpe_exceeds),
            "sharpe_difference": {n: d.to_dict() for n, d in self.sharpe_difference.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BootstrapSummary:
        return cls(
            raw.get("level"),
            raw.get("reps"),
            raw.get("block_length"),
            {str(k): Interval.from_dict(v) for k, v in _block(raw, "model").items()},
            dict(_block(raw, "prob_model_sharpe_exceeds")),
            {
                str(k): SharpeDifference.from_dict(v)
                for k, v in _block(raw, "sharpe_difference").items()
                if isinstance(v, Mapping)
            },
        )


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """Which bars were scored (see :class:`~.sample.ScoredSample`), with its one-line text.

    ``scored``: ``out_of_sample`` | ``all`` | ``as_given``; ``start``/``end``: the scored
    span (UTC); ``n_bars``: distinct timestamps; ``n_rows``: rows of the file kept;
    ``n_left_out``: in-sample timestamps dropped.
    """

    scored: str | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    n_bars: int | None = None
    n_rows: int | None = None
    n_left_out: int | None = None
    notice: str | None = None
    description: str | None = None

    @classmethod
    def from_scored(cls, sample: ScoredSample) -> SampleSummary:
        return cls.from_dict(sample.as_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "n_bars": self.n_bars,
            "n_rows": self.n_rows,
            "n_left_out": self.n_left_out,
            "notice": self.notice,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SampleSummary:
        return cls(
            raw.get("scored"),
            _stamp(raw.get("start")),
            _stamp(raw.get("end")),
            raw.get("n_bars"),
            raw.get("n_rows"),
            raw.get("n_left_out"),
            raw.get("notice"),
            raw.get("description"),
        )


@dataclass(frozen=True, slots=True)
class RetrainSummary:
    """The retrain mode's run: fold folders under ``output_dir``, stitched ``predictions``.

    ``window``/``horizon``: the model's, in bars (they purge the folds). ``folds``: one
    record per fold as its ``fold.json`` holds it (``fold``, ``train_*``, ``read_*``,
    ``test_*`` bounds as ISO-8601 and ``[start, stop)`` calendar rows) plus ``status``
    (``trained`` now or ``reused`` from an earlier run).
    """

    output_dir: str
    predictions: str
    window: int
    horizon: int
    folds: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "predictions": self.predictions,
            "window": self.window,
            "horizon": self.horizon,
            "folds": [dict(f) for f in self.folds],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RetrainSummary:
        return cls(
            raw.get("output_dir"),
            raw.get("predictions"),
            raw.get("window"),
            raw.get("horizon"),
            tuple(dict(f) for f in raw.get("folds") or ()),
        )


@dataclass(frozen=True, slots=True)
class WalkForwardSummary:
    """Everything a walk-forward scored: settings, folds' span, every strategy's metrics.

    ``oos_start``/``oos_end``: the first and last test bar (UTC). ``strategies``: name →
    metrics, the model (``"model"``) first. ``skipped_baselines``: name → why it did not
    run. ``sample``: which bars were scored (None when the caller did not say).
    ``bootstrap``: intervals and paired tests (None with ``--no-bootstrap``).
    ``guardrail_breaches``: rule → positions changed (None without guardrails).
    ``retrain``: the retrain mode's folds (None when a predictions file was scored).
    Frozen: add a part with ``dataclasses.replace(summary, sample=...)``.
    """

    settings: WalkForwardSettings
    n_splits: int | None
    oos_start: pd.Timestamp | None
    oos_end: pd.Timestamp | None
    strategies: Mapping[str, StrategySummary]
    skipped_baselines: Mapping[str, str] = field(default_factory=dict)
    sample: SampleSummary | None = None
    bootstrap: BootstrapSummary | None = None
    guardrail_breaches: Mapping[str, int] | None = None
    retrain: RetrainSummary | None = None

    @property
    def model(self) -> StrategySummary | None:
        """The model's metrics (None in a summary without it)."""
        return self.strategies.get("model")

    @property
    def n_bars(self) -> int | None:
        """The model's scored bars: its stitched ``n_periods`` (None when unknown)."""
        model = self.model
        value = None if model is None else model.stitched.get("n_periods")
        return None if value is None else int(value)

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` structure (timestamps as ISO-8601; NaN left to the writer)."""
        out: dict[str, Any] = {
            "settings": self.settings.to_dict(),
            "n_splits": self.n_splits,
            "oos_start": None if self.oos_start is None else self.oos_start.isoformat(),
            "oos_end": None if self.oos_end is None else self.oos_end.isoformat(),
            "strategies": {name: s.to_dict() for name, s in self.strategies.items()},
            "skipped_baselines": dict(self.skipped_baselines),
        }
        # The order the file has always had: sample, bootstrap, then what callers add.
        if self.sample is not None:
            out["sample"] = self.sample.to_dict()
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap.to_dict()
        if self.guardrail_breaches is not None:
            out["guardrail_breaches"] = dict(self.guardrail_breaches)
        if self.retrain is not None:
            out["retrain"] = self.retrain.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WalkForwardSummary:
        """A summary read from ``summary.json`` (missing parts become None / empty).

        Raises ``ValueError`` when ``raw`` has no ``strategies`` block: it is then not a
        walk-forward summary.
        """
        if not is_walkforward_summary(raw):
            raise ValueError(
                "walk-forward summary: no 'strategies' block (keys present: "
                f"{sorted(map(str, raw))[:10]}) — pass the summary.json that "
                "`plus-ultra walkforward` wrote (--summary-output)"
            )
        sample, boot, breaches, retrain = (raw.get(k) for k in _OPTIONAL)
        return cls(
            settings=WalkForwardSettings.from_dict(_block(raw, "settings")),
            n_splits=raw.get("n_splits"),
            oos_start=_stamp(raw.get("oos_start")),
            oos_end=_stamp(raw.get("oos_end")),
            strategies={
                str(name): StrategySummary.from_dict(s if isinstance(s, Mapping) else {})
                for name, s in raw["strategies"].items()
            },
            skipped_baselines={str(k): str(v) for k, v in _block(raw, "skipped_baselines").items()},
            sample=SampleSummary.from_dict(sample) if isinstance(sample, Mapping) else None,
            bootstrap=BootstrapSummary.from_dict(boot) if isinstance(boot, Mapping) else None,
            guardrail_breaches=dict(breaches) if isinstance(breaches, Mapping) else None,
            retrain=RetrainSummary.from_dict(retrain) if isinstance(retrain, Mapping) else None,
        )


_OPTIONAL = ("sample", "bootstrap", "guardrail_breaches", "retrain")


def is_walkforward_summary(raw: Any) -> bool:
    """True when ``raw`` is a mapping with a ``strategies`` block (a walk-forward summary)."""
    return isinstance(raw, Mapping) and isinstance(raw.get("strategies"), Mapping)
