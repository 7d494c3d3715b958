"""``json_ready`` / ``write_json``: the one NaN→null rule for every JSON file written."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra._io import json_ready, write_json


@dataclasses.dataclass(frozen=True)
class _Result:
    sharpe: float
    window: tuple[int, int]


def test_non_finite_floats_become_null_at_any_depth():
    payload = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2.5)], "c": {"d": np.float64("nan")}}
    assert json_ready(payload) == {"a": None, "b": [1.0, None, [None, 2.5]], "c": {"d": None}}


def test_numpy_and_pandas_values_become_plain_python():
    out = json_ready(
        {
            "i": np.int64(7),
            "f": np.float32(0.5),
            "b": np.bool_(True),
            "arr": np.array([[1, 2], [3, 4]]),
            "t": pd.Timestamp("2024-03-01 09:30", tz="UTC"),
            "nat": pd.NaT,
            "d": datetime.date(2024, 1, 2),
            "p": Path("out") / "x.json",
            3: "int key",
        }
    )
    assert out == {
        "i": 7,
        "f": 0.5,
        "b": True,
        "arr": [[1, 2], [3, 4]],
        "t": "2024-03-01T09:30:00+00:00",
        "nat": None,
        "d": "2024-01-02",
        "p": str(Path("out") / "x.json"),
        "3": "int key",
    }
    assert type(out["i"]) is int and type(out["f"]) is float and type(out["b"]) is bool


def test_dataclasses_are_expanded_field_by_field():
    assert json_ready([_Result(sharpe=math.nan, window=(5, 10))]) == [
        {"sharpe": None, "window": [5, 10]}
    ]


def test_write_json_is_strict_and_ends_with_a_newline(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"sharpe": np.float64("nan"), "n": np.int32(3)})
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "NaN" not in text
    assert json.loads(text) == {"sharpe": None, "n": 3}
    assert text == json.dumps({"sharpe": None, "n": 3}, indent=2) + "\n"


def test_write_json_refuses_an_unreachable_nan_and_keeps_the_old_file(tmp_path):
    class Opaque:  # json_ready does not know it; json.dumps cannot encode it
        pass

    target = tmp_path / "m.json"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(TypeError):
        write_json(target, {"x": Opaque()})
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind
