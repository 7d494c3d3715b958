"""Stored-data leakage check: does any stored model input know the next bar's return?

Recomputation cannot test what the database merely stores (an ``indicators`` row, an
``alt_*`` value, a saved cross-asset view or regime label): there is no code to re-run.
This check tests the values themselves against the next simple return
``r_{t+1} = close_{t+1} / close_t - 1`` of each symbol's own bars:

- **copy**: rows where the value is an exact multiple of ``r_{t+1}`` (simple or log),
  against the same multiple of ``r_{t-1}`` (the return two bars back) as a placebo; a
  one-sided sign test at the Bonferroni level. Catches a copied future return on any
  share of rows.
- **ic** / **ic_change**: the pooled Spearman IC of the value (and of its one-bar change)
  with ``r_{t+1}``, against the IC of the value one bar older with the same return. A
  leak is strong (``|IC| >= ic_min``), significant (Bonferroni) and collapses under the
  lag (``|IC_lagged| <= collapse · |IC|``); a real, persistent signal does not collapse
  and a plausible one is far below ``ic_min``.
- **timestamp** / **known_at**: each bar's joined ``alt_*`` row must be stamped, and
  (when the table has a known-at column) known, at or before the bar's timestamp.

Regime labels are categorical: their "IC" is the rank-ANOVA effect size
(:func:`~.leakage_stats.rank_anova`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..config import AlternativeDataSpec
from ..data.alternative import AlternativeDataConnector
from ..data.cross_asset import read_cross_asset_view
from ..data.regimes import read_regimes
from ..data.store import connect, list_tables, read_table
from .leakage_stats import copy_count, pooled_ic, rank_anova

__all__ = ["FINDING_COLUMNS", "KNOWN_AT_COLUMNS", "StoredAudit", "StoredThresholds", "audit_stored"]

#: Columns of :attr:`StoredAudit.findings`, one row per (check, table, column).
FINDING_COLUMNS = ["check", "table", "column", "n", "statistic", "evidence", "fix"]
#: Side-table columns read as "the time this row became known" (UTC).
KNOWN_AT_COLUMNS = ("known_at", "available_at", "release_time", "released_at", "published_at")
_OHLCV = ("open", "high", "low", "close", "volume")
_STATS = [
    "table", "column", "n", "ic_next", "z_next", "ic_lagged", "ic_now", "ic_change",
    "z_change", "ic_change_lagged", "copies", "placebo", "copy_scale", "copy_kind",
    "copy_p", "copy_n",
]  # fmt: skip
_FIX = {
    "indicators": "recompute `{column}` from bars up to t only, or delete it "
    "(DELETE FROM indicators WHERE name = '{column}') or keep it out of the inputs "
    "(data.include_indicators=false / windows.feature_columns)",
    "alt": "stamp each `{table}` row at the time it became known (the join reads the "
    "latest row stamped at or before the bar), or drop `{column}` from "
    "data.alternative_data",
    "cross_asset_views": "rebuild the view with `plus-ultra data build --cross-asset-view` "
    "(it aligns each context value as of the bar)",
    "regimes": "rebuild the labels with `plus-ultra data build --regime-labels` (causal "
    "labellers), or delete the `{column}` rows of `regimes`",
}


@dataclass(frozen=True)
class StoredThresholds:
    """When a stored column's statistics are a leak (see the module doc and docs/audit.md)."""

    alpha: float = 1e-3  # family-wise false-alarm rate, Bonferroni over the columns tested
    ic_min: float = 0.5  # least |IC| with the next return taken as a leak, not a signal
    collapse: float = 0.5  # largest |IC of the value a bar older| / |IC| of a leak
    copy_min: int = 5  # fewest rows equal to a multiple of the next return reported


@dataclass
class StoredAudit:
    """Findings (empty when clean), per-column statistics and what was checked.

    ``stats``: one row per tested column: ``table, column, n, ic_next, ic_lagged,
    ic_now, ic_change, ic_change_lagged, copies, placebo, copy_scale``.
    """

    findings: pd.DataFrame
    stats: pd.DataFrame
    checked: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Returns:
    codes: np.ndarray  # (N,) symbol code of each panel row
    ahead: np.ndarray  # (N,) r_{t+1}
    now: np.ndarray  # (N,) r_t
    behind: np.ndarray  # (N,) r_{t-1}


def _returns(panel: pd.DataFrame) -> _Returns:
    close = panel["close"].astype("float64")
    by = close.groupby(level="symbol", sort=False)
    now = close / by.shift(1) - 1.0
    codes = pd.factorize(panel.index.get_level_values("symbol"))[0]
    return _Returns(
        codes=codes,
        ahead=(by.shift(-1) / close - 1.0).to_numpy(),
        now=now.to_numpy(),
        behind=now.groupby(level="symbol", sort=False).shift(1).to_numpy(),
    )


def _lag(values: pd.Series) -> pd.Series:
    """The value one bar of the same symbol earlier."""
    return values.groupby(level="symbol", sort=False).shift(1)


