"""Cross-asset views: other symbols' columns aligned onto each symbol's own calendar.

A view gives every symbol context columns taken from other symbols (an index ETF's
close, a sector ETF's volume, …). For a symbol trading at ``t``, the context value is the
context symbol's value at exactly ``t``; when the context symbol has no bar at ``t`` the
last value from an earlier bar of the symbol's calendar is carried forward, at most
``fill_limit`` bars (past values only). Bars still missing a value are dropped from the
stored view and counted.

Calendars that cannot be aligned are refused before anything is computed: a context
symbol with another bar frequency (daily vs hourly), or one sharing too few of a symbol's
bars (``min_overlap``), is named in the error with both frequencies and the overlap::

    view = cross_asset_view(panel, cfg.data.cross_asset)   # columns SPY:close → spy_close
    update_database(db, {"cross_asset_views": view.table()})
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import CrossAssetConfig
from .store import format_timestamps, read_table

__all__ = [
    "CalendarMismatchError",
    "ContextColumn",
    "CrossAssetConfig",
    "CrossAssetView",
    "bar_frequencies",
    "check_calendars",
    "cross_asset_view",
    "parse_context_columns",
    "read_cross_asset_view",
]


class CalendarMismatchError(ValueError):
    """Context and target calendars cannot be aligned; the message names the symbols."""


@dataclass(frozen=True)
class ContextColumn:
    """One context column: ``column`` of ``symbol``, stored under ``name``."""

    symbol: str
    column: str
    name: str


def parse_context_columns(entries: Sequence[str]) -> list[ContextColumn]:
    """``["SPY:close", "QQQ:close"]`` → context columns named ``spy_close``, ``qqq_close``."""
    out: list[ContextColumn] = []
    for entry in entries:
        symbol, sep, column = str(entry).partition(":")
        if not sep or not symbol.strip() or not column.strip():
            raise ValueError(
                f"data.cross_asset.columns: {entry!r} is not SYMBOL:column — write e.g. SPY:close"
            )
        symbol, column = symbol.strip(), column.strip()
        name = re.sub(r"[^0-9a-z]+", "_", f"{symbol}_{column}".lower()).strip("_")
        out.append(ContextColumn(symbol, column, name))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"data.cross_asset.columns: {dupes} listed more than once — list each once"
        )
    return out


def bar_frequencies(panel: pd.DataFrame) -> pd.Series:
    """Each symbol's bar frequency: its most common spacing between consecutive bars.

    The mode, not the median, so that missing bars (holidays, halts, a sparse context
    symbol) do not read as another frequency; ties go to the shorter spacing. Returns a
    Timedelta per symbol (NaT for a symbol with a single bar), sorted by symbol.
    """
    stamps = panel.index.get_level_values("timestamp").to_series(index=panel.index)
    gaps = stamps.groupby(level="symbol", sort=False).diff()
    frame = pd.DataFrame(
        {"symbol": panel.index.get_level_values("symbol").astype(str), "gap": gaps.to_numpy()}
    )
    counts = frame.dropna().groupby(["symbol", "gap"]).size().rename("n").reset_index()
    counts = counts.sort_values(["symbol", "n", "gap"], ascending=[True, False, True])
    freq = counts.drop_duplicates("symbol").set_index("symbol")["gap"]
    return freq.reindex(sorted(frame["symbol"].unique()))


def _describe(delta: pd.Timedelta) -> str:
    return "a single bar" if pd.isna(delta) else f"every {delta}"


def check_calendars(
    panel: pd.DataFrame, context_symbols: Sequence[str], min_overlap: float
) -> pd.DataFrame:
    """Refuse context symbols whose calendars cannot be aligned with the panel's symbols.

    For each (symbol, context symbol) pair: the bar frequencies must agree (within 1%),
    and on the span both cover, at least ``min_overlap`` of the symbol's bars must also
    be bars of the context symbol. Returns the overlap table (symbol, context, overlap);
    raises :class:`CalendarMismatchError` listing every failing pair with the fix.
    """
    freq = bar_frequencies(panel)
    stamps = panel.index.get_level_values("timestamp")
    symbols = panel.index.get_level_values("symbol")
    by_symbol = {s: stamps[symbols == s].asi8 for s in freq.index}
    rows, problems = [], []
    for ctx in dict.fromkeys(context_symbols):
        ctx_ts = by_symbol[ctx]
        for sym, sym_ts in by_symbol.items():
            if sym == ctx:
                continue
            f_sym, f_ctx = freq[sym], freq[ctx]
            if (
                pd.isna(f_sym)
                or pd.isna(f_ctx)
                or not np.isclose(f_sym.value, f_ctx.value, rtol=0.01)
            ):
                problems.append(
                    f"{sym} bars {_describe(f_sym)} but context {ctx} bars {_describe(f_ctx)}"
                )
                continue
            lo, hi = max(sym_ts[0], ctx_ts[0]), min(sym_ts[-1], ctx_ts[-1])
            shared = sym_ts[(sym_ts >= lo) & (sym_ts <= hi)]
            overlap = float(np.isin(shared, ctx_ts).mean()) if len(shared) else 0.0
            rows.append((sym, ctx, overlap))
            if overlap < min_overlap:
                problems.append(
                    f"{sym} and context {ctx} (both {_describe(f_sym)}) share only "
                    f"{overlap:.0%} of {sym}'s bars where both trade (< {min_overlap:.0%})"
                )
    if problems:
        raise CalendarMismatchError(
            "cross-asset view refused, misaligned calendars:\n  "
            + "\n  ".join(problems)
            + "\nPick context symbols of the same bar frequency and session (restrict "
            "data.symbols, or resample the data), or lower data.cross_asset.min_overlap."
        )
    return pd.DataFrame(rows, columns=["symbol", "context", "overlap"])


@dataclass
class CrossAssetView:
    """A computed view: wide values on the panel's index, which rows are complete, stats."""

    view: str
    #: (timestamp, symbol)-indexed, one float column per context column; NaN = no value.
    values: pd.DataFrame
    #: True where every context column has a value (the rows that are stored).
    complete: pd.Series
    #: Per (symbol, name): bars, exact, filled, missing, fill_rate (filled / bars).
    stats: pd.DataFrame
    #: Per (symbol, context): share of the symbol's bars the context symbol also has.
    overlap: pd.DataFrame

    @property
    def dropped_rows(self) -> int:
        """Bars left out of the stored view because a context value stayed missing."""
        return int((~self.complete).sum())

    def table(self) -> pd.DataFrame:
        """Rows for the ``cross_asset_views`` table: view, timestamp, symbol, name, value."""
        kept = self.values[self.complete.to_numpy()]
        long = kept.stack(future_stack=True).rename("value")
        long.index = long.index.set_names(["timestamp", "symbol", "name"])
        frame = long.reset_index()
        frame.insert(0, "view", self.view)
        frame["timestamp"] = format_timestamps(frame["timestamp"])
        frame["symbol"] = frame["symbol"].astype(str)
        frame["name"] = frame["name"].astype(str)
        return frame.sort_values(["timestamp", "symbol", "name"], kind="stable").reset_index(
            drop=True
        )


