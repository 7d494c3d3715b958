"""Per-symbol usage of the tensors: usable cells, windows per split, the column that blanks them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.windows import (
    MarketTensors,
    SlidingWindowDataset,
    Split,
    WindowsError,
    symbol_report,
)


def _panel() -> pd.DataFrame:
    """12 shared daily bars of A and B, 2 bars of C; `f` is NaN for all of B, `g` warms up on A.

    Per symbol, by hand (features close, f, g):
    - A: g NaN on its first 3 bars → usable rows 3..11 (9 cells), missing [0, 0, 3];
    - B: f NaN on all 12 bars → 0 usable, missing [0, 12, 0];
    - C: bars on days 10 and 11 only, every feature finite → 2 usable, missing [0, 0, 0].
    """
    days = pd.date_range("2024-01-01", periods=12, freq="D", tz="UTC")
    close = 100.0 + np.arange(12.0)
    a = pd.DataFrame({"timestamp": days, "symbol": "A", "close": close, "f": 1.0, "g": close})
    a.loc[:2, "g"] = np.nan
    b = pd.DataFrame({"timestamp": days, "symbol": "B", "close": close, "f": np.nan, "g": 2.0})
    c = pd.DataFrame(
        {"timestamp": days[10:], "symbol": "C", "close": [50.0, 51.0], "f": 0.0, "g": 0.0}
    )
    return pd.concat([a, b, c]).set_index(["timestamp", "symbol"]).sort_index()


@pytest.fixture(scope="module")
def tensors() -> MarketTensors:
    return MarketTensors.from_panel(_panel(), ["close", "f", "g"], horizon=1)


def test_missing_counts_per_symbol_and_feature(tensors):
    assert tensors.symbols == ["A", "B", "C"]
    np.testing.assert_array_equal(tensors.missing, [[0, 0, 3], [0, 12, 0], [0, 0, 0]])
    np.testing.assert_array_equal(tensors.usable_cells(), [9, 0, 2])


def test_report_counts_windows_per_split_by_hand(tensors):
    # W = 3, H = 1. A window ends on a usable cell with a known next return, at row >= 2.
    # A: usable rows 3..11, row 11 has no next bar → end rows 3..10. Train owns rows 0..6
    # but its targets must lie before row 7, so row 6 (target row 7) is out → 3, 4, 5;
    # val owns rows 8..11 → 8, 9, 10 (targets before row 12) → 3 windows.
    # C: rows 10, 11 usable, only row 10 has a target; it lies in val → 1 window.
    train = Split("train", range(0, 7), window=3, horizon=1, target_limit=7)
    val = Split("val", range(8, 12), window=3, horizon=1, target_limit=12)
    datasets = {
        name: SlidingWindowDataset(tensors, 3, split=split)
        for name, split in (("train", train), ("val", val))
    }
    report = symbol_report(tensors, datasets)
    rows = {r.symbol: r for r in report.rows}
    assert (rows["A"].bars, rows["A"].usable, rows["A"].windows) == (12, 9, {"train": 3, "val": 3})
    assert (rows["B"].bars, rows["B"].usable, rows["B"].windows) == (12, 0, {"train": 0, "val": 0})
    assert (rows["C"].bars, rows["C"].usable, rows["C"].windows) == (2, 2, {"train": 0, "val": 1})
    assert rows["A"].blanking == ("g",) and rows["A"].blanked == 3
    assert rows["B"].blanking == ("f",) and rows["B"].blanked == 12
    assert rows["C"].blanking == () and rows["C"].blanked == 0
    # every window is counted once: the per-symbol counts add up to the dataset sizes
    for name, ds in datasets.items():
        assert sum(r.windows[name] for r in report.rows) == len(ds)
    frame = report.to_frame()
    assert list(frame["usable_cells"]) == [9, 0, 2]
    assert list(frame["val_windows"]) == [3, 0, 1]
    text = report.format()
    assert "f (12 bars)" in text and text.splitlines()[0].split()[:5] == [
        "symbol",
        "bars",
        "usable",
        "train",
        "val",
    ]


def test_multi_symbol_items_count_each_symbol(tensors):
    ds = SlidingWindowDataset(tensors, 3, symbols_per_item="all")
    # A ends on rows 3..10 (8), B never, C on row 10 (1)
    np.testing.assert_array_equal(ds.windows_per_symbol(), [8, 0, 1])


def test_symbol_without_windows_is_an_error_naming_the_column(tensors):
    report = symbol_report(tensors, {"train": SlidingWindowDataset(tensors, 3)})
    with pytest.raises(WindowsError) as err:
        report.check()
    message = str(err.value)
    assert "1 of 3 symbol(s) have no complete windows in any split (B)" in message
    assert "B: column `f` is NaN on 12 of its 12 bars, leaving 0 usable" in message
    assert "drop it from the features" in message and "leave B out of data.symbols" in message
    with pytest.raises(WindowsError, match="`f` is an alternative series: set asset_classes"):
        report.check(hints={"f": "`f` is an alternative series: set asset_classes."})


def test_too_short_history_names_the_window(tensors):
    ds = SlidingWindowDataset(tensors, 3, calendar="own")
    report = symbol_report(tensors, {"train": ds})
    rows = {r.symbol: r for r in report.rows}
    assert rows["A"].windows == {"train": 8}  # own bars 3..10 (its first 3 are masked)
    assert rows["C"].windows == {"train": 0}  # 2 own bars, a window needs 3
    with pytest.raises(WindowsError) as err:
        report.check()
    message = str(err.value)
    assert "2 of 3 symbol(s) have no complete windows in any split (B, C)" in message
    assert "C: 2 bars, 2 usable, but no window ends on one of them" in message
    assert "windows.window=3" in message and "shorten windows.window" in message
