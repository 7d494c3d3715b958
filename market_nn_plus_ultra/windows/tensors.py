"""Panel → dense market tensors on the union calendar, with masks and forward-return targets.

A panel indexed by (``timestamp``, ``symbol``) becomes arrays indexed ``[t, s, ...]``:
``t`` runs over the union of every symbol's timestamps (the *union calendar*), ``s`` over
the symbols. Symbols with different calendars (equities in session hours, crypto 24/7)
leave holes; a hole is filled with 0 and marked absent in ``present``/``mask``, never
invented. Targets are each symbol's forward returns on its *own* bars::

    targets[t, s, h-1] = close[s, next_h(t)] / close[s, next_{h-1}(t)] - 1,   h = 1..H

where ``next_h(t)`` is the symbol's h-th bar after ``t`` (``next_0(t) = t``). On a shared
calendar that is ``close[t+h] / close[t+h-1] - 1`` (``log(close[t+h] / close[t+h-1])``
with ``target="log_return"``). Whatever the target, :meth:`MarketTensors.realised_at`
gives the *simple* return from t to t+1, the ``realised_return_t`` of the backtest
(with a simple-return target that is ``targets[t, s, 0]`` itself; with log targets a
``[T, S]`` array ``simple_returns`` is kept beside them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._fill import Cells, check_target, forward_returns, regime_codes, scatter
from ._panel import (
    WindowsError,
    check_cells,
    check_column,
    check_index,
    panel_codes,
    resolve_columns,
)

__all__ = ["MarketTensors", "WindowsError"]

Alloc = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def _zeros(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def _stack(columns: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """float32 ``(N, len(names))``; values beyond float32 become ±inf (non-finite, masked)."""
    with np.errstate(over="ignore"):
        return np.column_stack([columns[c] for c in names]).astype(np.float32)


@dataclass(eq=False)
class MarketTensors:
    """Dense ``[T, S, ...]`` numpy arrays (in memory or memory-mapped read-only from disk).

    - ``inputs``: float32 ``[T, S, F]`` features; 0 where a value is missing.
    - ``targets``: float32 ``[T, S, H]`` forward returns (see the module docstring); NaN
      where ``target_mask`` is False (past a symbol's last bar, or a missing close).
    - ``mask``: bool ``[T, S]``: the row exists *and* every feature is finite (warm-up rows
      with NaN features are masked out; their finite values are kept, NaNs become 0).
    - ``target_mask``: bool ``[T, S, H]``.
    - ``present``: bool ``[T, S]``: the row exists in the panel (a bar of the symbol).
    - ``missing``: optional int64 ``[S, F]``: how many of the symbol's bars have a
      non-finite value of the feature (what :func:`~.report.symbol_report` names when a
      column blanks a symbol's cells).
    - ``simple_returns``: optional float32 ``[T, S]``: the simple return t → t+1 (NaN where
      unknown), kept only when ``target`` is not already the simple return.
    - ``timestamps``: the union calendar, ``DatetimeIndex`` (UTC) of length T.
    - ``regimes``: optional int64 ``[T, S]`` label codes, -1 where unknown
      (``regime_labels[code]`` names a code when the labels were text).
    - ``context``: optional float32 ``[T, S, C]`` cross-asset columns (``context_names``).
    - ``version``: the cache key when the tensors came from (or went to) a memmap cache.

    Arrays are numpy so they can be memory-mapped; the dataset converts each gathered
    batch with ``torch.from_numpy`` (no copy).
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    target_mask: np.ndarray
    present: np.ndarray
    timestamps: pd.DatetimeIndex
    symbols: list[str]
    feature_names: list[str]
    target: str = "simple_return"
    regimes: np.ndarray | None = None
    regime_labels: list[str] = field(default_factory=list)
    context: np.ndarray | None = None
    context_names: list[str] = field(default_factory=list)
    missing: np.ndarray | None = None
    simple_returns: np.ndarray | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        T, S, F = self.inputs.shape if self.inputs.ndim == 3 else (0, 0, 0)
        if self.inputs.ndim != 3:
            raise WindowsError(f"inputs must be [T, S, F], got shape {self.inputs.shape}")
        expected = {
            "targets": (T, S),
            "mask": (T, S),
            "target_mask": self.targets.shape,
            "present": (T, S),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got[: len(shape)] != tuple(shape):
                raise WindowsError(f"{name} has shape {got}; expected it to start with {shape}")
        if len(self.timestamps) != T or len(self.symbols) != S or len(self.feature_names) != F:
            raise WindowsError(
                f"labels do not match inputs [T={T}, S={S}, F={F}]: {len(self.timestamps)} "
                f"timestamps, {len(self.symbols)} symbols, {len(self.feature_names)} features"
            )
        if self.regimes is not None and self.regimes.shape != (T, S):
            raise WindowsError(f"regimes has shape {self.regimes.shape}; expected {(T, S)}")
        if self.missing is not None and self.missing.shape != (S, F):
            raise WindowsError(f"missing has shape {self.missing.shape}; expected {(S, F)}")
        if self.simple_returns is not None and self.simple_returns.shape != (T, S):
            raise WindowsError(
                f"simple_returns has shape {self.simple_returns.shape}; expected {(T, S)}"
            )
        if self.context is not None and self.context.shape != (T, S, len(self.context_names)):
            raise WindowsError(
                f"context has shape {self.context.shape}; expected "
                f"{(T, S, len(self.context_names))} (one name per context column)"
            )

    # ----------------------------------------------------------------------------------
    # Sizes
    # ----------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def n_symbols(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.inputs.shape[2])

    @property
    def horizon(self) -> int:
        return int(self.targets.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes held by every array (on disk when memory-mapped)."""
        arrays = [self.inputs, self.targets, self.mask, self.target_mask, self.present]
        optional = (self.regimes, self.context, self.missing, self.simple_returns)
        arrays += [a for a in optional if a is not None]
        return int(sum(a.nbytes for a in arrays))

    @staticmethod
    def estimate_nbytes(
        n_rows: int, n_symbols: int, n_features: int, horizon: int, n_context: int = 0
    ) -> int:
        """Bytes the arrays of a ``[n_rows, n_symbols, ...]`` tensor set will take."""
        per_cell = 4 * (n_features + horizon + n_context) + horizon + 2 + 8
        return int(n_rows) * int(n_symbols) * per_cell

    def realised_at(self, t: np.ndarray, s: np.ndarray) -> np.ndarray:
        """float32 ``[N]``: the simple return t → t+1 of cells ``(t[i], s[i])``; NaN if unknown.

        The return a position held over (t, t+1] earns, whatever ``target`` the model is
        trained on (``target_mask[t, s, 0]`` says where it is known).
        """
        if self.target == "simple_return":
            return np.asarray(self.targets[t, s, 0], dtype=np.float32)
        if self.simple_returns is not None:
            return np.asarray(self.simple_returns[t, s], dtype=np.float32)
        # tensors built by hand without the array: exp(log r) - 1 is exact to float32
        return np.expm1(np.asarray(self.targets[t, s, 0], dtype=np.float64)).astype(np.float32)

    def usable_cells(self) -> np.ndarray:
        """int64 ``[S]``: cells per symbol where the bar exists and every feature is finite."""
        return np.count_nonzero(self.mask, axis=0).astype(np.int64)

    # ----------------------------------------------------------------------------------
    # Own-calendar bookkeeping (derived from ``present``; no panel needed)
    # ----------------------------------------------------------------------------------

    def own_bars(self) -> tuple[np.ndarray, np.ndarray]:
        """Each symbol's bars in order: ``(rows, offsets)``.

        ``rows[offsets[s] + k]`` is the union-calendar row of symbol ``s``'s k-th bar;
        ``rows`` has one entry per present cell, ``offsets`` is ``[S + 1]``.
        """
        sym, rows = np.nonzero(np.ascontiguousarray(self.present.T))  # sorted by (s, t)
        counts = np.bincount(sym, minlength=self.n_symbols)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        dtype = np.int32 if self.n_rows < 2**31 else np.int64
        return rows.astype(dtype), offsets.astype(np.int64)

    def bar_rank(self) -> np.ndarray:
        """int32 ``[T, S]``: how many bars the symbol has before row t (its own index k)."""
        return np.cumsum(self.present, axis=0, dtype=np.int32) - 1

    def forward_row(self, steps: int) -> np.ndarray:
        """int ``[T, S]``: the union row of each symbol's ``steps``-th bar after row t.

        -1 where the symbol has fewer bars left (or row t is not one of its bars). With
        ``steps = H`` this is the last row a window's targets read (used by the purge).
        """
        rows, offsets = self.own_bars()
        out = np.full((self.n_rows, self.n_symbols), -1, dtype=rows.dtype)
        sym = np.repeat(np.arange(self.n_symbols), np.diff(offsets))
        ahead = np.arange(len(rows)) + steps
        same = ahead < np.repeat(offsets[1:], np.diff(offsets))
        out[rows[same], sym[same]] = rows[ahead[same]]
        return out

    # ----------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------

    @classmethod
    def from_panel(
        cls,
        panel: pd.DataFrame,
        feature_columns: Sequence[str] | None = None,
        *,
        horizon: int = 5,
        target: str = "simple_return",
        close_column: str = "close",
        context_columns: Sequence[str] = (),
        regime_column: str | None = None,
        alloc: Alloc | None = None,
    ) -> MarketTensors:
        """Scatter a (timestamp, symbol) panel into dense tensors on the union calendar.

        ``feature_columns`` default to every panel column except the context and regime
        columns. Features must already be computed (causally) by the feature pipeline.
        ``alloc(name, shape, dtype)`` returns a zeroed array to fill (``np.zeros`` by
        default; the memmap cache passes ``numpy.lib.format.open_memmap``).
        """
        check_index(panel)
        check_target(horizon, target)
        features, context = resolve_columns(panel, feature_columns, context_columns, regime_column)
        check_column(panel, close_column, "close_column", "targets are forward returns of close")
        t_codes, s_codes, timestamps, symbols = panel_codes(panel)
        return cls._build(
            lambda names: panel[names].to_numpy(dtype=np.float32, na_value=np.nan),
            panel[close_column].to_numpy(dtype=np.float64, na_value=np.nan),
            None if regime_column is None else panel[regime_column],
            Cells(t_codes, s_codes, timestamps, symbols),
            features,
            context,
            horizon,
            target,
            alloc or _zeros,
        )

    @classmethod
    def from_arrays(
        cls,
        columns: Mapping[str, np.ndarray],
        t_codes: np.ndarray,
        s_codes: np.ndarray,
        timestamps: pd.DatetimeIndex,
        symbols: Sequence[str],
        feature_columns: Sequence[str],
        *,
        horizon: int = 5,
        target: str = "simple_return",
        close_column: str = "close",
        context_columns: Sequence[str] = (),
        regime_column: str | None = None,
    ) -> MarketTensors:
        """:meth:`from_panel` without a DataFrame: the same tensors from ``(N,)`` arrays.

        Bar ``i`` is the cell ``(timestamps[t_codes[i]], symbols[s_codes[i]])``, its
        column values ``columns[name][i]``; ``timestamps`` is the rising union calendar
        (UTC), rows may come in any order. Each cell at most once.
        """
        check_target(horizon, target)
        wanted = [*feature_columns, *context_columns, close_column]
        wanted += [] if regime_column is None else [regime_column]
        cells = check_cells(columns, wanted, t_codes, s_codes, timestamps, symbols)
        features, context = list(feature_columns), list(context_columns)
        return cls._build(
            lambda names: _stack(columns, names),
            np.asarray(columns[close_column], dtype=np.float64),
            None if regime_column is None else np.asarray(columns[regime_column]),
            Cells(*cells),
            features,
            context,
            horizon,
            target,
            _zeros,
        )

    @classmethod
    def _build(
        cls,
        block: Callable[[list[str]], np.ndarray],
        close_values: np.ndarray,
        regime_values: pd.Series | np.ndarray | None,
        cells: Cells,
        features: list[str],
        context: list[str],
        horizon: int,
        target: str,
        alloc: Alloc,
    ) -> MarketTensors:
        """The arrays from per-bar values: ``block(names)`` gives float32 ``(N, len(names))``."""
        t_codes, s_codes = cells.t_codes, cells.s_codes
        shape = (len(cells.timestamps), len(cells.symbols))
        present = alloc("present", shape, np.dtype(bool))
        present[t_codes, s_codes] = True
        inputs = alloc("inputs", (*shape, len(features)), np.dtype(np.float32))
        missing = alloc("missing", (len(cells.symbols), len(features)), np.dtype(np.int64))
        finite = scatter(block, features, t_codes, s_codes, inputs, missing)
        mask = alloc("mask", shape, np.dtype(bool))
        mask[t_codes, s_codes] = finite

        ctx = None
        if context:
            ctx = alloc("context", (*shape, len(context)), np.dtype(np.float32))
            scatter(block, context, t_codes, s_codes, ctx)
        regimes, labels = None, []
        if regime_values is not None:
            regimes = alloc("regimes", shape, np.dtype(np.int64))
            regimes[:] = -1
            codes, labels = regime_codes(regime_values)
            regimes[t_codes, s_codes] = codes

        close = np.full(shape, np.nan)
        close[t_codes, s_codes] = close_values
        targets = alloc("targets", (*shape, horizon), np.dtype(np.float32))
        target_mask = alloc("target_mask", (*shape, horizon), np.dtype(bool))
        simple = None
        if target != "simple_return":  # the backtest's return t → t+1, beside the targets
            simple = alloc("simple_returns", shape, np.dtype(np.float32))
        forward_returns(close, present, target, targets, target_mask, simple)
        return cls(
            inputs=inputs,
            targets=targets,
            mask=mask,
            target_mask=target_mask,
            present=present,
            timestamps=cells.timestamps,
            symbols=cells.symbols,
            feature_names=features,
            target=target,
            regimes=regimes,
            regime_labels=labels,
            context=ctx,
            context_names=context,
            missing=missing,
            simple_returns=simple,
        )

    def meta(self) -> dict[str, object]:
        """The JSON-able labels saved beside the arrays of a memmap cache."""
        return {
            "format": 2,  # the memmap cache format (windows.cache._FORMAT)
            "symbols": list(self.symbols),
            "feature_names": list(self.feature_names),
            "context_names": list(self.context_names),
            "regime_labels": list(self.regime_labels),
            "target": self.target,
            "version": self.version,
        }

    def to_memmap(self, directory: str | Path) -> MarketTensors:
        """Write the arrays as ``.npy`` files (atomically) and return them memory-mapped."""
        from .cache import write_memmap

        return write_memmap(self, Path(directory))

    @classmethod
    def open_memmap(cls, directory: str | Path) -> MarketTensors:
        """Reopen a cache written by :meth:`to_memmap`, read-only, streaming from disk."""
        from .cache import open_memmap

        return open_memmap(Path(directory))
