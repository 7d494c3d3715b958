"""FeaturePipeline: compute selected registry features for every symbol of a panel.

The panel (indexed by ``timestamp``, ``symbol``, sorted by time — see
:func:`~market_nn_plus_ultra.data.panel.read_panel`) interleaves symbols. The pipeline
reorders it once to symbol-major with a stable sort, so each symbol's history is one
contiguous, time-ordered block; every feature function runs on those blocks as 1-D numpy
arrays (a loop over symbols, never over rows); the results are scattered back to the
panel's row order. Calendars may be ragged: a symbol's features only ever see its own
bars. :meth:`FeaturePipeline.transform_arrays` runs the same kernels on arrays that are
already symbol-major (the service's bars), with no DataFrame on either side.

A feature whose input column is missing is skipped with a structured warning
(``extra={"fields": {...}}``) naming the missing column; calendar features are skipped
(info) for daily data; a feature reading a column that is a placeholder for a close-only
symbol (``unknown_inputs``) is skipped with a warning.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..config import FeaturesConfig
from .frequency import is_intraday
from .registry import REGISTRY, TIMESTAMP, FeatureError, FeatureRegistry, FeatureSpec

__all__ = ["FeaturePipeline", "FeatureReport"]

log = logging.getLogger(__name__)


@dataclass
class FeatureReport:
    """What the last :meth:`FeaturePipeline.transform_panel` call did."""

    computed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    warmup: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Blocks:
    """The panel reordered symbol-major: ``order`` maps block rows to panel rows."""

    order: np.ndarray | None  # None when the panel is already symbol-major
    bounds: np.ndarray  # (S + 1,) block start offsets, last = n rows
    symbols: list[str]
    timestamps: np.ndarray  # int64 ns UTC, symbol-major
    # (T, S) when the panel is a full time-major grid (every symbol at every timestamp, in
    # symbol order): reordering is then a transpose, far cheaper than a fancy-index gather.
    grid: tuple[int, int] | None = None

    def gather(self, values: np.ndarray) -> np.ndarray:
        """Panel-order (n,) → symbol-major (n,), contiguous."""
        if self.grid is not None:
            return values.reshape(self.grid).T.ravel()
        return values if self.order is None else values[self.order]

    def scatter(self, values: np.ndarray, out: np.ndarray) -> None:
        """Symbol-major (n,) → panel-order ``out`` (n,)."""
        if self.grid is not None:
            out.reshape(self.grid)[...] = values.reshape(self.grid[::-1]).T
        elif self.order is None:
            out[:] = values
        else:
            out[self.order] = values


def _check_panel(panel: pd.DataFrame) -> tuple[int, int]:
    index = panel.index
    names = list(getattr(index, "names", []))
    if not isinstance(index, pd.MultiIndex) or "timestamp" not in names or "symbol" not in names:
        raise FeatureError(
            f"features need a panel indexed by (timestamp, symbol); got index levels {names} — "
            "read it with market_nn_plus_ultra.data.panel.read_panel or "
            "df.set_index(['timestamp', 'symbol'])"
        )
    return names.index("timestamp"), names.index("symbol")


def _timestamps_ns(level: pd.Index) -> np.ndarray:
    stamps = pd.DatetimeIndex(level)
    if stamps.tz is None:
        stamps = stamps.tz_localize("UTC")
    return stamps.tz_convert("UTC").as_unit("ns").asi8


def _grid(codes: np.ndarray, stamps: np.ndarray, n_symbols: int) -> tuple[int, int] | None:
    """(T, S) when rows run time-major over all ``S`` symbols with rising timestamps."""
    n = len(codes)
    if n == 0 or n % n_symbols:
        return None
    shape = (n // n_symbols, n_symbols)
    if not (codes.reshape(shape) == np.arange(n_symbols, dtype=codes.dtype)).all():
        return None
    if shape[0] > 1 and not (np.diff(stamps.reshape(shape), axis=0) > 0).all():
        return None
    return shape


def _blocks(panel: pd.DataFrame) -> _Blocks:
    """Symbol-major order of the panel's rows, checked for duplicate or unsorted bars."""
    ts_pos, sym_pos = _check_panel(panel)
    index = panel.index
    codes = np.asarray(index.codes[sym_pos])
    if len(codes) and codes.min() < 0:
        raise FeatureError("panel index: some rows have no symbol (NaN) — drop them first")
    stamps = _timestamps_ns(index.levels[ts_pos])[np.asarray(index.codes[ts_pos])]
    levels = index.levels[sym_pos]
    # The common case, every symbol at every bar: a (T, S) grid, reordered by transposing.
    if len(levels) and (grid := _grid(codes, stamps, len(levels))) is not None:
        length = grid[0]
        return _Blocks(
            order=None,
            bounds=np.arange(grid[1] + 1) * length,
            symbols=[str(s) for s in levels],
            timestamps=stamps.reshape(grid).T.ravel(),
            grid=grid,
        )
    # A stable sort on the symbol code alone keeps each symbol's rows in panel (time) order;
    # small integer codes sort by radix in numpy.
    small = codes.astype(np.int16) if len(levels) < 2**15 else codes
    order = np.argsort(small, kind="stable")
    sorted_codes = codes[order]
    sorted_ts = stamps[order]
    steps = np.diff(sorted_ts)
    same = sorted_codes[1:] == sorted_codes[:-1]
    if (steps[same] <= 0).any():
        order = np.lexsort((stamps, codes))
        sorted_codes, sorted_ts = codes[order], stamps[order]
        same = sorted_codes[1:] == sorted_codes[:-1]
        dup = (np.diff(sorted_ts) == 0) & same
        if dup.any():
            i = int(np.argmax(dup))
            symbol = levels[sorted_codes[i]]
            raise FeatureError(
                f"panel: duplicate bar for {symbol} at {pd.Timestamp(sorted_ts[i], tz='UTC')} — "
                "each (timestamp, symbol) must appear once; drop duplicates first"
            )
    starts = np.flatnonzero(np.r_[True, ~same]) if len(codes) else np.array([], dtype=np.int64)
    bounds = np.append(starts, len(codes))
    identity = bool(len(order) == 0 or (np.diff(order) == 1).all())
    return _Blocks(
        order=None if identity else order,
        bounds=bounds,
        symbols=[str(s) for s in levels[sorted_codes[starts]]],
        timestamps=sorted_ts,
    )