def _check_columns(panel: pd.DataFrame, columns: list[ContextColumn]) -> None:
    present = sorted(pd.unique(panel.index.get_level_values("symbol").astype(str)))
    for c in columns:
        if c.symbol not in present:
            guess = difflib.get_close_matches(c.symbol, present, n=1)
            hint = f" — did you mean {guess[0]}?" if guess else ""
            raise ValueError(
                f"data.cross_asset.columns: symbol {c.symbol!r} is not in the panel{hint} "
                f"Symbols: {present[:20]}{' …' if len(present) > 20 else ''}"
            )
        if c.column not in panel.columns:
            guess = difflib.get_close_matches(c.column, list(panel.columns), n=1)
            hint = f" — did you mean {c.symbol}:{guess[0]}?" if guess else ""
            raise ValueError(
                f"data.cross_asset.columns: {c.symbol}:{c.column} — no panel column "
                f"{c.column!r}{hint} Columns: {list(panel.columns)}"
            )


def _fill_stats(exact: pd.DataFrame, has: pd.DataFrame) -> pd.DataFrame:
    """Per (symbol, name) counts of exact, carried-forward and missing values."""
    symbols = has.index.get_level_values("symbol")
    stats = pd.concat(
        {
            "exact": exact.groupby(symbols).sum().stack(),
            "filled": (has & ~exact).groupby(symbols).sum().stack(),
            "missing": (~has).groupby(symbols).sum().stack(),
        },
        axis=1,
    )
    stats.index = stats.index.set_names(["symbol", "name"])
    stats.insert(0, "bars", stats.sum(axis=1))
    stats["fill_rate"] = stats["filled"] / stats["bars"]
    return stats.reset_index()


def cross_asset_view(panel: pd.DataFrame, cfg: CrossAssetConfig) -> CrossAssetView:
    """Align ``cfg.columns`` (SYMBOL:column) onto every symbol's calendar in ``panel``.

    ``panel``: (timestamp UTC, symbol)-indexed, sorted. Each context value at a symbol's
    bar ``t`` is the context symbol's value at ``t``, else the latest such value from at
    most ``cfg.fill_limit`` earlier bars of the symbol. Raises
    :class:`CalendarMismatchError` when calendars cannot be aligned.
    """
    columns = parse_context_columns(cfg.columns)
    if not columns:
        raise ValueError(
            "data.cross_asset.columns is empty — name context columns, e.g. "
            "--cross-asset-columns SPY:close,QQQ:close"
        )
    _check_columns(panel, columns)
    overlap = check_calendars(panel, [c.symbol for c in columns], cfg.min_overlap)

    stamps = panel.index.get_level_values("timestamp")
    exact, values = {}, {}
    for c in columns:
        source = panel[c.column].xs(c.symbol, level="symbol")
        aligned = source.reindex(stamps).to_numpy(dtype="float64")  # value at exactly t
        exact[c.name] = ~np.isnan(aligned)
        values[c.name] = aligned
    raw = pd.DataFrame(values, index=panel.index)
    filled = (
        raw
        if cfg.fill_limit == 0
        else raw.groupby(level="symbol", sort=False).ffill(limit=cfg.fill_limit)
    )
    has = filled.notna()
    return CrossAssetView(
        view=cfg.view,
        values=filled,
        complete=has.all(axis=1),
        stats=_fill_stats(pd.DataFrame(exact, index=panel.index), has),
        overlap=overlap,
    )


def read_cross_asset_view(db: str | Path, view: str) -> pd.DataFrame:
    """One view from ``cross_asset_views``, wide: (timestamp, symbol)-indexed columns."""
    frame = read_table(db, "cross_asset_views")
    present = sorted(frame["view"].unique()) if len(frame) else []
    if view not in present:
        guess = difflib.get_close_matches(view, present, n=1)
        hint = f" — did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(
            f"cross_asset_views.view: no view {view!r} in {db}{hint} Views: {present or 'none'}"
            " — build one with `plus-ultra data build --cross-asset-view`"
        )
    frame = frame[frame["view"] == view]
    frame = frame.assign(timestamp=pd.DatetimeIndex(frame["timestamp"]).as_unit("ns"))
    wide = frame.pivot(index=["timestamp", "symbol"], columns="name", values="value")
    wide.columns.name = None
    return wide.sort_index().astype("float64")
