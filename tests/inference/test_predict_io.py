"""The predict command's files, written by the library: metrics in three formats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from market_nn_plus_ultra.config import EvaluationConfig
from market_nn_plus_ultra.inference.predict_io import predict_files, write_metrics

METRICS = {"sharpe": math.nan, "total_return": 0.123456, "n_periods": 29, "sample": "all"}


def test_json_metrics_are_strict(tmp_path):
    path = write_metrics({**METRICS, "cagr": np.float64("inf")}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {
        "sharpe": None,
        "total_return": 0.123456,
        "n_periods": 29,
        "sample": "all",
        "cagr": None,
    }


def test_csv_metrics_leave_undefined_values_empty(tmp_path):
    text = write_metrics(METRICS, tmp_path / "m.csv").read_text()
    assert text == "metric,value\nsharpe,\ntotal_return,0.123456\nn_periods,29\nsample,all\n"


def test_markdown_metrics_are_a_table(tmp_path):
    text = write_metrics(METRICS, tmp_path / "m.MD").read_text()
    assert text.splitlines() == [
        "| metric | value |",
        "|---|---:|",
        "| sharpe | nan |",
        "| total_return | 0.1235 |",
        "| n_periods | 29 |",
        "| sample | all |",
    ]


def test_bad_suffixes_are_refused_before_the_model_loads(tmp_path):
    gone = tmp_path / "no-such-run"  # never opened: the suffix check comes first
    with pytest.raises(ValueError, match=r"--output .*p\.txt: unsupported extension '\.txt'"):
        predict_files(gone, tmp_path / "p.txt", tmp_path / "db.sqlite", EvaluationConfig())
    with pytest.raises(ValueError, match=r"--metrics-output .*unsupported extension '\.xlsx'"):
        predict_files(
            gone,
            tmp_path / "p.parquet",
            tmp_path / "db.sqlite",
            EvaluationConfig(),
            metrics_output=tmp_path / "m.xlsx",
        )
    with pytest.raises(ValueError, match="unsupported extension"):
        write_metrics(METRICS, tmp_path / "m.txt")
    assert list(tmp_path.iterdir()) == []
