"""Daily bars on days their market is closed: the trace of dates read the wrong way round.

A file of weekday sessions whose ``03/04/2000`` was read as 4 March instead of 3 April
scatters about 2 in 7 of its misread bars onto Saturdays and Sundays. Per symbol of
``series`` whose bars are daily (median spacing between 20 hours and 4 days, so weekly
and month-end bars are left alone), the weekday of each bar's UTC date is checked
against the calendar of its ``assets.asset_class``:

- ``equity``, ``etf``, ``index``, ``stock``, ``fund``: no session on Saturday or Sunday;
- ``fx`` / ``forex``: no session on Saturday (Sunday may carry the week's first session);
- ``crypto``: trades every day, never flagged;
- any other or no class: a Saturday or Sunday is flagged when it holds bars but fewer
  than half as many as the average weekday — a 7-day market trades weekends at the
  weekday rate, a misread weekday file puts a scatter of bars there.

The finding is a warning (``weekend_bars``): ``data validate`` and imports report it,
``--strict`` fails on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .validation_checks import parse_times
from .validation_report import ValidationFailure

__all__ = ["WEEKDAY_CLASSES", "weekend_failure"]

#: Asset classes whose daily sessions fall on weekdays only (compared lower-case).
WEEKDAY_CLASSES = frozenset({"equity", "etf", "index", "stock", "fund"})
_SATURDAY_CLOSED = frozenset({"fx", "forex"})
_SEVEN_DAY = frozenset({"crypto"})
_DAILY_SPACING = (pd.Timedelta(hours=20), pd.Timedelta(days=4))
_N_DATES = 3


def _closed_weekend_days(asset_class: object, counts: np.ndarray) -> list[int]:
    """Weekend days (5 = Saturday, 6 = Sunday) on which a daily bar of this class is suspect.

    ``counts`` (7,) are the symbol's bars per weekday, Monday first.
    """
    cls = "" if asset_class is None or pd.isna(asset_class) else str(asset_class).strip().lower()
    if cls in _SEVEN_DAY:
        return []
    if cls in WEEKDAY_CLASSES:
        return [5, 6]
    if cls in _SATURDAY_CLOSED:
        return [5]
    weekday_rate = counts[:5].mean()
    return [d for d in (5, 6) if 0 < counts[d] < 0.5 * weekday_rate]


def weekend_failure(series: pd.DataFrame, assets: pd.DataFrame) -> ValidationFailure | None:
    """One warning listing every daily symbol with bars on a closed weekend day, or None.

    ``series`` holds ``symbol`` and ``timestamp`` (ISO text or datetimes, as stored);
    ``assets`` holds ``symbol`` and, when known, ``asset_class``.
    """
    if not {"symbol", "timestamp"} <= set(series.columns) or series.empty:
        return None
    classes: dict[str, object] = {}
    if {"symbol", "asset_class"} <= set(assets.columns):
        known = assets.dropna(subset=["symbol"])
        classes = dict(zip(known["symbol"].astype(str), known["asset_class"], strict=True))
    times = parse_times(series["timestamp"].reset_index(drop=True))
    frame = pd.DataFrame({"symbol": series["symbol"].astype(str).to_numpy(), "time": times})
    frame = frame[series["symbol"].notna().to_numpy() & times.notna().to_numpy()]
    frame = frame.drop_duplicates().sort_values(["symbol", "time"], kind="stable")
    frame["weekday"] = frame["time"].dt.day_of_week
    step = frame.groupby("symbol", sort=False)["time"].diff()
    spacing = step.where(step > pd.Timedelta(0)).groupby(frame["symbol"]).median()
    low, high = _DAILY_SPACING
    counts = pd.crosstab(frame["symbol"], frame["weekday"]).reindex(columns=range(7), fill_value=0)
    weekend = counts[[5, 6]].sum(axis=1) > 0
    candidates = counts.index[weekend & spacing.reindex(counts.index).between(low, high)]
    hits, keys, n_rows = [], [], 0
    for symbol in candidates:
        cls = classes.get(str(symbol))
        closed = _closed_weekend_days(cls, counts.loc[symbol].to_numpy())
        if not closed:
            continue
        rows = frame[frame["symbol"] == symbol]
        bad = rows.loc[rows["weekday"].isin(closed), "time"]
        if bad.empty:
            continue
        first = ", ".join(f"{t:%a %Y-%m-%d}" for t in bad.iloc[:_N_DATES])
        label = "no asset_class" if cls is None or pd.isna(cls) else str(cls)
        hits.append(f"{symbol} ({len(bad):,} of {len(rows):,}, {label}; first {first})")
        n_rows += len(bad)
        keys += [(str(symbol), f"{t:%Y-%m-%dT%H:%M:%SZ}") for t in bad.iloc[:5]]
    if not hits:
        return None
    text = (
        f"{n_rows:,} daily bars fall on a weekend their market is closed: {'; '.join(hits)} — "
        "dates read the wrong way round (day and month swapped)? Re-import with "
        "--date-format (e.g. --date-format '%d/%m/%Y'), or set assets.asset_class "
        "(crypto trades weekends) if these sessions are real"
    )
    return ValidationFailure(
        "series", "timestamp", "weekend_bars", n_rows, tuple(keys[:5]), text, "warning"
    )
