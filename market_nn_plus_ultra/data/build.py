"""``data build``: validate a database, then write regime labels and cross-asset views into it.

The workflow validates the database (``data.strict_validation`` halts on any failure;
otherwise failures are logged and the failing ``series`` rows are dropped, with counts),
reads the panel once, computes the requested outputs, and writes them in
ONE transaction, replacing what an earlier build wrote for the same labellers / view and
symbols (so building twice leaves identical tables). With ``output`` the source is first
copied (SQLite's online backup, so a live WAL is included) to a temporary file beside the
output, written there, fsynced and renamed into place (``atomic_path``): the source is never touched and the output
is either complete or absent::

    result = build_database(cfg.data, regime_labels=True, cross_asset_view=True)
    print(result.summary())
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._io import atomic_path
from ..config import DataConfig, RegimeConfig
from .cross_asset import CrossAssetView, cross_asset_view, parse_context_columns
from .panel import OHLCV, read_panel
from .regimes import read_sectors, regime_labels, regimes_table
from .store import StoreError, connect, list_tables, read_table, update_database
from .validation import drop_invalid_rows, validate_database, validate_tables
from .validation_report import ValidationReport

__all__ = ["BUILD_STEPS", "BuildResult", "build_database"]

log = logging.getLogger(__name__)

#: The steps :func:`build_database` reports through ``on_step``, in order.
BUILD_STEPS = ("validating", "reading", "computing", "writing")


@dataclass
class BuildResult:
    """What a build wrote, where, and what validation said about the input."""

    path: Path
    validation: ValidationReport
    regime_rows: int = 0
    view_rows: int = 0
    #: rows per (name, value) label written, when regime labels were built.
    label_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    view: CrossAssetView | None = None

    def summary(self) -> str:
        """One line: rows written per table."""
        parts = []
        if self.regime_rows:
            parts.append(f"{self.regime_rows:,} regime labels")
        if self.view is not None:
            parts.append(
                f"{self.view_rows:,} cross-asset values in view {self.view.view!r} "
                f"({self.view.dropped_rows:,} bars dropped)"
            )
        text = ", ".join(parts) or "nothing"
        if self.validation.dropped:
            dropped = ", ".join(f"{n:,} {t}" for t, n in self.validation.dropped.items())
            text += f"; dropped invalid rows: {dropped}"
        return text


def _keep_others(
    existing: pd.DataFrame, column: str, built: set[str], symbols: set[str]
) -> pd.DataFrame:
    """Rows an earlier build or another tool wrote that this build does not replace."""
    if existing.empty:
        return existing
    mine = existing[column].isin(built) & existing["symbol"].isin(symbols)
    return existing[~mine]


def _existing(path: Path, table: str) -> pd.DataFrame:
    with contextlib.closing(connect(path)) as con:
        present = table in list_tables(con)
    return read_table(path, table, parse_time=False) if present else pd.DataFrame()


def _validate(cfg: DataConfig) -> ValidationReport:
    report = validate_database(cfg.sqlite_path, gap_tolerance=cfg.gap_tolerance)
    if cfg.strict_validation:
        report.raise_if_failed(strict=True)
    for failure in report.failures:
        log.warning("validation: %s", failure)
    return report


def _regime_settings(cfg: DataConfig, source: Path) -> tuple[RegimeConfig, pd.Series | None]:
    """The labellers to run and the sectors they need.

    ``sector_rotation`` needs ``assets.sector``: on a database without sectors (index or
    single-asset data) it is skipped with a warning instead of failing the whole build,
    unless it is the only labeller asked for.
    """
    labelling = cfg.regimes
    if "sector_rotation" not in labelling.labellers:
        return labelling, None
    sectors = read_sectors(source)
    if sectors is not None and pd.Series(sectors, dtype=object).dropna().size:
        return labelling, sectors
    others = [name for name in labelling.labellers if name != "sector_rotation"]
    if not others:
        raise ValueError(
            "data.regimes.labellers is [sector_rotation] but assets.sector is empty — fill "
            "assets.sector (UPDATE assets SET sector = ... WHERE symbol = ...) or choose "
            "another labeller (volatility, liquidity)"
        )
    log.warning(
        "sector_rotation skipped: assets.sector is empty in %s — fill assets.sector to label "
        "sector rotation; labelling %s",
        source,
        ", ".join(others),
    )
    return labelling.model_copy(update={"labellers": others}), None


def _read(cfg: DataConfig, cross_asset: bool, report: ValidationReport) -> pd.DataFrame:
    """The panel, minus the ``series`` rows that fail validation (counted in ``report``)."""
    needs_indicators = cross_asset and any(
        c.column not in OHLCV for c in parse_context_columns(cfg.cross_asset.columns)
    )
    panel = read_panel(
        cfg.sqlite_path,
        cfg.symbols,
        cfg.start,
        cfg.end,
        include_indicators=cfg.include_indicators and needs_indicators,
        cache=cfg.cache,
        cache_dir=cfg.cache_dir,
        threads=cfg.read_threads,
    )
    if cfg.strict_validation:
        return panel  # strict validation already refused any failure
    kept, dropped = drop_invalid_rows("series", panel)
    for table, n in dropped.dropped.items():
        report.dropped[table] = report.dropped.get(table, 0) + n
        log.warning("dropped %s %s rows that fail validation before building", f"{n:,}", table)
    return kept


def _copy(source: Path, target: Path) -> None:
    """Consistent copy of a live database (committed WAL pages included)."""
    with (
        contextlib.closing(connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def build_database(
    cfg: DataConfig,
    *,
    regimes: bool = False,
    cross_asset: bool = False,
    output: str | Path | None = None,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> BuildResult:
    """Validate ``cfg.sqlite_path`` and write the requested outputs (see the module doc).

    ``regimes`` writes ``regimes`` rows per ``cfg.regimes``; ``cross_asset``
    writes view ``cfg.cross_asset.view`` of ``cross_asset_views``. ``output`` writes to a
    copy instead (refused when it exists, unless ``overwrite``). With
    ``cfg.strict_validation`` any validation failure raises ``DataValidationError``
    before anything is written. ``on_step(description)`` is called as each of the
    :data:`BUILD_STEPS` begins (for progress bars).
    """
    step = on_step or (lambda _description: None)
    if not (regimes or cross_asset):
        raise ValueError(
            "nothing to build — pass --regime-labels and/or --cross-asset-view "
            "(with data.cross_asset.columns or --cross-asset-columns SPY:close,…)"
        )
    source = Path(cfg.sqlite_path)
    target = Path(output) if output is not None else source
    if output is not None and target.exists() and not overwrite:
        raise StoreError(f"{target} already exists — pass --overwrite to replace it")
    if output is not None and target.resolve() == source.resolve():
        raise StoreError(f"--output {target} is the input database — omit --output to update it")

    step("validating")
    report = _validate(cfg)
    step("reading")
    panel = _read(cfg, cross_asset, report)
    if panel.empty:
        raise StoreError(
            f"{source}: no bars for data.symbols={cfg.symbols} between {cfg.start} and {cfg.end}"
        )
    symbols = set(pd.unique(panel.index.get_level_values("symbol").astype(str)))
    tables: dict[str, pd.DataFrame] = {}
    result = BuildResult(path=target, validation=report)

    step("computing")
    if regimes:
        labelling, sectors = _regime_settings(cfg, source)
        new = regimes_table(regime_labels(panel, labelling, sectors))
        kept = _keep_others(_existing(source, "regimes"), "name", set(labelling.labellers), symbols)
        tables["regimes"] = pd.concat([kept, new], ignore_index=True)
        result.regime_rows = len(new)
        result.label_counts = new.groupby(["name", "value"]).size().rename("rows").reset_index()

    if cross_asset:
        view = cross_asset_view(panel, cfg.cross_asset)
        new = view.table()
        kept = _keep_others(_existing(source, "cross_asset_views"), "view", {view.view}, symbols)
        tables["cross_asset_views"] = pd.concat([kept, new], ignore_index=True)
        result.view, result.view_rows = view, len(new)

    settings = {
        "regimes": cfg.regimes.model_dump(mode="json") if regimes else None,
        "cross_asset": cfg.cross_asset.model_dump(mode="json") if cross_asset else None,
        "symbols": sorted(symbols),
        "regime_rows": result.regime_rows,
        "view_rows": result.view_rows,
    }
    metadata = {"build": json.dumps(settings, sort_keys=True)}
    # Our own rows must pass the checks `data validate` applies: fail before writing.
    validate_tables(tables).raise_if_failed(strict=True)
    step("writing")
    if output is None:
        update_database(target, tables, replace_tables=tuple(tables), metadata=metadata)
        return result

    with atomic_path(target) as tmp:
        _copy(source, tmp)
        update_database(tmp, tables, replace_tables=tuple(tables), metadata=metadata)
    return result