def _numeric_stats(values: pd.Series, r: _Returns) -> dict:
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    lagged = _lag(values).to_numpy(dtype=np.float64, na_value=np.nan)
    change = x - lagged
    change_lagged = _lag(pd.Series(change, index=values.index)).to_numpy()
    nxt = pooled_ic(x, r.ahead, r.codes)
    simple = copy_count(x, r.ahead, r.behind)
    log = copy_count(x, np.log1p(r.ahead), np.log1p(r.behind))
    copied, kind = (simple, "simple") if simple.copies >= log.copies else (log, "log")
    return dict(
        n=nxt.n,
        ic_next=nxt.ic,
        z_next=nxt.z,
        ic_lagged=pooled_ic(lagged, r.ahead, r.codes).ic,
        ic_now=pooled_ic(x, r.now, r.codes).ic,
        ic_change=(chg := pooled_ic(change, r.ahead, r.codes)).ic,
        z_change=chg.z,
        ic_change_lagged=pooled_ic(change_lagged, r.ahead, r.codes).ic,
        copies=copied.copies,
        placebo=copied.placebo,
        copy_scale=copied.scale,
        copy_kind=kind,
        copy_p=copied.p_value,
        copy_n=copied.n,
    )


def _label_stats(values: pd.Series, r: _Returns) -> dict:
    labels = values.to_numpy(dtype=object)
    lagged = _lag(values).to_numpy(dtype=object)
    nxt = rank_anova(labels, r.ahead, r.codes)
    return dict(
        n=nxt.n,
        ic_next=nxt.ic,
        z_next=nxt.z,
        ic_lagged=rank_anova(lagged, r.ahead, r.codes).ic,
        ic_now=rank_anova(labels, r.now, r.codes).ic,
        copies=0,
    )


def _stored_columns(
    db: Path,
    panel: pd.DataFrame,
    alt: tuple[AlternativeDataConnector, Mapping[str, pd.DataFrame]] | None,
) -> tuple[dict[tuple[str, str], pd.Series], list[str]]:
    """``{(table, column): values aligned to panel rows}`` for every stored input."""
    columns: dict[tuple[str, str], pd.Series] = {}
    notes: list[str] = []
    for name in panel.columns:
        if name not in _OHLCV and pd.api.types.is_numeric_dtype(panel[name]):
            columns[("indicators", str(name))] = panel[name]
    if alt is not None and alt[1]:
        connector, frames = alt
        joined = connector.join_frames(panel[["close"]], frames)
        for col in connector.resolve(frames):
            columns[(col.table, col.feature)] = joined[col.feature]
    with contextlib.closing(connect(db)) as con:
        present = set(list_tables(con))
    if "cross_asset_views" in present:
        views = list(dict.fromkeys(_read_views(db)))
        for view in views:
            wide = read_cross_asset_view(db, view).reindex(panel.index)
            for name in wide.columns:
                columns[("cross_asset_views", f"{view}.{name}")] = wide[name]
    if "regimes" in present:
        wide = read_regimes(db).reindex(panel.index)
        for name in wide.columns:
            columns[("regimes", str(name))] = wide[name]
    if not columns:
        notes.append(
            "stored check: no indicators, alt_* values, cross-asset views or regime labels to test"
        )
    return columns, notes


def _read_views(db: Path) -> list[str]:
    frame = read_table(db, "cross_asset_views", parse_time=False)
    return list(frame["view"].astype(str)) if len(frame) else []


def _fix(table: str, column: str) -> str:
    key = "alt" if table.startswith("alt_") else table
    return _FIX[key].format(table=table, column=column)


def _findings(table_stats: pd.DataFrame, limits: StoredThresholds) -> list[dict]:
    """At most one finding per column: a copy, else the level IC, else the change IC."""
    alpha, ic_min, collapse = limits.alpha, limits.ic_min, limits.collapse
    tests = max(1, 2 * len(table_stats))  # level and change IC per column
    z_min = float(stats.norm.isf(alpha / (2 * tests)))
    rows = []
    for row in table_stats.itertuples(index=False):
        where = dict(table=row.table, column=row.column, n=row.n, fix=_fix(row.table, row.column))
        if row.copies >= limits.copy_min and row.copy_p <= alpha / len(table_stats):
            share = row.copies / max(row.copy_n, 1)
            rows.append(
                dict(
                    check="copy",
                    statistic=float(row.copies),
                    evidence=f"{row.copies:,} of {row.copy_n:,} rows ({share:.0%}) equal "
                    f"{row.copy_scale:.6g} × the next {row.copy_kind} return (t→t+1); "
                    f"placebo: {row.placebo:,} equal it × the return t-2→t-1 "
                    f"(sign test p = {row.copy_p:.2g})",
                    **where,
                )
            )
            continue
        for check, ic, z, lagged in (
            ("ic", row.ic_next, row.z_next, row.ic_lagged),
            ("ic_change", row.ic_change, row.z_change, row.ic_change_lagged),
        ):
            if not np.isfinite(ic) or abs(ic) < ic_min or abs(z) < z_min:
                continue
            if np.isfinite(lagged) and abs(lagged) > collapse * abs(ic):
                continue  # a persistent signal: it predicts as well a bar later
            what = "the value" if check == "ic" else "its one-bar change"
            rows.append(
                dict(
                    check=check,
                    statistic=float(ic),
                    evidence=f"rank IC of {what} with the next return {ic:+.3f} "
                    f"(z = {z:.1f} ≥ {z_min:.1f}, n = {row.n:,}); lagged one bar "
                    f"{lagged:+.3f} (≤ {collapse:.0%} of it: collapses); with the "
                    f"bar's own return {row.ic_now:+.3f}",
                    **where,
                )
            )
            break
    return rows