class FeaturePipeline:
    """Computes a selection of registered features on a (timestamp, symbol) panel.

    ``names`` pick features by output or group name, ``tags`` add every feature with one
    of those tags; neither given selects the registry's default set. ``params`` override
    parameters per group (``{"fft_energy": {"window": 128}}``). Unknown names, tags and
    parameters raise :class:`FeatureError` with a "did you mean" hint. ``threads`` compute
    that many symbols at once (0 = one per CPU core); feature functions must therefore be
    pure functions of their arrays.
    """

    def __init__(
        self,
        registry: FeatureRegistry | None = None,
        names: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        *,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        dtype: Literal["float64", "float32"] = "float64",
        threads: int = 0,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.selection = self.registry.select(names, tags)
        self.params: dict[str, dict[str, Any]] = {}
        for group, overrides in (params or {}).items():
            spec = self.registry.get(group)
            if spec.name not in self.selection:
                continue  # a parameter for an unselected feature is harmless
            self.params[spec.name] = spec.resolve_params(overrides)
        for group in self.selection:
            self.params.setdefault(group, self.registry.get(group).resolve_params())
        self.dtype = np.dtype(dtype)
        if threads < 0:
            raise FeatureError(f"threads must be >= 0 (0 = one per CPU core), got {threads}")
        self.threads = threads or os.cpu_count() or 1
        self.last_report = FeatureReport()

    @classmethod
    def from_config(
        cls, config: FeaturesConfig, registry: FeatureRegistry | None = None
    ) -> FeaturePipeline:
        """Build the pipeline that the ``features`` config section describes."""
        registry = REGISTRY if registry is None else registry
        params: dict[str, dict[str, Any]] = {
            "fft_energy": {"window": config.fft_window},
            "realised_vol_20": {"periods_per_year": config.periods_per_year},
        }
        params = {k: v for k, v in params.items() if k in registry}
        return cls(
            registry,
            config.names,
            config.tags,
            params=params,
            dtype=config.dtype,
            threads=config.threads,
        )

    @property
    def specs(self) -> list[FeatureSpec]:
        """The selected feature groups, in registration order."""
        return [self.registry.get(name) for name in self.selection]

    @property
    def output_names(self) -> list[str]:
        """The feature columns this pipeline adds (when every input is present)."""
        return [out for outs in self.selection.values() for out in outs]

    @property
    def warmup(self) -> dict[str, int]:
        """Leading NaN rows per symbol for each output column."""
        return {
            out: self.registry.get(group).warmup_rows(self.params[group])
            for group, outs in self.selection.items()
            for out in outs
        }

    def _missing(self, spec: FeatureSpec, columns: Collection[str]) -> list[str]:
        return [c for c in spec.inputs if c != TIMESTAMP and c not in columns]

    def transform_panel(
        self,
        panel: pd.DataFrame,
        on_feature: Callable[[str, int, int], None] | None = None,
        *,
        unknown_inputs: Mapping[str, Collection[str]] | None = None,
    ) -> pd.DataFrame:
        """Return ``panel`` with the selected feature columns appended (same index, order).

        ``on_feature(group, done, total)`` is called after each feature group (for
        progress bars). Feature columns are ``self.dtype``; their first ``warmup`` rows per
        symbol are NaN. A computed column replaces a panel column of the same name (e.g. a
        stored indicator), with a warning. ``unknown_inputs`` (column → symbols whose values
        there are placeholders, e.g. close-only bars) skips, with a warning, every feature
        reading such a column, for the whole panel: one column serves every symbol.
        """
        blocks = _blocks(panel)
        results = self._run(
            blocks,
            panel.columns,
            lambda name: _column(panel, name, blocks),
            on_feature,
            unknown_inputs,
        )
        return _assemble(panel, results)

    def transform_arrays(
        self,
        columns: Mapping[str, np.ndarray],
        bounds: np.ndarray,
        symbols: Sequence[str],
        timestamps: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The selected features of symbol-major arrays, without building a DataFrame.

        Symbol ``symbols[k]``'s bars are rows ``bounds[k]:bounds[k + 1]`` of every
        ``columns`` array (input column → ``(n,)`` numbers) and of ``timestamps`` (int64
        ns UTC), rising in time within a symbol. Returns feature column → ``(n,)``
        ``self.dtype`` array in the same row order: the values :meth:`transform_panel`
        gives for those bars. Features are skipped (and reported) as there.
        """
        stamps = np.asarray(timestamps, dtype=np.int64)
        bounds = np.asarray(bounds, dtype=np.int64)
        n = len(stamps)
        if len(bounds) != len(symbols) + 1 or bounds[0] != 0 or bounds[-1] != n:
            raise FeatureError(
                f"bounds must be the {len(symbols) + 1} block offsets 0 .. {n} of "
                f"{len(symbols)} symbols, got {len(bounds)} offsets ending at {bounds[-1]}"
            )
        if (np.diff(bounds) < 0).any():
            raise FeatureError("bounds must not decrease (one time-ordered block per symbol)")
        inner = np.ones(max(n - 1, 0), dtype=bool)
        inner[bounds[1:-1][(bounds[1:-1] > 0) & (bounds[1:-1] < n)] - 1] = False
        if (np.diff(stamps)[inner] <= 0).any():
            i = int(np.argmax((np.diff(stamps) <= 0) & inner))
            k = int(np.searchsorted(bounds, i, side="right")) - 1
            raise FeatureError(
                f"arrays: bars of {symbols[k]} are not in rising time order at row {i + 1} — "
                "sort each symbol's bars by time and send each timestamp once"
            )
        for name, values in columns.items():
            if len(values) != n:
                raise FeatureError(f"column {name} has {len(values)} rows, the bars {n}")
        blocks = _Blocks(
            order=None, bounds=bounds, symbols=[str(s) for s in symbols], timestamps=stamps
        )

        def get(name: str) -> np.ndarray:
            values = np.ascontiguousarray(columns[name], dtype=np.float64)
            _warn_nan(name, values)
            return values

        return self._run(blocks, columns, get, None, None)

    def _run(
        self,
        blocks: _Blocks,
        columns: Collection[str],
        get_column: Callable[[str], np.ndarray],
        on_feature: Callable[[str, int, int], None] | None,
        unknown_inputs: Mapping[str, Collection[str]] | None,
    ) -> dict[str, np.ndarray]:
        """Every selected feature group over ``blocks``; fills :attr:`last_report`."""
        report = FeatureReport()
        # The bar frequency (a median over every step) is only needed by intraday-only features.
        intraday = any(self.registry.get(g).intraday_only for g in self.selection) and (
            is_intraday(blocks.timestamps, blocks.bounds[:-1])
        )
        inputs: dict[str, np.ndarray] = {TIMESTAMP: blocks.timestamps}
        results: dict[str, np.ndarray] = {}
        total = len(self.selection)
        # Symbols are independent and the kernels release the GIL inside numpy/scipy, so
        # threads over symbols scale with the cores (results do not depend on the count).
        workers = min(self.threads, len(blocks.symbols))
        pool = ThreadPoolExecutor(workers, "features") if workers > 1 else nullcontext()
        with pool as executor:
            for done, (group, outputs) in enumerate(self.selection.items(), start=1):
                spec = self.registry.get(group)
                reason = self._skip_reason(spec, columns, intraday, blocks)
                if reason is None:
                    reason = _placeholder_inputs(spec, unknown_inputs, blocks.symbols)
                if reason is not None:
                    report.skipped.update(dict.fromkeys(outputs, reason))
                else:
                    started = time.perf_counter()
                    for column in spec.inputs:
                        if column not in inputs:
                            inputs[column] = get_column(column)
                    arrays = [inputs[c] for c in spec.inputs]
                    values = self._compute(spec, arrays, blocks, executor)
                    for out in outputs:
                        results[out] = values[spec.outputs.index(out)]
                        report.computed.append(out)
                        report.warmup[out] = spec.warmup_rows(self.params[group])
                    report.seconds[group] = time.perf_counter() - started
                if on_feature is not None:
                    on_feature(group, done, total)
        self.last_report = report
        return results

    def _skip_reason(
        self, spec: FeatureSpec, columns: Collection[str], intraday: bool, blocks: _Blocks
    ) -> str | None:
        missing = self._missing(spec, columns)
        if missing:
            log.warning(
                "feature %s skipped: panel has no column %s",
                spec.name,
                ", ".join(missing),
                extra={
                    "fields": {
                        "event": "feature_skipped",
                        "feature": spec.name,
                        "outputs": list(spec.outputs),
                        "missing": missing,
                        "tables": list(spec.tables),
                    }
                },
            )
            return f"missing column {', '.join(missing)}"
        if spec.intraday_only and not intraday and len(blocks.timestamps):
            log.info(
                "feature %s skipped: intraday-only and the bars are daily or coarser",
                spec.name,
                extra={"fields": {"event": "feature_skipped", "feature": spec.name}},
            )
            return "intraday-only feature on daily data"
        return None

    def _compute(
        self,
        spec: FeatureSpec,
        arrays: list[np.ndarray],
        blocks: _Blocks,
        executor: ThreadPoolExecutor | None,
    ) -> list[np.ndarray]:
        """Run one feature group block by block (on ``executor``'s threads when given)."""
        n = len(blocks.timestamps)
        outs = [np.empty(n, dtype=self.dtype) for _ in spec.outputs]
        params = self.params[spec.name]

        def run(span: tuple[int, int]) -> None:
            lo, hi = span  # each symbol writes only its own rows: no locking needed
            values = spec.compute([a[lo:hi] for a in arrays], params)
            for out, value in zip(outs, values, strict=True):
                out[lo:hi] = value

        spans = list(itertools.pairwise(blocks.bounds))
        if executor is None:
            for span in spans:
                run(span)
        else:
            list(executor.map(run, spans))  # list(): re-raises a feature's error here
        if blocks.order is None and blocks.grid is None:
            return outs
        final = []
        for out in outs:
            scattered = np.empty(n, dtype=self.dtype)
            blocks.scatter(out, scattered)
            final.append(scattered)
        return final


def _placeholder_inputs(
    spec: FeatureSpec, unknown: Mapping[str, Collection[str]] | None, symbols: list[str]
) -> str | None:
    """Why ``spec`` is skipped when an input is a placeholder for some symbol, else None."""
    lacking = {c: sorted(set(symbols) & set((unknown or {}).get(c, ()))) for c in spec.inputs}
    names = sorted({s for syms in lacking.values() for s in syms})
    if not names:
        return None
    columns = ", ".join(c for c, syms in lacking.items() if syms)
    reason = f"{columns} unknown for {', '.join(names[:8])}{' …' * (len(names) > 8)}"
    fields = {"event": "feature_skipped", "feature": spec.name, "unknown": lacking}
    log.warning(
        "feature %s skipped: %s (close-only or volume-less import, see asset_flags) — import "
        "full OHLCV bars for them, or leave them out of data.symbols",
        spec.name,
        reason,
        extra={"fields": fields},
    )
    return reason


def _column(panel: pd.DataFrame, name: str, blocks: _Blocks) -> np.ndarray:
    values = panel[name].to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.ascontiguousarray(blocks.gather(values))
    _warn_nan(name, values)
    return values


def _warn_nan(name: str, values: np.ndarray) -> None:
    n_bad = int(np.isnan(values).sum())
    if n_bad:
        log.warning(
            "panel column %s has %d NaN values; recursive features (rsi, macd, atr) stay NaN "
            "after the first one in a symbol — validate and clean the data first",
            name,
            n_bad,
            extra={"fields": {"event": "feature_input_nan", "column": name, "n_rows": n_bad}},
        )


def _assemble(panel: pd.DataFrame, results: dict[str, np.ndarray]) -> pd.DataFrame:
    clash = [c for c in results if c in panel.columns]
    if clash:
        log.warning(
            "computed features replace panel columns %s",
            ", ".join(clash),
            extra={"fields": {"event": "feature_replaces_column", "columns": clash}},
        )
        panel = panel.drop(columns=clash)
    if not results:
        return panel.copy()
    features = pd.DataFrame(results, index=panel.index, copy=False)
    return pd.concat([panel, features], axis=1)
