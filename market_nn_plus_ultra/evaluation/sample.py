"""Which bars a predictions file may be scored on: the model's out-of-sample bars only.

A trained run knows its splits. :func:`label_samples` gives every prediction the sample
its bar belongs to, and ``plus-ultra predict`` writes it as the ``sample`` column, with
the run's split bounds in the file's metadata (:data:`METADATA_KEY`):

- ``train`` — a bar of the training split, the embargo rows after it (their returns were
  training targets), and any bar *before* the training split (a model fitted on later
  years that scores earlier ones is not a forward test);
- ``val`` — the validation split and the embargo after it (early stopping and checkpoint
  selection saw their returns);
- ``test`` — the test split up to the end of the run's data: never trained or validated on;
- ``unseen`` — bars after the run's data.

:func:`select_sample` keeps the ``test`` and ``unseen`` rows (or every row with
``include_in_sample=True``) and returns a :class:`ScoredSample` that says what was scored,
for the command to print and for every output to carry. A file without a ``sample`` column
(a user's own predictions) is scored as it is, with a notice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "IN_SAMPLE",
    "METADATA_KEY",
    "OUT_OF_SAMPLE",
    "SAMPLES",
    "SAMPLE_COLUMN",
    "ScoredSample",
    "label_samples",
    "sample_bounds",
    "select_sample",
]

log = logging.getLogger(__name__)

#: The predictions-file column naming each row's sample.
SAMPLE_COLUMN = "sample"
#: Samples the model trained or was validated on, then those it never saw.
IN_SAMPLE = ("train", "val")
OUT_OF_SAMPLE = ("test", "unseen")
SAMPLES = IN_SAMPLE + OUT_OF_SAMPLE
#: ``DataFrame.attrs`` key (kept in the Parquet file's metadata) holding the split bounds.
METADATA_KEY = "market_nn_plus_ultra.sample"


def _stamp(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def sample_bounds(model_info: Mapping[str, Any]) -> dict[str, Any]:
    """The split bounds of a run's ``model_info.json``, JSON-ready, for the file's metadata.

    ``{"splits": {name: {"start", "end"}}, "data_end": ISO-8601}`` with the splits in time
    order; ``data_end`` is the run's last bar (the last split's end for older runs).
    """
    splits = model_info.get("splits") or {}
    if "train" not in splits:
        raise ValueError(
            "model_info.json has no splits.train: the run cannot say which bars it trained "
            "on — retrain with `plus-ultra train` to get a complete run folder"
        )
    bounds = {
        name: {"start": splits[name].get("start"), "end": splits[name].get("end")}
        for name in ("train", "val", "test")
        if name in splits
    }
    ends = [b["end"] for b in bounds.values() if b["end"] is not None]
    data_end = model_info.get("data_end") or (max(ends, key=_stamp) if ends else None)
    return {"splits": bounds, "data_end": data_end}


def label_samples(
    timestamps: pd.DatetimeIndex | np.ndarray, bounds: Mapping[str, Any]
) -> np.ndarray:
    """The sample of each timestamp under ``bounds`` (from :func:`sample_bounds`).

    A bar belongs to the last split that started at or before it (so embargo rows go with
    the split before them), ``train`` before the first split, ``unseen`` after
    ``data_end``. Returns an object array of labels.
    """
    stamps = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
    labels = np.full(len(stamps), "train", dtype=object)
    starts = [
        (name, _stamp(b["start"]))
        for name, b in bounds["splits"].items()
        if b.get("start") is not None
    ]
    for name, start in sorted(starts, key=lambda item: item[1]):
        labels[stamps >= start] = name
    data_end = _stamp(bounds.get("data_end"))
    if data_end is not None:
        labels[stamps > data_end] = "unseen"
    return labels


@dataclass(frozen=True)
class ScoredSample:
    """What a command scored: the sample rule, its bars and what was left out.

    ``scored``: ``"out_of_sample"`` (the default rule), ``"all"`` (``--include-in-sample``)
    or ``"as_given"`` (the file has no sample column). ``n_bars``: distinct timestamps
    scored; ``n_left_out``: distinct in-sample timestamps dropped.
    """

    scored: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    n_bars: int
    n_rows: int
    n_left_out: int = 0
    notice: str | None = None

    @property
    def out_of_sample(self) -> bool:
        """True when every scored bar is one the model never trained or validated on."""
        return self.scored == "out_of_sample"

    @property
    def label(self) -> str:
        """A title fragment: what these numbers are."""
        return {
            "out_of_sample": "out of sample",
            "all": "includes in-sample bars",
            "as_given": "sample unknown",
        }[self.scored]

    def restrict(self, start: pd.Timestamp, end: pd.Timestamp, n_bars: int) -> ScoredSample:
        """The same rule over a narrower span (e.g. the walk-forward's test folds)."""
        return ScoredSample(
            self.scored, start, end, n_bars, self.n_rows, self.n_left_out, self.notice
        )

    def describe(self) -> str:
        """One line: ``out of sample 2011-09-12 .. 2012-08-24, 1,000 bars; 2,898 in-sample
        bars left out``."""
        span = f"{_date(self.start)} .. {_date(self.end)}" if self.start is not None else "no bars"
        text = f"{self.label} {span}, {self.n_bars:,} bars"
        if self.n_left_out:
            text += f"; {self.n_left_out:,} in-sample bars left out"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO-8601, plus ``description``."""
        payload = asdict(self)
        for key in ("start", "end"):
            payload[key] = None if payload[key] is None else payload[key].isoformat()
        payload["description"] = self.describe()
        return payload


def _date(stamp: pd.Timestamp | None) -> str:
    if stamp is None:
        return "?"
    if stamp == stamp.normalize():
        return stamp.strftime("%Y-%m-%d")
    return stamp.strftime("%Y-%m-%d %H:%M")


def _span(stamps: pd.Series) -> tuple[pd.Timestamp | None, pd.Timestamp | None, int]:
    if stamps.empty:
        return None, None, 0
    stamps = pd.to_datetime(stamps, utc=True)
    return stamps.min(), stamps.max(), int(stamps.nunique())


def has_out_of_sample(frame: pd.DataFrame) -> bool:
    """True when some row may be scored by default (a test/unseen row, or no sample column)."""
    if SAMPLE_COLUMN not in frame.columns:
        return True
    return bool(frame[SAMPLE_COLUMN].isin(OUT_OF_SAMPLE).any())


def select_sample(
    frame: pd.DataFrame, *, include_in_sample: bool = False, what: str = "predictions"
) -> tuple[pd.DataFrame, ScoredSample]:
    """The rows to score and what they are.

    Default: only ``test``/``unseen`` rows. ``include_in_sample``: every row, and the
    :class:`ScoredSample` says the numbers include in-sample bars. Without a ``sample``
    column the file is scored as given, with a notice. Raises ``ValueError`` for labels
    outside :data:`SAMPLES` or a file with no out-of-sample row.
    """
    if SAMPLE_COLUMN not in frame.columns:
        start, end, n_bars = _span(frame["timestamp"])
        notice = (
            f"{what} have no {SAMPLE_COLUMN!r} column (not written by `plus-ultra predict` "
            "from a trained run): every row is scored as given — make sure the model never "
            "trained or validated on these bars"
        )
        return frame, ScoredSample("as_given", start, end, n_bars, len(frame), 0, notice)
    labels = frame[SAMPLE_COLUMN].astype(str)
    unknown = sorted(set(labels.unique()) - set(SAMPLES))
    if unknown:
        raise ValueError(
            f"{what}.{SAMPLE_COLUMN}: unknown label(s) {unknown[:5]}; the column holds one of "
            f"{list(SAMPLES)} per row — fix the labels or drop the column to score the file "
            "as given"
        )
    oos = labels.isin(OUT_OF_SAMPLE).to_numpy()
    if include_in_sample:
        start, end, n_bars = _span(frame["timestamp"])
        notice = (
            f"--include-in-sample: {int((~oos).sum()):,} rows the model trained or was "
            "validated on are scored — these numbers are not out of sample"
        )
        return frame, ScoredSample("all", start, end, n_bars, len(frame), 0, notice)
    if not oos.any():
        raise ValueError(
            f"{what}: all {len(frame):,} rows are in-sample (train/val): the model trained or "
            "was validated on every bar, so nothing can be scored out of sample — predict the "
            "bars after the run's validation split (the test split or newer data), or pass "
            "--include-in-sample to score them anyway (the numbers are then not out of sample)"
        )
    kept = frame[oos]
    start, end, n_bars = _span(kept["timestamp"])
    left = pd.to_datetime(frame.loc[~oos, "timestamp"], utc=True)
    n_left_out = int(left[~left.isin(pd.to_datetime(kept["timestamp"], utc=True))].nunique())
    kept = kept.reset_index(drop=True)
    kept.attrs = dict(frame.attrs)
    return kept, ScoredSample("out_of_sample", start, end, n_bars, len(kept), n_left_out)
