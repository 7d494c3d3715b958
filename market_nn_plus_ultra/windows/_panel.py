"""Panel checks shared by the tensor builder and the cache: index, columns, row codes."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "WindowsError",
    "check_cells",
    "check_column",
    "check_index",
    "panel_codes",
    "resolve_columns",
]


class WindowsError(ValueError):
    """Bad input to the windows layer; the message names the column, option or size and the fix."""


def check_column(panel: pd.DataFrame, name: str, option: str, why: str) -> None:
    """Raise naming ``option`` (and the closest column) when ``name`` is not a panel column."""
    if name in panel.columns:
        return
    columns = [str(c) for c in panel.columns]
    guess = difflib.get_close_matches(str(name), columns, n=1)
    hint = f" — did you mean `{guess[0]}`?" if guess else ""
    raise WindowsError(
        f"panel has no column `{name}` ({option}; {why}){hint} Columns in the panel: "
        f"{', '.join(columns) or 'none'}."
    )


def resolve_columns(
    panel: pd.DataFrame,
    feature_columns: Sequence[str] | None,
    context_columns: Sequence[str],
    regime_column: str | None,
) -> tuple[list[str], list[str]]:
    """The (feature, context) column lists, checked to exist, be unique and be numeric."""
    context = list(context_columns)
    for name in context:
        check_column(panel, name, "context_columns", "context comes from panel columns")
    if regime_column is not None:
        check_column(panel, regime_column, "regime_column", "regimes come from a panel column")
    if feature_columns is None:
        skip = {*context, regime_column}
        features = [str(c) for c in panel.columns if c not in skip]
    else:
        features = list(feature_columns)
        for name in features:
            check_column(panel, name, "feature_columns", "features are panel columns")
    if not features:
        raise WindowsError(
            "no feature columns selected — pass feature_columns=[...] or add columns"
        )
    if len(set(features)) != len(features):
        dup = sorted({f for f in features if features.count(f) > 1})
        raise WindowsError(
            f"feature_columns lists {', '.join(dup)} more than once — list each once"
        )
    # dtypes by name: ``panel[c]`` would build a Series (and copy the index) per column
    dtypes = dict(zip(panel.columns, panel.dtypes, strict=True))
    bad = [c for c in [*features, *context] if not pd.api.types.is_numeric_dtype(dtypes[c])]
    if bad:
        raise WindowsError(
            f"panel columns {', '.join(bad)} are not numeric — encode them as numbers or leave "
            "them out of feature_columns/context_columns"
        )
    return features, context


def check_index(panel: pd.DataFrame) -> None:
    """Raise unless the panel is indexed by (timestamp, symbol)."""
    index = panel.index
    names = list(index.names)
    if not isinstance(index, pd.MultiIndex) or names != ["timestamp", "symbol"]:
        raise WindowsError(
            f"panel must be indexed by (timestamp, symbol); its index levels are {names} — "
            "build it with data.panel.read_panel or panel.set_index(['timestamp', 'symbol'])"
        )


def panel_codes(panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex, list[str]]:
    """Integer (row, symbol) codes of every panel row, the union calendar and the symbols."""
    check_index(panel)
    index = panel.index
    if len(index) == 0:
        raise WindowsError("panel has no rows — check data.symbols / data.start / data.end")
    if index.has_duplicates:
        first = index[index.duplicated()][:3].tolist()
        raise WindowsError(
            f"panel has {int(index.duplicated().sum())} duplicate (timestamp, symbol) rows, "
            f"first {first} — drop them with panel[~panel.index.duplicated()]"
        )
    stamps = index.get_level_values("timestamp")
    if not isinstance(stamps, pd.DatetimeIndex):
        raise WindowsError(
            f"panel index level `timestamp` holds {stamps.dtype}, not datetimes — parse it with "
            "pd.to_datetime(..., utc=True)"
        )
    t_codes, calendar = pd.factorize(stamps, sort=True)
    calendar = pd.DatetimeIndex(calendar)
    calendar = calendar.tz_localize("UTC") if calendar.tz is None else calendar.tz_convert("UTC")
    calendar = calendar.as_unit("ns")
    if (t_codes < 0).any() or (np.asarray(index.codes[1]) < 0).any():
        raise WindowsError(
            "panel index has missing timestamps or symbols (NaT/NaN) — drop those rows first"
        )
    # Keep the symbol order the panel's index gives (read_panel keeps the requested order).
    index = index.remove_unused_levels()
    symbols = [str(s) for s in index.levels[1]]
    s_codes = np.asarray(index.codes[1], dtype=np.int64)
    return np.asarray(t_codes, dtype=np.int64), s_codes, calendar, symbols


def check_cells(
    columns: Mapping[str, np.ndarray],
    names: Sequence[str],
    t_codes: np.ndarray,
    s_codes: np.ndarray,
    timestamps: pd.DatetimeIndex,
    symbols: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex, list[str]]:
    """:func:`panel_codes` for bars given as arrays: the codes (int64), the calendar (UTC,
    ns) and the symbols, checked — every column of ``names`` present, numeric and one value
    per bar, codes in range, each (timestamp, symbol) cell once, a rising calendar."""
    t_codes = np.asarray(t_codes, dtype=np.int64)
    s_codes = np.asarray(s_codes, dtype=np.int64)
    n = len(t_codes)
    if n == 0:
        raise WindowsError("no bars — pass at least one (timestamp, symbol) cell")
    if len(s_codes) != n:
        raise WindowsError(f"t_codes has {n} bars, s_codes {len(s_codes)}: one code pair per bar")
    for name in dict.fromkeys(names):
        if name not in columns:
            raise WindowsError(
                f"no column `{name}` among the arrays ({', '.join(map(str, columns)) or 'none'})"
            )
        values = columns[name]
        if len(values) != n or not np.issubdtype(np.asarray(values).dtype, np.number):
            raise WindowsError(f"column `{name}` must hold {n} numbers, one per bar")
    if not isinstance(timestamps, pd.DatetimeIndex) or timestamps.tz is None:
        raise WindowsError("timestamps must be a tz-aware DatetimeIndex (the UTC calendar)")
    T, S = len(timestamps), len(symbols)
    if t_codes.min() < 0 or t_codes.max() >= T or s_codes.min() < 0 or s_codes.max() >= S:
        raise WindowsError(f"codes must index the {T} timestamps and {S} symbols")
    if T > 1 and not (np.diff(timestamps.asi8) > 0).all():
        raise WindowsError("timestamps must rise strictly (the sorted union calendar)")
    if np.bincount(t_codes * S + s_codes, minlength=T * S).max() > 1:
        raise WindowsError("a (timestamp, symbol) cell appears more than once — send each once")
    calendar = timestamps.tz_convert("UTC").as_unit("ns")
    return t_codes, s_codes, calendar, [str(s) for s in symbols]
