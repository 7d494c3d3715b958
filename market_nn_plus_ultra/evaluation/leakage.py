"""Look-ahead audit: recompute everything on truncated data and demand the past is unchanged.

A value at time ``t`` is causal when it depends on data up to and including ``t`` only.
The audit tests that directly: it picks random cut points, truncates the panel (and the
alternative-data side tables) at each cut, recomputes every selected feature (the
registry pipeline, custom features included), regime label, cross-asset column and
alternative-data column, and compares each value stamped at or before the cut with the
full computation. Any difference beyond float tolerance is a leak, reported with the
column, the symbol and the first timestamp that changed. A centred rolling mean changes
the last bars before the cut; a full-sample z-score changes every bar.

It then checks the targets: every ``targets[t, s, h-1]`` must be the symbol's return
from its (h-1)-th to its h-th bar after ``t`` (recomputed independently from ``close``),
and every window of the configured length ``W`` ending at ``t`` must read rows
``t-W+1 .. t`` only, strictly before its first target bar.

Stored inputs (``indicators``, ``alt_*`` values, saved views and regime labels) have no
code to re-run; :mod:`.leakage_stored` tests their values against the next return. The
default number of cuts gives the power in :mod:`.leakage_report` (9 cuts: a one-bar peek
on 30% of bars is caught with probability ``1 - 0.7^9 = 96%``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import CrossAssetConfig, DataConfig, FeaturesConfig, RegimeConfig
from ..data.alternative import AlternativeDataConnector
from ..data.cross_asset import CalendarMismatchError, cross_asset_view
from ..data.regimes import read_sectors, regime_labels
from ..data.validation_entry import read_checked_panel
from ..features.pipeline import FeaturePipeline
from ..features.registry import FeatureRegistry
from ..windows import MarketTensors, SlidingWindowDataset
from .leakage_report import LEAK_COLUMNS, AuditPower, AuditReport, choose_cuts, cuts_for_power
from .leakage_stored import StoredThresholds, audit_stored

__all__ = [
    "LEAK_COLUMNS",
    "AuditPower",
    "AuditReport",
    "audit_leakage",
    "audit_panel",
    "check_targets",
    "cuts_for_power",
]

log = logging.getLogger(__name__)

_TARGET_SAMPLE = 4096  # windows whose gathered targets are compared value by value
Compute = Callable[[pd.Timestamp | None], pd.DataFrame]


# --------------------------------------------------------------------------------------
# Comparing full and truncated computations
# --------------------------------------------------------------------------------------


def _changed(full: pd.DataFrame, part: pd.DataFrame, rtol: float, atol: float) -> pd.DataFrame:
    """bool frame (full's index and columns): True where the truncated value differs."""
    part = part.reindex(index=full.index, columns=full.columns)
    out = {}
    for column in full.columns:
        a, b = full[column], part[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x = a.to_numpy(dtype=np.float64, na_value=np.nan)
            y = b.to_numpy(dtype=np.float64, na_value=np.nan)
            same = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = ((a == b) | (a.isna() & b.isna())).to_numpy(dtype=bool)
        out[column] = ~same
    return pd.DataFrame(out, index=full.index)


def _leak_rows(
    kind: str, full: pd.DataFrame, part: pd.DataFrame, cut: pd.Timestamp, rtol: float, atol: float
) -> pd.DataFrame:
    changed = _changed(full, part, rtol, atol)
    hits = changed.stack(future_stack=True)
    hits = hits[hits.to_numpy(dtype=bool)]
    if hits.empty:
        return pd.DataFrame(columns=LEAK_COLUMNS)
    keys = hits.index.to_frame(index=False, name=["timestamp", "symbol", "column"])
    grouped = keys.groupby(["column", "symbol"], sort=False)["timestamp"]
    rows = grouped.agg(first_timestamp="min", n_changed="size").reset_index()
    at = list(zip(rows["first_timestamp"], rows["symbol"], strict=True))
    rows["full_value"] = [full.at[k, c] for k, c in zip(at, rows["column"], strict=True)]
    part = part.reindex(index=full.index, columns=full.columns)
    rows["truncated_value"] = [part.at[k, c] for k, c in zip(at, rows["column"], strict=True)]
    rows["kind"], rows["cut"] = kind, cut
    return rows[LEAK_COLUMNS]


# --------------------------------------------------------------------------------------
# Targets and windows
# --------------------------------------------------------------------------------------


def _reference_targets(panel: pd.DataFrame, horizon: int, target: str) -> np.ndarray:
    """``[N, H]`` forward simple (or log) returns on each symbol's own bars, panel order."""
    close = panel["close"].astype("float64")
    grouped = close.groupby(level="symbol", sort=False)
    ratios = [(grouped.shift(-h) / grouped.shift(1 - h)).to_numpy() for h in range(1, horizon + 1)]
    ratio = np.column_stack(ratios)  # (N, H)
    return np.log(ratio) if target == "log_return" else ratio - 1.0


def _target_leak(column: str, symbol: str, stamp: pd.Timestamp, n: int, a, b) -> dict:
    return dict(
        kind="target",
        column=column,
        symbol=symbol,
        first_timestamp=stamp,
        cut=pd.NaT,
        n_changed=n,
        full_value=a,
        truncated_value=b,
    )


def check_targets(
    panel: pd.DataFrame,
    window: int,
    horizon: int,
    *,
    target: str = "simple_return",
    calendar: str = "union",
    seed: int = 0,
) -> pd.DataFrame:
    """Targets must be forward returns t+1..t+H and windows must end at t (see module doc).

    ``panel``: (timestamp, symbol)-indexed with ``close``; ``target`` and ``calendar`` as
    in ``windows`` config (``own``: a window reads the symbol's last ``W`` bars). Returns
    leak rows (:data:`LEAK_COLUMNS`, kind ``target``); empty when the alignment is right.
    """
    tensors = MarketTensors.from_panel(panel[["close"]], ["close"], horizon=horizon, target=target)
    t_idx = tensors.timestamps.get_indexer(panel.index.get_level_values("timestamp"))
    s_idx = pd.Index(tensors.symbols).get_indexer(panel.index.get_level_values("symbol"))
    expected = _reference_targets(panel, horizon, target)  # (N, H)
    got = np.where(tensors.target_mask[t_idx, s_idx], tensors.targets[t_idx, s_idx], np.nan)
    bad = ~np.isclose(got, expected, rtol=1e-5, atol=1e-7, equal_nan=True)  # float32 targets
    rows = []
    for h in np.flatnonzero(bad.any(axis=0)):
        first = np.flatnonzero(bad[:, h])
        ts, sym = panel.index[first[0]]
        rows.append(
            _target_leak(
                f"target_h{h + 1}", sym, ts, len(first), expected[first[0], h], got[first[0], h]
            )
        )

    dataset = SlidingWindowDataset(tensors, window, horizon, normalise="none", calendar=calendar)
    if len(dataset):
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(dataset), min(len(dataset), _TARGET_SAMPLE), replace=False))
        t, s = dataset.item_keys(pick)
        reads = dataset.input_rows(t, s)  # (B, W)
        first_target = tensors.forward_row(1)[t, s]  # (B,)
        if calendar == "union":
            wrong = reads.min(axis=1) < t - window + 1
        else:  # the symbol's own bars: strictly increasing rows, each a bar of the symbol
            wrong = ~(np.diff(reads, axis=1) > 0).all(axis=1)
            wrong |= ~tensors.present[reads, s[:, None]].all(axis=1)
        wrong |= reads.max(axis=1) != t
        wrong |= first_target <= reads.max(axis=1)
        y = dataset.batch(pick)["y"].numpy()  # (B, H)
        ref = tensors.targets[t, s, :horizon]
        wrong |= ~np.isclose(y, np.nan_to_num(ref), rtol=1e-6, atol=1e-8).all(axis=1)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            rows.append(
                _target_leak(
                    f"window_{window}",
                    tensors.symbols[s[i]],
                    tensors.timestamps[t[i]],
                    int(wrong.sum()),
                    f"reads rows {reads[i, 0]}..{reads[i, -1]}",
                    f"first target row {first_target[i]}",
                )
            )
    return pd.DataFrame(rows, columns=LEAK_COLUMNS)


