"""The predictions-file contract, checked where a file enters ``backtest``, ``walkforward``
and ``report``.

One row per (timestamp, symbol), keys unique and sorted by (timestamp, symbol); ``position``
a finite target exposure in [-1, 1]. A position outside [-1, 1] is an error, not a silent
clip: a 3.0 means the file was written for another convention (shares, weights summing
over symbols, percent), and clipping it would score a strategy nobody ran. ``clip=True``
(``--clip-positions``) clips on purpose and logs how many rows changed.

The checks are O(n) passes over numpy arrays (plus one factorisation of the symbols) so
they cost a small fraction of a backtest.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["KeyCodes", "check_predictions", "checked_keys", "key_codes"]

log = logging.getLogger(__name__)

# Positions within this of ±1 are ±1 written in float32 or after arithmetic, not a breach.
_TOLERANCE = 1e-9


def _rows(frame: pd.DataFrame, mask: np.ndarray, column: str | None = None, n: int = 3) -> str:
    """``2020-01-02 SPY (3.0), …`` for the first ``n`` rows of ``mask``."""
    picked = frame.loc[mask, ["timestamp", "symbol", *([column] if column else [])]].head(n)
    parts = []
    for row in picked.itertuples(index=False):
        text = f"{pd.Timestamp(row[0]).isoformat()} {row[1]}"
        parts.append(f"{text} ({row[2]:g})" if column else text)
    return ", ".join(parts)


class KeyCodes(NamedTuple):
    """Dense int64 codes of each row's timestamp and symbol, and the sorted levels."""

    ts: np.ndarray
    symbol: np.ndarray
    ts_levels: pd.DatetimeIndex
    symbol_levels: pd.Index


def key_codes(frame: pd.DataFrame) -> KeyCodes:
    """The :class:`KeyCodes` of a frame's (timestamp, symbol) keys.

    Both code arrays are int64 and dense; levels are sorted. On a frame sorted by
    (timestamp, symbol) the time codes come from one pass (no hashing of timestamps).
    """
    stamps = frame["timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = pd.to_datetime(stamps, utc=True)
    values = stamps.array  # DatetimeArray: asi8 is a view, no per-row conversion
    ints = values.asi8
    if len(ints) and (ints[1:] >= ints[:-1]).all():
        new = np.empty(len(ints), dtype=bool)
        new[:1] = True
        np.not_equal(ints[1:], ints[:-1], out=new[1:])
        ts_codes = np.cumsum(new, dtype=np.int64) - 1
        ts_levels = pd.DatetimeIndex(values[new])
    else:
        codes, levels = pd.factorize(stamps, sort=True)
        ts_codes, ts_levels = codes.astype(np.int64), pd.DatetimeIndex(levels)
    symbols = frame["symbol"]
    if isinstance(symbols.dtype, pd.CategoricalDtype) and symbols.cat.ordered is False:
        symbols = symbols.astype(str)
    sym_codes, sym_levels = pd.factorize(symbols, sort=True)
    return KeyCodes(ts_codes, sym_codes.astype(np.int64), ts_levels, pd.Index(sym_levels))


def check_predictions(
    frame: pd.DataFrame,
    *,
    position_column: str = "position",
    clip: bool = False,
    require_sorted: bool = True,
    what: str = "predictions",
) -> pd.DataFrame:
    """Enforce the contract on ``frame``; returns it (with positions clipped when ``clip``).

    See :func:`checked_keys` for the checks.
    """
    return checked_keys(
        frame, position_column=position_column, clip=clip, require_sorted=require_sorted, what=what
    )[0]


def checked_keys(
    frame: pd.DataFrame,
    *,
    position_column: str = "position",
    clip: bool = False,
    require_sorted: bool = True,
    what: str = "predictions",
) -> tuple[pd.DataFrame, KeyCodes]:
    """``(frame, key codes)`` after enforcing the contract (the codes are reused by callers).

    Raises ``ValueError`` naming the offending rows and the fix for: non-finite positions;
    positions outside [-1, 1] (unless ``clip``); duplicated or conflicting
    (timestamp, symbol) keys; rows not sorted by (timestamp, symbol) (``require_sorted``).
    """
    missing = [c for c in ("timestamp", "symbol", position_column) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {missing}; columns present: {list(frame.columns)}"
        )
    pos = pd.to_numeric(frame[position_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(pos)
    if bad.any():
        raise ValueError(
            f"{what}.{position_column}: {int(bad.sum()):,} rows are NaN, infinite or not a "
            f"number, first {_rows(frame, bad)} — every row needs a finite target position "
            "in [-1, 1]; drop those rows or set them to 0 (flat)"
        )
    outside = np.abs(pos) > 1.0 + _TOLERANCE
    if outside.any():
        if not clip:
            raise ValueError(
                f"{what}.{position_column}: {int(outside.sum()):,} positions lie outside "
                f"[-1, 1] (min {pos.min():g}, max {pos.max():g}), first "
                f"{_rows(frame, outside, position_column)} — positions are target exposures "
                "per symbol in [-1, 1]; rescale them, or pass --clip-positions to clip them "
                "on purpose"
            )
        log.warning(
            "%s.%s: %d positions outside [-1, 1] clipped (--clip-positions)",
            what,
            position_column,
            int(outside.sum()),
        )
        frame = frame.assign(**{position_column: np.clip(pos, -1.0, 1.0)})
    codes = key_codes(frame)
    keys = codes.ts * max(len(codes.symbol_levels), 1) + codes.symbol
    step = np.diff(keys)
    if (step > 0).all():
        return frame, codes  # sorted and unique: the common case, one pass
    order = np.argsort(keys, kind="stable")
    same = np.zeros(len(keys), dtype=bool)
    same[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    if same.any():
        dupe_keys = np.isin(keys, keys[same])
        conflicting = pd.Series(pos[dupe_keys]).groupby(keys[dupe_keys]).nunique().gt(1).sum()
        kind = f", {int(conflicting)} of them with conflicting positions" if conflicting else ""
        raise ValueError(
            f"{what}: {int(same.sum()):,} duplicated (timestamp, symbol) rows{kind}, first "
            f"{_rows(frame, same)} — keep one prediction per symbol and bar (e.g. "
            "drop_duplicates(['timestamp', 'symbol'], keep='last'))"
        )
    if require_sorted:
        first = int(np.flatnonzero(step < 0)[0]) + 1
        raise ValueError(
            f"{what}: rows are not sorted by (timestamp, symbol): row {first} "
            f"({_rows(frame, np.arange(len(frame)) == first)}) comes after a later key — sort "
            "the file with sort_values(['timestamp', 'symbol'])"
        )
    return frame, codes
