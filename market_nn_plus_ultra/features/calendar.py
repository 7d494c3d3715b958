"""Calendar features: time of day and day of week on the unit circle (intraday data only)."""

from __future__ import annotations

import numpy as np

from .frequency import NS_PER_DAY
from .registry import TIMESTAMP, register

__all__ = ["calendar"]


@register(
    inputs=(TIMESTAMP,),
    outputs=("hour_sin", "hour_cos", "dow_sin", "dow_cos"),
    warmup=0,
    tags=("calendar",),
    tables=(),
    intraday_only=True,
)
def calendar(
    timestamp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time of day and day of week (UTC) on the unit circle; intraday data only.

    ``hour_sin/cos = sin/cos(2π·h/24)`` with h the fractional UTC hour of the bar's
    timestamp, ``dow_sin/cos = sin/cos(2π·d/7)`` with d the weekday (Monday = 0). The
    circle keeps 23:00 next to 00:00 and Sunday next to Monday. Skipped for daily and
    coarser data, where they carry no information.
    """
    seconds = (timestamp // 10**9) % 86_400
    hour_angle = (2.0 * np.pi / 86_400.0) * seconds
    weekday = (timestamp // NS_PER_DAY + 3) % 7
    dow_angle = (2.0 * np.pi / 7.0) * weekday
    return np.sin(hour_angle), np.cos(hour_angle), np.sin(dow_angle), np.cos(dow_angle)
