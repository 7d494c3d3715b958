"""Unusual gaps in a symbol's bars, robust to the closures of its trading calendar.

A plain "interval > tolerance × median interval" rule flags every night and weekend of
session data. Instead, per symbol:

1. weekdays on which the symbol (almost) never trades — Saturday and Sunday for an
   equity, none for a 24/7 crypto pair — are learnt from the bars and their full days
   are taken out of each interval (the *adjusted* interval);
2. intervals longer than ``tolerance`` × the median adjusted interval are *long*;
3. long intervals whose length recurs (at least every four weeks on average, ±10 % + 1 h
   so daylight-saving shifts still match) are the calendar's closures — nights, lunch
   breaks, maintenance windows — and are never reported;
4. a long interval that is not a closure is reported when there are no closures at all
   (a 24/7 market), when it exceeds ``tolerance`` × the typical closure (a multi-day
   outage: a one-day holiday is ≈2.4× a New York night, so it passes), or when it is
   shorter than half the shortest closure (a hole inside a session).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["find_gaps"]

_DAY = 86_400.0
_WEEK = 7 * _DAY
#: A weekday with fewer bars than this share of the busiest weekday counts as closed.
_CLOSED_SHARE = 0.05


def _closed_days_inside(
    day_prev: np.ndarray, day_cur: np.ndarray, closed: np.ndarray
) -> np.ndarray:
    """Full calendar days strictly between two bars that fall on a closed weekday.

    ``day_*`` are days since 1970-01-01 (a Thursday), ``closed`` is ``[n, 7]`` booleans
    (Monday first) per interval; returns ``[n]`` day counts.
    """
    n_days = np.maximum(day_cur - day_prev - 1, 0)
    first_wd = (day_prev + 1 + 3) % 7
    total = np.zeros(len(n_days), dtype=np.int64)
    for wd in range(7):  # count of weekday `wd` among n_days days starting at first_wd
        k0 = (wd - first_wd) % 7
        count = np.where(k0 < n_days, (n_days - 1 - k0) // 7 + 1, 0)
        total += count * closed[:, wd]
    return total


def _recurs(codes: np.ndarray, length: np.ndarray, min_count: np.ndarray) -> np.ndarray:
    """True where at least ``min_count`` intervals of the same symbol have a similar length."""
    order = np.lexsort((length, codes))
    offset = codes[order] * (length.max() * 4 + 1e6)  # keeps symbols apart on one axis
    keyed = offset + length[order]
    tol = 0.1 * length[order] + 3600.0
    lo = np.searchsorted(keyed, keyed - tol, side="left")
    hi = np.searchsorted(keyed, keyed + tol, side="right")
    out = np.empty(len(order), dtype=bool)
    out[order] = (hi - lo) >= min_count[order]
    return out


def find_gaps(symbols: pd.Series, times: pd.Series, tolerance: float) -> pd.DataFrame:
    """Gaps worth a warning in each symbol's bars.

    ``symbols`` and ``times`` (UTC datetimes) are aligned columns of a bar table, any
    order; rows with a missing value are ignored. Returns one row per reported gap,
    ordered by symbol and time: ``row`` (index label of the bar that ends the gap),
    ``symbol``, ``start`` and ``end`` (UTC), ``seconds`` (wall-clock length) and
    ``ratio`` (adjusted length / the threshold it broke, > 1).
    """
    columns = ["row", "symbol", "start", "end", "seconds", "ratio"]
    frame = pd.DataFrame({"symbol": symbols, "time": times}).dropna()
    frame = frame[~frame.duplicated()].sort_values(["symbol", "time"], kind="stable")
    if len(frame) < 3:
        return pd.DataFrame(columns=columns)
    codes = pd.factorize(frame["symbol"])[0]
    ns = frame["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    secs = ns.view(np.int64) / 1e9
    day = np.floor(secs / _DAY).astype(np.int64)

    # Weekdays the symbol never trades (Monday = 0; 1970-01-01 was a Thursday).
    weekday = (day + 3) % 7
    per_day = np.zeros((codes.max() + 1, 7))
    np.add.at(per_day, (codes, weekday), 1)
    closed_wd = per_day < _CLOSED_SHARE * per_day.max(axis=1, keepdims=True)

    same = np.r_[False, codes[1:] == codes[:-1]]
    idx = np.flatnonzero(same)  # position of the bar that ends each interval
    sym = codes[idx]
    wall = secs[idx] - secs[idx - 1]
    closed = _closed_days_inside(day[idx - 1], day[idx], closed_wd[sym])
    adjusted = np.maximum(wall - _DAY * closed, 0.0)

    stats = pd.DataFrame({"sym": sym, "adj": adjusted})
    typical = stats.groupby("sym")["adj"].transform("median").to_numpy()
    long = adjusted > tolerance * np.maximum(typical, 1e-9)
    if not long.any():
        return pd.DataFrame(columns=columns)

    by_symbol = pd.Series(secs).groupby(codes)
    span_weeks = (by_symbol.max() - by_symbol.min()).to_numpy() / _WEEK
    min_count = np.maximum(3, span_weeks / 4)[sym[long]]
    regular = np.zeros(len(idx), dtype=bool)
    regular[long] = _recurs(sym[long], adjusted[long], min_count)

    closures = pd.Series(adjusted[regular]).groupby(sym[regular])
    n_sym = codes.max() + 1
    closure = closures.median().reindex(range(n_sym)).to_numpy()[sym]
    shortest = closures.min().reindex(range(n_sym)).to_numpy()[sym]
    no_closures = np.isnan(closure)
    too_long = adjusted > tolerance * np.where(no_closures, typical, closure)
    in_session = ~no_closures & (adjusted < 0.5 * shortest)
    report = long & ~regular & (no_closures | too_long | in_session)
    if not report.any():
        return pd.DataFrame(columns=columns)

    threshold = np.where(
        no_closures | too_long,
        tolerance * np.where(no_closures, typical, closure),
        tolerance * typical,
    )
    pick = idx[report]
    return pd.DataFrame(
        {
            "row": frame.index[pick],
            "symbol": frame["symbol"].to_numpy()[pick],
            "start": frame["time"].iloc[pick - 1].reset_index(drop=True),
            "end": frame["time"].iloc[pick].reset_index(drop=True),
            "seconds": wall[report],
            "ratio": adjusted[report] / threshold[report],
        },
        columns=columns,
    )
