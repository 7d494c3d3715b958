"""Filling the dense tensors from per-bar values: the scatter, regime codes, targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from ._panel import WindowsError

__all__ = ["Cells", "check_target", "forward_returns", "regime_codes", "scatter"]

TARGETS = ("simple_return", "log_return")
_COLUMN_CHUNK = 16  # feature columns copied per pass: bounds the float32 staging block


class Cells(NamedTuple):
    """Where each bar goes: its row and symbol codes, the union calendar, the symbols."""

    t_codes: np.ndarray
    s_codes: np.ndarray
    timestamps: pd.DatetimeIndex
    symbols: list[str]


def check_target(horizon: int, target: str) -> None:
    if horizon < 1:
        raise WindowsError(f"horizon must be >= 1 (forward bars in each target), got {horizon}")
    if target not in TARGETS:
        raise WindowsError(f"target {target!r} is unknown — use one of {', '.join(TARGETS)}")


def scatter(
    block: Callable[[list[str]], np.ndarray],
    columns: list[str],
    t_codes: np.ndarray,
    s_codes: np.ndarray,
    out: np.ndarray,
    missing: np.ndarray | None = None,
) -> np.ndarray:
    """Copy ``columns`` (``block(names)``: their float32 values, one row per bar) into
    ``out[t, s, :]`` a few columns at a time; NaN/inf → 0.

    Returns bool ``[N]``: every value of the panel row was finite. ``missing`` ``[S, F]``,
    when given, receives per symbol the count of non-finite values of each column.
    """
    finite = np.ones(len(t_codes), dtype=bool)
    for start in range(0, len(columns), _COLUMN_CHUNK):
        chunk = columns[start : start + _COLUMN_CHUNK]
        values = block(chunk)  # (N, f) float32
        ok = np.isfinite(values)
        finite &= ok.all(axis=1)
        if missing is not None:  # zero-filled by alloc: only columns with a NaN need counting
            for j in np.flatnonzero(~ok.all(axis=0)):
                bad = s_codes[~ok[:, j]]  # (n_bad,) symbol code of each non-finite value
                missing[:, start + j] = np.bincount(bad, minlength=missing.shape[0])
        out[t_codes, s_codes, start : start + len(chunk)] = np.where(ok, values, np.float32(0))
    return finite


def regime_codes(column: pd.Series | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Regime labels → int64 codes (-1 unknown); text labels are factorised (sorted)."""
    if pd.api.types.is_numeric_dtype(column):
        values = (
            column.to_numpy(dtype=np.float64, na_value=np.nan)
            if isinstance(column, pd.Series)
            else np.asarray(column, dtype=np.float64)
        )
        codes = np.where(np.isfinite(values), values, -1).astype(np.int64)
        return codes, []
    codes, labels = pd.factorize(column, sort=True)
    return codes.astype(np.int64), [str(label) for label in labels]


def forward_returns(
    close: np.ndarray,
    present: np.ndarray,
    target: str,
    out: np.ndarray,
    out_mask: np.ndarray,
    simple_out: np.ndarray | None = None,
) -> None:
    """Fill ``out[t, s, h-1]`` with each symbol's return from its (h-1)-th to h-th next bar.

    ``simple_out`` ``[T, S]``, when given, gets the simple return of the first step (the
    same cells as ``out_mask[..., 0]``, NaN elsewhere).
    """
    sym, rows = np.nonzero(present.T)  # every bar, sorted by (symbol, time)
    price = close.T[sym, rows]
    counts = np.bincount(sym, minlength=present.shape[1])
    last = np.repeat(np.cumsum(counts) - 1, counts)  # index of each bar's symbol's last bar
    n = len(rows)
    out[:] = np.nan
    if simple_out is not None:
        simple_out[:] = np.nan
    for h in range(1, out.shape[2] + 1):  # a loop over horizons, each step vectorised
        ahead = np.arange(n) + h
        ok = ahead <= last
        now = price[np.minimum(ahead, n - 1)]
        prev = price[np.minimum(ahead - 1, n - 1)]
        ratio = np.divide(now, prev, out=np.full_like(now, np.nan), where=ok & (prev > 0))
        ok &= np.isfinite(ratio) & (ratio > 0)
        value = np.log(ratio) if target == "log_return" else ratio - 1.0
        out[rows[ok], sym[ok], h - 1] = value[ok]
        out_mask[rows[ok], sym[ok], h - 1] = True
        if h == 1 and simple_out is not None:
            simple_out[rows[ok], sym[ok]] = ratio[ok] - 1.0
