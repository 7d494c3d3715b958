"""CSV / Parquet import: map columns, resolve symbols, convert times to UTC, validate, write.

Every front door (files, package-shipped samples, the Yahoo bootstrap) goes through the
same two steps: :func:`~.normalise.normalise_frame` (or ``normalise_wide`` for a file of
closes, one column per symbol) turns one source frame into ``series`` rows (UTC
``timestamp`` read by :mod:`.csv_dates`, ``symbol``, float OHLCV), and
:func:`write_series` validates them with the ``assets`` rows, marks close-only and
volume-less symbols in ``asset_flags`` (:mod:`.asset_flags`) and writes atomically — a
new file through ``write_database``, an append through ``update_database`` in one
transaction, upserting by (symbol, timestamp) so re-importing the same data changes
nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .asset_flags import CLOSE_ONLY, NO_VOLUME, detect_flags
from .csv_dates import DataImportError
from .normalise import (
    COLUMN_ALIASES,
    normalise_frame,
    normalise_long,
    normalise_wide,
    one_row_per_bar,
    read_source,
)
from .store import StoreError, read_table, update_database, write_database
from .symbols import check_symbols
from .validation import validate_tables

__all__ = [
    "ASSET_COLUMNS",
    "COLUMN_ALIASES",
    "DataImportError",
    "ImportResult",
    "import_frames",
    "normalise_frame",
    "read_source",
    "write_series",
]

log = logging.getLogger(__name__)

ASSET_COLUMNS = ("asset_id", "symbol", "name", "sector", "asset_class", "currency", "exchange")


@dataclass(frozen=True)
class ImportResult:
    """What one import wrote: the database, row count, symbols and the time range (UTC)."""

    path: Path
    rows: int
    symbols: tuple[str, ...]
    new_symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    warnings: tuple[str, ...] = ()
    #: how the data was read (e.g. day-first dates) and what it lacks (close-only symbols)
    notes: tuple[str, ...] = ()
    #: ``asset_flags`` marks written by this import: flag → symbols
    flags: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.rows:,} rows for {len(self.symbols)} symbol(s) "
            f"({', '.join(self.symbols[:8])}{' …' if len(self.symbols) > 8 else ''}) "
            f"from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        )


def _new_assets(symbols: list[str], info: pd.DataFrame | None, first_id: int) -> pd.DataFrame:
    rows = pd.DataFrame({"symbol": symbols})
    if info is not None and not info.empty:
        known = info.drop(columns="asset_id", errors="ignore").drop_duplicates("symbol")
        rows = rows.merge(known, on="symbol", how="left")
    rows.insert(0, "asset_id", np.arange(first_id, first_id + len(rows), dtype=np.int64))
    for col in ASSET_COLUMNS:
        if col not in rows.columns:
            rows[col] = None
    return rows[list(ASSET_COLUMNS)]


def _validate(series: pd.DataFrame, assets: pd.DataFrame, where: Path) -> tuple[str, ...]:
    report = validate_tables({"series": series, "assets": assets})
    report.raise_if_failed()
    notes = tuple(
        f"{f.table}.{f.column}: {f.check} on {f.n_rows} rows (first {f.first_keys}) — {f.fix}"
        for f in report.failures
        if f.severity == "warning"
    )
    for note in notes:
        log.warning("%s: %s", where.name, note)
    return notes


def _provenance(info: object) -> str:
    """``import (a.csv, b.csv)``, ``sample vix``: where a symbol's rows came from, in a note."""
    if not isinstance(info, Mapping):
        return str(info)
    label = str(info.get("kind", "source"))
    if info.get("files"):
        label += f" ({', '.join(map(str, info['files']))})"
    elif info.get("sample"):
        label += f" {info['sample']}"
    return label