# --------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------


def _truncate(panel: pd.DataFrame, cut: pd.Timestamp | None) -> pd.DataFrame:
    return panel if cut is None else panel.loc[:cut]


def audit_panel(
    panel: pd.DataFrame,
    *,
    pipeline: FeaturePipeline | None = None,
    alternative: tuple[AlternativeDataConnector, Mapping[str, pd.DataFrame]] | None = None,
    regimes: RegimeConfig | None = None,
    sectors: Mapping[str, str] | pd.Series | None = None,
    cross_asset: CrossAssetConfig | None = None,
    window: int = 128,
    horizon: int = 5,
    target: str = "simple_return",
    calendar: str = "union",
    cuts: int | None = None,
    seed: int = 0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    on_cut: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit an in-memory panel (see the module doc); each part is optional.

    ``cuts``: cut points; None = :func:`cuts_for_power` (9: a one-bar peek on 30% of
    bars is caught with probability >= 95%, stated in :attr:`AuditReport.power`).

    ``alternative`` is a connector and its loaded side tables (``connector.load``);
    features are computed on the panel with the alternative columns joined, as
    ``plus-ultra features compute`` does. ``window``, ``horizon``, ``target`` and
    ``calendar`` are those of the ``windows`` config. ``on_cut(done, total)`` reports
    progress.
    """
    frames = dict(alternative[1]) if alternative else {}
    connector = alternative[0] if alternative else None
    notes: list[str] = []

    def joined(cut: pd.Timestamp | None) -> pd.DataFrame:
        base = _truncate(panel, cut)
        if connector is None or not frames:
            return base
        side = {k: v if cut is None else v[v["timestamp"] <= cut] for k, v in frames.items()}
        return connector.join_frames(base, side)

    checks: dict[str, Compute] = {}
    if connector is not None and frames:
        alt_columns = [c.feature for c in connector.resolve(frames)]
        checks["alternative"] = lambda cut: joined(cut)[alt_columns]
    if pipeline is not None:
        checks["feature"] = lambda cut: pipeline.transform_panel(joined(cut)).reindex(
            columns=pipeline.output_names
        )
    if regimes is not None:
        if "sector_rotation" in regimes.labellers and (sectors is None or len(sectors) == 0):
            kept = [n for n in regimes.labellers if n != "sector_rotation"]
            regimes = regimes.model_copy(update={"labellers": kept})
            notes.append("sector_rotation not audited: assets.sector is empty")
        if regimes.labellers:
            cfg = regimes
            checks["regime"] = lambda cut: regime_labels(_truncate(panel, cut), cfg, sectors)
    if cross_asset is not None and cross_asset.columns:
        try:
            cross_asset_view(panel, cross_asset)
            # The overlap guard judges the full data; a short truncated span may fall
            # below it without any value changing, so it is off for the recomputations.
            loose = cross_asset.model_copy(update={"min_overlap": 0.0})
            checks["cross_asset"] = lambda cut: (
                cross_asset_view(_truncate(panel, cut), loose).values
            )
        except CalendarMismatchError as err:
            notes.append(f"cross-asset view not audited: {err}")

    cuts = cuts_for_power() if cuts is None else cuts
    chosen, tested = choose_cuts(panel.index, cuts, seed)
    full = {kind: compute(None) for kind, compute in checks.items()}
    if pipeline is not None:
        report = pipeline.last_report  # of the full computation: skipped features drop out
        full["feature"] = full["feature"][report.computed]
        notes += [f"feature {name} not audited: {why}" for name, why in report.skipped.items()]
    parts = [check_targets(panel, window, horizon, target=target, calendar=calendar, seed=seed)]
    for done, cut in enumerate(chosen, start=1):
        for kind, compute in checks.items():
            before = full[kind].loc[:cut]
            parts.append(_leak_rows(kind, before, compute(cut), cut, rtol, atol))
        if on_cut is not None:
            on_cut(done, len(chosen))
    leaks = pd.concat([p for p in parts if not p.empty] or [parts[0]], ignore_index=True)
    if not leaks.empty:
        leaks = (
            leaks.sort_values(["kind", "column", "symbol", "first_timestamp"], kind="stable")
            .drop_duplicates(["kind", "column", "symbol"])
            .reset_index(drop=True)
        )
    return AuditReport(
        leaks=leaks,
        cuts=chosen,
        checked={k: [str(c) for c in v.columns] for k, v in full.items()},
        notes=notes,
        window=window,
        horizon=horizon,
        power=AuditPower(cuts=len(chosen), tested_bars=tested),
    )


def audit_leakage(
    data: DataConfig,
    features: FeaturesConfig | None = None,
    *,
    window: int = 128,
    horizon: int = 5,
    target: str = "simple_return",
    calendar: str = "union",
    cuts: int | None = None,
    seed: int = 0,
    registry: FeatureRegistry | None = None,
    extra_features: Sequence[str] = (),
    rtol: float = 1e-9,
    atol: float = 1e-12,
    on_cut: Callable[[int, int], None] | None = None,
    thresholds: StoredThresholds | None = None,
) -> AuditReport:
    """Audit the database ``data.sqlite_path``: features, regimes, views, alt data, targets.

    Reads the panel ``data`` describes, its alternative data (``data.alternative_data``),
    the sectors for regime labels (``data.regimes``) and the view ``data.cross_asset``
    (when it names columns); computes the features ``features`` selects from
    ``registry`` (the global registry by default, so custom features are included),
    plus ``extra_features`` (names; e.g. every feature a ``--plugin`` registered).
    Then tests every stored input against the next return (:func:`audit_stored` with
    ``thresholds``; :class:`StoredThresholds` defaults).
    """
    db = Path(data.sqlite_path)
    panel = read_checked_panel(data)  # validated as read, as every command's bars are
    connector = AlternativeDataConnector(data.alternative_data)
    symbols = list(pd.unique(panel.index.get_level_values("symbol").astype(str)))
    frames = connector.load(db, symbols) if connector.specs else {}
    features = features or FeaturesConfig()
    pipeline = FeaturePipeline.from_config(features, registry)
    if extra_features:
        names = list(dict.fromkeys([*pipeline.output_names, *extra_features]))
        update = {"names": names, "tags": None}
        pipeline = FeaturePipeline.from_config(features.model_copy(update=update), registry)
    sectors = read_sectors(db)
    report = audit_panel(
        panel,
        pipeline=pipeline,
        alternative=(connector, frames),
        regimes=data.regimes,
        sectors=sectors[sectors.index.isin(symbols)],
        cross_asset=data.cross_asset,
        window=window,
        horizon=horizon,
        target=target,
        calendar=calendar,
        cuts=cuts,
        seed=seed,
        rtol=rtol,
        atol=atol,
        on_cut=on_cut,
    )
    report.stored = audit_stored(db, panel, (connector, frames), thresholds)
    report.notes += report.stored.notes
    return report
