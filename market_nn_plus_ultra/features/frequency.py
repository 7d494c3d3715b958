"""Bar frequency of a timestamp series: intraday or not, and periods per year.

:func:`periods_per_year` is the annualisation factor used by ``realised_vol_20`` (and
usable by anything that annualises): 252 for daily equity bars, 365 for daily bars that
trade on weekends (crypto), and for intraday data ``bars per day × trading days per
year`` — the median number of bars in a UTC calendar day times 252 or 365 by the same
weekend rule. So hourly US-equity bars in a 6.5-hour session give 7 × 252 = 1764 and
hourly crypto bars 24 × 365 = 8760. Weekly and coarser bars give 365.25 / spacing in days.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NS_PER_DAY", "is_intraday", "periods_per_year"]

NS_PER_DAY = 86_400 * 10**9
_INTRADAY_BELOW_NS = 20 * 3_600 * 10**9  # median spacing under 20 h ⇒ intraday bars
_WEEKEND_SHARE = 0.1  # above this share of weekend bars the asset trades 7 days a week


def _median_spacing_ns(timestamps: np.ndarray) -> float | None:
    steps = np.diff(np.asarray(timestamps, dtype=np.int64))
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else None


def is_intraday(timestamps: np.ndarray, starts: np.ndarray | None = None) -> bool:
    """True when the median bar spacing is under 20 hours.

    ``timestamps`` (int64 ns) are sorted within blocks that begin at the offsets
    ``starts`` (one block per symbol; None = one block); jumps between blocks are ignored.
    """
    steps = np.diff(np.asarray(timestamps, dtype=np.int64))
    if starts is not None and len(steps):
        inner = np.asarray(starts, dtype=np.int64)
        steps[inner[(inner > 0) & (inner <= len(steps))] - 1] = 0
    steps = steps[steps > 0]
    return bool(len(steps)) and float(np.median(steps)) < _INTRADAY_BELOW_NS


def periods_per_year(timestamps: np.ndarray) -> float:
    """Bars per year of one symbol's sorted timestamps (int64 ns UTC); see the module doc.

    Fewer than two distinct timestamps fall back to 252.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    spacing = _median_spacing_ns(ts)
    if spacing is None:
        return 252.0
    day = ts // NS_PER_DAY
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    days_per_year = 365.0 if np.mean(weekday >= 5) > _WEEKEND_SHARE else 252.0
    if spacing >= _INTRADAY_BELOW_NS:
        spacing_days = spacing / NS_PER_DAY
        return days_per_year if spacing_days <= 4.0 else 365.25 / spacing_days
    _, bars_per_day = np.unique(day, return_counts=True)
    return float(np.median(bars_per_day)) * days_per_year