def _flag_notes(marked: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    def names(symbols: tuple[str, ...]) -> str:
        return ", ".join(symbols[:8]) + (" …" if len(symbols) > 8 else "")

    out = []
    if CLOSE_ONLY in marked:
        out.append(
            f"{names(marked[CLOSE_ONLY])}: closes only (open = high = low = close), marked "
            "close_only in asset_flags — features that need high/low (atr_14) are skipped"
        )
    if NO_VOLUME in marked:
        out.append(
            f"{names(marked[NO_VOLUME])}: no volume (stored as 0), marked no_volume in "
            "asset_flags — features that need volume (volume_z_20) are skipped"
        )
    return tuple(out)


def write_series(
    out_db: str | Path,
    series: pd.DataFrame,
    *,
    assets: pd.DataFrame | None = None,
    sources: Mapping[str, object] | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> ImportResult:
    """Validate normalised ``series`` rows and write them with ``assets`` rows for new symbols.

    ``series`` is :func:`normalise_frame`'s output. ``assets`` may describe the symbols
    (``symbol, name, sector, asset_class, currency, exchange``); it is used only for
    symbols the database does not have yet, whose ``asset_id`` continues after the largest
    one there. ``sources`` (symbol → JSON-able provenance) goes to ``metadata`` under
    ``source:<symbol>``. A new file is written atomically; ``append`` upserts by
    (symbol, timestamp) in one transaction; ``overwrite`` rebuilds the file.
    """
    path = Path(out_db)
    if append and overwrite:
        raise DataImportError(
            "--append and --overwrite exclude each other: append upserts into the "
            "database, overwrite rebuilds it — pass one"
        )
    if series.empty:
        raise DataImportError(f"{path}: nothing to import — the sources hold no price rows")
    updating = append and path.exists()
    if path.exists() and not (append or overwrite):
        raise StoreError(
            f"{path} already exists — pass --append to add rows (re-importing the same "
            "data changes nothing) or --overwrite to rebuild it"
        )
    have = read_table(path, "assets") if updating else pd.DataFrame(columns=list(ASSET_COLUMNS))
    symbols = check_symbols(sorted(series["symbol"].unique()), f"importing into {path}")
    fresh = sorted(set(symbols) - set(have["symbol"]))
    first_id = int(have["asset_id"].max()) + 1 if len(have) else 1
    added = _new_assets(fresh, assets, first_id)
    every = added if have.empty else pd.concat([have[list(ASSET_COLUMNS)], added])
    notes = _validate(series, every.reset_index(drop=True), path)
    flags = detect_flags(series, {sym: _provenance(info) for sym, info in (sources or {}).items()})
    metadata = {
        f"source:{sym}": json.dumps(info, sort_keys=True, default=str)
        for sym, info in (sources or {}).items()
    }
    if updating:
        update_database(
            path, {"series": series, "assets": added, "asset_flags": flags}, metadata=metadata
        )
    else:
        tables = {"series": series, "assets": every, "asset_flags": flags}
        write_database(path, tables, overwrite=overwrite, metadata=metadata)
    marked = {
        flag: tuple(flags.loc[flags["flag"] == flag, "symbol"])
        for flag in (CLOSE_ONLY, NO_VOLUME)
        if (flags["flag"] == flag).any()
    }
    return ImportResult(
        path=path,
        rows=len(series),
        symbols=tuple(symbols),
        new_symbols=tuple(fresh),
        start=series["timestamp"].min(),
        end=series["timestamp"].max(),
        warnings=notes,
        notes=_flag_notes(marked),
        flags=marked,
    )


def import_frames(
    out_db: str | Path,
    frame: pd.DataFrame | str | Path | Sequence[pd.DataFrame | str | Path],
    *,
    symbol: str | None = None,
    mapping: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    date_format: str | None = None,
    layout: Literal["long", "wide"] = "long",
    asset_class: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    adjust: bool = True,
) -> ImportResult:
    """Import CSV/Parquet files or DataFrames of bars into ``out_db``.

    ``layout="long"`` (default): each input is one symbol (``symbol`` or, for a file, its
    stem) or a long frame with a symbol/ticker column; column names follow
    :data:`COLUMN_ALIASES` unless ``mapping`` (source → target) says otherwise.
    ``layout="wide"``: a date column plus one close column per symbol, stored as flat
    bars and marked ``close_only``/``no_volume`` in ``asset_flags``. Dates are read with
    one detected layout (or ``date_format``, a strftime format) and stored as daily bars
    at 00:00 UTC of their date; other naive times are wall-clock in ``timezone``.
    ``asset_class`` (e.g. ``equity``, ``crypto``) goes to the ``assets`` rows of new
    symbols; it picks the weekend calendar validation checks. See :func:`write_series`
    for the modes.
    """
    if layout not in ("long", "wide"):
        raise DataImportError(f"--layout {layout!r}: expected 'long' (default) or 'wide'")
    if layout == "wide" and symbol is not None:
        raise DataImportError(
            f"--symbol {symbol} with --layout wide: a wide file names its symbols in its "
            "column headers — drop --symbol"
        )
    inputs = [frame] if isinstance(frame, pd.DataFrame | str | Path) else list(frame)
    if not inputs:
        raise DataImportError("nothing to import — give at least one file or frame")
    parts, files, notes = [], {}, []
    for item in inputs:
        name = "frame" if isinstance(item, pd.DataFrame) else str(item)
        raw = item if isinstance(item, pd.DataFrame) else read_source(item)
        common = {
            "source": name,
            "mapping": mapping,
            "timezone": timezone,
            "date_format": date_format,
        }
        if layout == "wide":
            part, times = normalise_wide(raw, **common)
        else:
            part, times = normalise_long(raw, symbol=symbol, adjust=adjust, **common)
        parts.append(part)
        if (note := times.note(Path(name).name)) is not None:
            notes.append(note)
        for sym in part["symbol"].unique():
            entry = files.setdefault(sym, {"files": set(), "dates": set(), "daily": set()})
            entry["files"].add(Path(name).name)
            entry["dates"].add(times.layout)
            entry["daily"].add(times.daily)
    sources = {
        sym: {
            "kind": "import",
            "layout": layout,
            "files": sorted(entry["files"]),
            "dates": ", ".join(sorted(entry["dates"])),
            "bars": "daily" if all(entry["daily"]) else "intraday",
            "timezone": timezone,
            "adjusted": adjust and layout == "long",
        }
        for sym, entry in files.items()
    }
    series = one_row_per_bar(pd.concat(parts, ignore_index=True), "inputs")
    assets = None
    if asset_class is not None and asset_class.strip():
        assets = pd.DataFrame({"symbol": list(files), "asset_class": asset_class.strip().lower()})
    result = write_series(
        out_db, series, assets=assets, sources=sources, append=append, overwrite=overwrite
    )
    return dataclasses.replace(result, notes=(*notes, *result.notes))
