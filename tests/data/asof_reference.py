"""The alternative-data as-of join written with pandas.merge_asof: the reference the
product's join is checked against, and a leaky variant for the audit's tests."""

from __future__ import annotations

import pandas as pd


def merge_asof_join(keys, side, columns, direction="backward"):
    """``alternative._asof`` through pandas.merge_asof (exact matches, tolerance);
    ``direction="forward"`` plants the look-ahead join the audit must catch."""
    per_symbol = columns[0].join == "per_symbol"
    right = side[["timestamp", *(["symbol"] if per_symbol else []), *(c.column for c in columns)]]
    right = right.rename(columns={c.column: c.feature for c in columns})
    stamps = pd.DatetimeIndex(pd.to_datetime(right["timestamp"], utc=True)).as_unit("ns")
    right = right.assign(timestamp=pd.Series(stamps, index=right.index))
    right = right.dropna(subset=["timestamp"]).sort_values("timestamp", kind="stable")
    if per_symbol:
        right = right.assign(symbol=right["symbol"].astype(str))
    left = keys.assign(_row=range(len(keys))).sort_values("timestamp", kind="stable")
    merged = pd.merge_asof(
        left,
        right,
        on="timestamp",
        by="symbol" if per_symbol else None,
        direction=direction,
        allow_exact_matches=True,
        tolerance=columns[0].max_staleness,
    ).sort_values("_row", kind="stable")
    out = merged[[c.feature for c in columns]].reset_index(drop=True)
    return out.apply(pd.to_numeric, errors="coerce").astype("float64")