def _probe_frames(
    connector: AlternativeDataConnector, frames: Mapping[str, pd.DataFrame]
) -> tuple[list[AlternativeDataSpec], dict[str, pd.DataFrame]]:
    """Per side table, its rows' own stamp (and known-at times) as epoch-second columns."""
    specs, probes = [], {}
    for spec in connector.specs:
        table = spec.name if spec.name.startswith("alt_") else "alt_" + spec.name
        if table not in frames:
            continue
        side = frames[table]
        probe = {"timestamp": pd.DatetimeIndex(side["timestamp"]).as_unit("ns").asi8 / 1e9}
        for column in (c for c in KNOWN_AT_COLUMNS if c in side.columns):
            parsed = pd.DatetimeIndex(pd.to_datetime(side[column], utc=True, errors="coerce"))
            probe[column] = np.where(parsed.isna(), np.nan, parsed.as_unit("ns").asi8 / 1e9)
        keys = ["timestamp", *(["symbol"] if "symbol" in side.columns else [])]
        probes[table] = side[keys].assign(**{f"_{c}": v for c, v in probe.items()})
        names = {f"_{c}": f"{table}:{c}" for c in probe}
        update = {"columns": list(names), "feature_names": names}
        specs.append(AlternativeDataSpec(**{**spec.model_dump(), **update}))
    return specs, probes


def _timestamp_findings(
    panel: pd.DataFrame, connector: AlternativeDataConnector, frames: Mapping[str, pd.DataFrame]
) -> list[dict]:
    """Join each side table's own stamp (and known-at time) onto the bars, like its values."""
    specs, probes = _probe_frames(connector, frames)
    if not specs:
        return []
    bar_s = panel.index.get_level_values("timestamp").as_unit("ns").asi8 / 1e9
    joined = AlternativeDataConnector(specs).join_frames(panel[["close"]], probes)
    rows = []
    for name in joined.columns.drop("close"):
        table, column = name.split(":")
        late = joined[name].to_numpy() > bar_s + 1e-3  # a millisecond of float slack
        if not late.any():
            continue
        first = panel.index[np.flatnonzero(late)[0]]
        what = "stamped" if column == "timestamp" else f"known ({column})"
        rows.append(
            dict(
                check="timestamp" if column == "timestamp" else "known_at",
                table=table,
                column=column,
                n=int(late.sum()),
                statistic=float(late.sum()),
                evidence=f"{int(late.sum()):,} bars joined to a row {what} after the bar "
                f"(first {first[1]} at {first[0]})",
                fix=f"stamp `{table}` rows at the time they became known (timestamp = "
                "known-at), so the as-of join cannot read them early",
            )
        )
    return rows


def audit_stored(
    db: str | Path,
    panel: pd.DataFrame,
    alternative: tuple[AlternativeDataConnector, Mapping[str, pd.DataFrame]] | None = None,
    thresholds: StoredThresholds | None = None,
) -> StoredAudit:
    """Test every stored model input of ``db`` against the next return (module doc).

    ``panel``: (timestamp, symbol)-indexed OHLCV plus the wide ``indicators`` columns, as
    ``read_panel`` returns it; ``alternative``: a connector and its loaded side tables.
    ``alpha``: family-wise false-alarm rate (Bonferroni over the columns tested);
    ``ic_min``: the least |IC| taken as a leak rather than a signal; ``collapse``: the
    largest |IC_lagged| / |IC| of a leak; ``copy_min``: fewest copied rows reported.
    """
    r = _returns(panel)
    columns, notes = _stored_columns(Path(db), panel, alternative)
    records = []
    for (table, column), values in columns.items():
        numeric = pd.api.types.is_numeric_dtype(values)
        record = _numeric_stats(values, r) if numeric else _label_stats(values, r)
        records.append(dict(table=table, column=column, **record))
    table_stats = pd.DataFrame(records, columns=_STATS)  # label columns leave copies NaN
    limits = thresholds or StoredThresholds()
    found = _findings(table_stats, limits) if records else []
    if alternative is not None and alternative[1]:
        found += _timestamp_findings(panel, *alternative)
    checked: dict[str, list[str]] = {}
    for table, column in columns:
        group = "alternative" if table.startswith("alt_") else table
        checked.setdefault(group, []).append(column)
    return StoredAudit(
        findings=pd.DataFrame(found, columns=FINDING_COLUMNS),
        stats=table_stats,
        checked=checked,
        notes=notes,
    )
