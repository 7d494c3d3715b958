"""A bars request → checked, symbol-major numpy arrays (no DataFrame on the hot path).

The feature pipeline wants each symbol's bars as one time-ordered block
(:meth:`~market_nn_plus_ultra.features.pipeline.FeaturePipeline.transform_arrays`) and the
tensor builder wants (row, symbol) codes on the union calendar
(:meth:`~market_nn_plus_ultra.windows.MarketTensors.from_arrays`); :func:`bar_arrays`
gives both in one sort, after the store's checks (OHLC ordering, one bar per cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import ServiceError

if TYPE_CHECKING:
    from .schemas import Bar

__all__ = ["PRICES", "BarArrays", "bar_arrays"]

PRICES = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMP, _SYMBOL = attrgetter("timestamp"), attrgetter("symbol")
_PRICES = attrgetter(*PRICES)
_ABSENT = object()


@dataclass(frozen=True)
class BarArrays:
    """The bars sorted by (symbol, time). ``columns``: column → float64 ``(n,)``;
    ``stamps`` int64 ns UTC; ``codes`` the symbol code of each row (``symbols`` sorted);
    symbol k's bars are rows ``bounds[k]:bounds[k + 1]``; ``calendar`` the sorted union of
    the timestamps (int64 ns) and ``rows`` each bar's position in it."""

    columns: dict[str, np.ndarray]
    stamps: np.ndarray
    codes: np.ndarray
    symbols: list[str]
    bounds: np.ndarray
    calendar: np.ndarray
    rows: np.ndarray

    @property
    def n(self) -> int:
        """Symbols in the request."""
        return len(self.symbols)

    @property
    def counts(self) -> np.ndarray:
        """Bars per symbol, ``(S,)``."""
        return np.diff(self.bounds)

    def panel(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        """``columns`` (in this row order) as a (timestamp, symbol) panel sorted by time."""
        order = np.lexsort((self.codes, self.stamps))
        index = pd.MultiIndex.from_arrays(
            [
                pd.to_datetime(self.stamps[order], utc=True),
                pd.Index(np.asarray(self.symbols, dtype=object)[self.codes[order]], dtype=object),
            ],
            names=["timestamp", "symbol"],
        )
        return pd.DataFrame({k: v[order] for k, v in columns.items()}, index=index)


def bar_arrays(bars: Sequence[Bar], required: Sequence[str]) -> BarArrays:
    """The bars' ``required`` columns (OHLCV first, then the extra fields the model reads)
    as :class:`BarArrays`; a :class:`ServiceError` 422 names the first bad bar and the fix."""
    # exact integer nanoseconds (the schema makes every timestamp time-zone aware)
    stamps = np.fromiter(
        ((t - _EPOCH) // _MICROSECOND for t in map(_TIMESTAMP, bars)), np.int64, len(bars)
    ) * np.int64(1000)
    names = np.array(list(map(_SYMBOL, bars)), dtype=object)
    prices = np.array(list(map(_PRICES, bars)), dtype=np.float64).reshape(len(bars), len(PRICES))
    columns = {name: prices[:, j].copy() for j, name in enumerate(PRICES)}
    if len(required) > len(PRICES):
        extras = [b.__pydantic_extra__ or {} for b in bars]
    for name in required[len(PRICES) :]:
        values = [e.get(name, _ABSENT) for e in extras]
        if _ABSENT in values:
            lacking = [i for i, v in enumerate(values) if v is _ABSENT]
            raise ServiceError(
                422,
                f"bars[{lacking[0]}].{name} is missing ({len(lacking)} bars lack it): the "
                f"model reads {name} — send it with every bar; columns needed: "
                f"{', '.join(required)}",
            )
        columns[name] = np.array(values, dtype=np.float64)  # null → NaN
    _check_prices(columns, names, stamps)
    symbols, codes = np.unique(names, return_inverse=True)
    order = np.lexsort((stamps, codes))  # symbol-major, time-ordered within each symbol
    key_t, key_s = stamps[order], codes[order]
    same = np.diff(key_s) == 0
    dup = same & (np.diff(key_t) == 0)
    if dup.any():
        i = int(order[np.argmax(dup) + 1])
        raise ServiceError(
            422,
            f"bars[{i}]: a second bar for {names[i]} at {_iso(stamps[i])} — send each "
            "(timestamp, symbol) once",
        )
    counts = np.bincount(key_s, minlength=len(symbols))
    calendar, rows = np.unique(key_t, return_inverse=True)
    return BarArrays(
        columns={k: v[order] for k, v in columns.items()},
        stamps=key_t,
        codes=key_s.astype(np.int64),
        symbols=[str(s) for s in symbols],
        bounds=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        calendar=calendar,
        rows=rows.astype(np.int64),
    )


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


def _check_prices(columns: dict[str, np.ndarray], names: np.ndarray, stamps: np.ndarray) -> None:
    """Refuse bars whose high/low do not bracket open and close (the store's OHLC check)."""
    o, h, lo, c = (columns[k] for k in ("open", "high", "low", "close"))
    rules = (
        (lo > np.minimum(o, c), "low", "low must be <= open and close"),
        (h < np.maximum(o, c), "high", "high must be >= open and close"),
    )
    for bad, name, fix in rules:
        if bad.any():
            i = int(np.argmax(bad))
            raise ServiceError(
                422,
                f"bars[{i}].{name} = {columns[name][i]:g} ({names[i]} {_iso(stamps[i])}): "
                f"{fix} ({int(bad.sum())} bars fail)",
            )
