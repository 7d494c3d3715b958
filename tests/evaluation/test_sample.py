"""Which bars are scored: sample labels from a run's splits and the default selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.sample import (
    label_samples,
    sample_bounds,
    select_sample,
)

DAYS = pd.date_range("2020-01-01", periods=20, freq="D", tz="UTC")
INFO = {
    "splits": {
        "train": {"start": "2020-01-03T00:00:00+00:00", "end": "2020-01-08T00:00:00+00:00"},
        "val": {"start": "2020-01-11T00:00:00+00:00", "end": "2020-01-12T00:00:00+00:00"},
        "test": {"start": "2020-01-15T00:00:00+00:00", "end": "2020-01-16T00:00:00+00:00"},
    },
    "data_end": "2020-01-17T00:00:00+00:00",
}


def _frame(labels) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": DAYS,
            "symbol": "AAA",
            "position": 0.5,
            "realised_return": 0.01,
            "sample": labels,
        }
    )


def test_labels_follow_the_runs_splits_with_embargoes_kept_in_sample():
    labels = label_samples(DAYS, sample_bounds(INFO))
    by_day = dict(zip(DAYS.day, labels, strict=True))
    # before the training split and its embargo rows (Jan 9-10) count as training bars
    assert [by_day[d] for d in (1, 2, 3, 8, 9, 10)] == ["train"] * 6
    # validation and its embargo (Jan 13-14: early stopping saw their returns)
    assert [by_day[d] for d in (11, 12, 13, 14)] == ["val"] * 4
    # the test split runs to the end of the run's data; later bars are unseen
    assert [by_day[d] for d in (15, 16, 17)] == ["test"] * 3
    assert [by_day[d] for d in (18, 19, 20)] == ["unseen"] * 3


def test_older_run_without_data_end_and_empty_splits():
    info = {"splits": {**INFO["splits"], "test": {"start": None, "end": None}}}
    labels = label_samples(DAYS, sample_bounds(info))
    assert labels[DAYS.day == 12][0] == "val" and labels[DAYS.day == 13][0] == "unseen"
    with pytest.raises(ValueError, match=r"no splits\.train"):
        sample_bounds({})


def test_default_selection_scores_out_of_sample_bars_only():
    frame = _frame(label_samples(DAYS, sample_bounds(INFO)))
    scored, sample = select_sample(frame)
    assert set(scored["sample"]) == {"test", "unseen"} and len(scored) == 6
    assert sample.out_of_sample and sample.n_bars == 6 and sample.n_left_out == 14
    assert sample.describe() == (
        "out of sample 2020-01-15 .. 2020-01-20, 6 bars; 14 in-sample bars left out"
    )
    assert sample.as_dict()["start"] == "2020-01-15T00:00:00+00:00"


def test_include_in_sample_and_files_without_labels_say_so():
    frame = _frame(label_samples(DAYS, sample_bounds(INFO)))
    scored, sample = select_sample(frame, include_in_sample=True)
    assert len(scored) == 20 and sample.scored == "all"
    assert sample.describe().startswith("includes in-sample bars 2020-01-01 .. 2020-01-20")
    assert "not out of sample" in sample.notice
    own, plain = select_sample(frame.drop(columns="sample"))
    assert len(own) == 20 and plain.scored == "as_given" and "scored as given" in plain.notice


def test_all_in_sample_or_unknown_labels_are_errors():
    with pytest.raises(ValueError, match=r"all 20 rows are in-sample.*--include-in-sample"):
        select_sample(_frame(np.full(20, "train", dtype=object)))
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['holdout'\]"):
        select_sample(_frame(np.full(20, "holdout", dtype=object)))
