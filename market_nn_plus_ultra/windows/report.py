"""Per-symbol usage of the tensors: bars, usable cells, windows per split, the column blanking most.

A cell (t, s) is *usable* when the symbol has a bar at t and every feature is finite there
(``MarketTensors.mask``); a window may end only on a usable cell. One feature that is NaN
for a whole symbol (an alternative series that does not exist for its asset class, an
indicator never imported for it) masks every cell of that symbol, so it trains on nothing.
:func:`symbol_report` counts, per symbol, what survives, and :meth:`SymbolReport.check`
refuses a symbol left with no window, naming the column(s) that blank it and the fix::

    report = symbol_report(tensors, {"train": ds_train, "val": ds_val, "test": ds_test})
    print(report.format())
    report.check(hints={"funding_rate": "it comes from alt_funding …"})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._panel import WindowsError
from .dataset import SlidingWindowDataset
from .tensors import MarketTensors

__all__ = ["SymbolReport", "SymbolUsage", "symbol_report"]

_MOSTLY_BLANK = 0.5  # a column NaN on at least this share of a symbol's bars is the cause
_MAX_NAMED = 4  # columns named in one message when several blank the same cells


@dataclass(frozen=True)
class SymbolUsage:
    """One symbol's bars, usable cells and windows.

    ``blanking``: the feature column(s) non-finite on the most of the symbol's bars (ties
    all listed, at most a few), ``blanked`` that count (0 and ``()`` when every feature is
    finite, or when the tensors carry no ``missing`` counts).
    """

    symbol: str
    bars: int
    usable: int
    windows: dict[str, int]
    blanking: tuple[str, ...] = ()
    blanked: int = 0

    @property
    def total_windows(self) -> int:
        return int(sum(self.windows.values()))

    def as_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "bars": self.bars,
            "usable_cells": self.usable,
            **{f"{name}_windows": n for name, n in self.windows.items()},
            "blanking_column": ", ".join(self.blanking) or None,
            "blanked_cells": self.blanked,
        }


@dataclass(frozen=True)
class SymbolReport:
    """Per-symbol usage, in the tensors' symbol order (see the module docstring)."""

    rows: list[SymbolUsage]
    window: int
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per symbol: bars, usable_cells, <split>_windows, blanking_column, …"""
        return pd.DataFrame([r.as_dict() for r in self.rows])

    def to_dict(self) -> list[dict[str, object]]:
        """JSON-able rows (saved in a run's model_info.json)."""
        return [r.as_dict() for r in self.rows]

    def format(self) -> str:
        """A fixed-width text table, one line per symbol."""
        names = list(self.rows[0].windows) if self.rows else []
        head = ["symbol", "bars", "usable", *names, "most blanked by"]
        lines = [head]
        for r in self.rows:
            worst = f"{', '.join(r.blanking)} ({r.blanked:,} bars)" if r.blanked else "-"
            counts = [f"{r.windows[n]:,}" for n in names]
            lines.append([r.symbol, f"{r.bars:,}", f"{r.usable:,}", *counts, worst])
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join(
            "  ".join(
                c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        )

    def empty(self) -> list[SymbolUsage]:
        """Symbols with no window in any split."""
        return [r for r in self.rows if r.total_windows == 0]

    def sparse(self) -> list[SymbolUsage]:
        """Symbols with windows but a column blanking at least half of their bars."""
        return [
            r
            for r in self.rows
            if r.total_windows and r.bars and r.blanked >= _MOSTLY_BLANK * r.bars
        ]

    def check(self, hints: Mapping[str, str] | None = None) -> None:
        """Raise :class:`WindowsError` when a symbol has no window, naming the cause and fix.

        ``hints`` maps a column name to a sentence on where it comes from and how to fix it
        (the data module passes one for every alternative-data column).
        """
        empty = self.empty()
        if not empty:
            return
        reasons = [self._reason(r, hints or {}) for r in empty]
        listed = ", ".join(r.symbol for r in empty)
        raise WindowsError(
            f"{len(empty)} of {len(self.rows)} symbol(s) have no complete windows in any split "
            f"({listed}), so training would silently leave them out:\n"
            + "\n".join(f"  - {reason}" for reason in reasons)
        )

    def _reason(self, r: SymbolUsage, hints: Mapping[str, str]) -> str:
        if r.blanking and (r.usable == 0 or r.blanked >= _MOSTLY_BLANK * r.bars):
            cols = ", ".join(f"`{c}`" for c in r.blanking)
            fixes = [hints[c] for c in r.blanking if c in hints]
            fix = " ".join(dict.fromkeys(fixes)) or (
                f"Fill it for {r.symbol}, drop it from the features (windows.feature_columns "
                f"/ features.names), or leave {r.symbol} out of data.symbols."
            )
            return (
                f"{r.symbol}: column {cols} is NaN on {r.blanked:,} of its {r.bars:,} bars, "
                f"leaving {r.usable:,} usable (a cell is usable only when every feature is "
                f"finite). {fix}"
            )
        bounds = ", ".join(f"{k} rows {a}..{b - 1}" for k, (a, b) in self.splits.items())
        return (
            f"{r.symbol}: {r.bars:,} bars, {r.usable:,} usable, but no window ends on one of "
            f"them: a window needs windows.window={self.window} rows of history and complete "
            f"targets inside a split ({bounds or 'no splits'}) — load more history "
            f"(data.start/data.end), shorten windows.window, or leave {r.symbol} out of "
            "data.symbols."
        )


def _blanking(missing: np.ndarray | None, names: list[str], s: int) -> tuple[tuple[str, ...], int]:
    if missing is None or not len(names):
        return (), 0
    counts = np.asarray(missing[s])
    worst = int(counts.max())
    if worst == 0:
        return (), 0
    tied = np.flatnonzero(counts == worst)[:_MAX_NAMED]
    return tuple(names[i] for i in tied), worst


def symbol_report(
    tensors: MarketTensors, datasets: Mapping[str, SlidingWindowDataset]
) -> SymbolReport:
    """Bars, usable cells, windows per dataset and the most-blanking column of every symbol."""
    bars = np.count_nonzero(tensors.present, axis=0)
    usable = tensors.usable_cells()
    windows = {name: ds.windows_per_symbol() for name, ds in datasets.items()}
    names = list(tensors.feature_names)
    rows = []
    for s, symbol in enumerate(tensors.symbols):
        blanking, blanked = _blanking(tensors.missing, names, s)
        rows.append(
            SymbolUsage(
                symbol=str(symbol),
                bars=int(bars[s]),
                usable=int(usable[s]),
                windows={name: int(w[s]) for name, w in windows.items()},
                blanking=blanking,
                blanked=blanked,
            )
        )
    window = next(iter(datasets.values())).window if datasets else 0
    splits = {
        name: (ds.split.rows.start, ds.split.rows.stop)
        for name, ds in datasets.items()
        if ds.split is not None
    }
    return SymbolReport(rows=rows, window=window, splits=splits)
