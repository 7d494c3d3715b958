"""Which bars a report's numbers cover, and the walk-forward's strategies rebuilt on them.

A walk-forward summary scores the model and every baseline on the stitched test bars of
its folds, and its bootstrap intervals come from those bars. A report that puts its own
point estimate on the whole predictions file beside that interval mixes two samples, so
with a summary the report restricts the predictions to the folds' test bars
(:func:`test_rows`), rebuilds every baseline's per-bar returns on them the way the
walk-forward does (:func:`walkforward_backtests`) and states the sample
(:class:`ReportSample`) in its title and above every table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import EvaluationConfig
from .backtest import BacktestResult
from .baselines import TimeSplit
from .metrics import METRIC_KEYS, compute_metrics
from .summary import WalkForwardSummary

__all__ = [
    "ReportSample",
    "check_summary_cost",
    "regime_attribution",
    "sample_from_predictions",
    "sample_from_summary",
    "splits_from_per_split",
    "summary_headline",
    "summary_regimes",
    "test_rows",
    "walkforward_backtests",
]

_SPLIT_COLUMNS = ["split", "train_start", "train_end", "test_start", "test_end"]


def _day(value: pd.Timestamp | None) -> str:
    if value is None:
        return "?"
    return f"{value:%Y-%m-%d %H:%M}" if value.hour or value.minute else f"{value:%Y-%m-%d}"


def _iso(value: pd.Timestamp | None) -> str | None:
    return None if value is None else value.isoformat()


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class ReportSample:
    """The bars behind a report's headline, and which bars the model was scored on.

    ``source``: ``walkforward`` (the stitched test bars of the summary's folds) or
    ``predictions`` (every bar of the predictions frame). ``start`` / ``end``: first
    and last bar (UTC); ``n_bars``: bars with a realised return. ``scored`` and the
    ``scored_*`` fields come from the summary's ``sample`` block when the walk-forward
    wrote one: ``out_of_sample`` (only bars the model never trained or validated on),
    ``all`` (in-sample bars included) or None (not recorded).
    """

    source: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    n_bars: int
    n_splits: int | None = None
    scored: str | None = None
    scored_start: pd.Timestamp | None = None
    scored_end: pd.Timestamp | None = None
    scored_bars: int | None = None
    n_left_out: int | None = None
    notice: str | None = None

    @property
    def includes_in_sample(self) -> bool:
        """True when the model was scored on bars it trained or validated on."""
        return self.scored == "all"

    def describe(self) -> str:
        """The headline's bars: 'walk-forward test bars 2019-08-09 .. 2020-10-15, 300 bars'."""
        span = f"{_day(self.start)} .. {_day(self.end)}, {self.n_bars:,} bars"
        if self.source == "walkforward":
            folds = f" ({self.n_splits} folds)" if self.n_splits else ""
            return f"walk-forward test bars {span}{folds}"
        return f"every bar of the predictions {span}"

    def scored_text(self) -> str | None:
        """Which bars the model was scored on, as the walk-forward recorded it (or None)."""
        span = f"{_day(self.scored_start)} .. {_day(self.scored_end)}"
        bars = f"{self.scored_bars:,} bars" if self.scored_bars is not None else "? bars"
        if self.scored == "out_of_sample":
            left = f"; {self.n_left_out:,} in-sample bars left out" if self.n_left_out else ""
            return f"out of sample {span}, {bars}{left}"
        if self.scored == "all":
            return f"all bars {span}, {bars} — includes in-sample bars"
        return None

    def title_suffix(self) -> str:
        """What the report's title adds: the sample, and a warning when it is in-sample."""
        if self.includes_in_sample:
            return f" · {self.describe()} — includes in-sample bars"
        if self.scored == "out_of_sample" and self.source == "walkforward":
            return f" · out of sample: {self.describe()}"
        return f" · {self.describe()}"


def sample_from_summary(
    summary: WalkForwardSummary | None, index: pd.Index | None = None
) -> ReportSample | None:
    """The walk-forward sample of ``summary`` (None without stitched model metrics).

    ``index``: the model's bars with a return in the report, used when the summary lacks
    ``oos_start`` / ``oos_end``.
    """
    if summary is None or summary.n_bars is None:
        return None
    start, end = _utc(summary.oos_start), _utc(summary.oos_end)
    if index is not None and len(index):
        start = start or pd.Timestamp(index.min())
        end = end or pd.Timestamp(index.max())
    block = summary.sample
    return ReportSample(
        source="walkforward",
        start=start,
        end=end,
        n_bars=summary.n_bars,
        n_splits=summary.n_splits,
        scored=None if block is None else block.scored,
        scored_start=None if block is None else _utc(block.start),
        scored_end=None if block is None else _utc(block.end),
        scored_bars=None if block is None else block.n_bars,
        n_left_out=None if block is None else block.n_left_out,
        notice=None if block is None else block.notice,
    )


def splits_from_per_split(per_split: pd.DataFrame | None) -> list[TimeSplit] | None:
    """The folds of a walk-forward per-split table (None when it has no fold bounds)."""
    if per_split is None or not set(_SPLIT_COLUMNS) <= set(per_split.columns):
        return None
    folds = per_split.drop_duplicates("split")[_SPLIT_COLUMNS]
    return [
        TimeSplit(str(row["split"]), *(_utc(row[c]) for c in _SPLIT_COLUMNS[1:]))
        for row in folds.to_dict("records")
    ]


def test_rows(
    frame: pd.DataFrame, splits: Sequence[TimeSplit] | None, summary: WalkForwardSummary
) -> pd.DataFrame:
    """The rows of ``frame`` on the folds' test bars (or ``oos_start .. oos_end``)."""
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    if splits:
        keep = np.zeros(len(frame), dtype=bool)
        for split in splits:
            keep |= ((stamps >= split.test_start) & (stamps <= split.test_end)).to_numpy()
    else:
        start, end = _utc(summary.oos_start), _utc(summary.oos_end)
        keep = np.ones(len(frame), dtype=bool)
        if start is not None:
            keep &= (stamps >= start).to_numpy()
        if end is not None:
            keep &= (stamps <= end).to_numpy()
    if not keep.any():
        raise ValueError(
            "predictions: no row falls on the walk-forward's test bars "
            f"({_iso(summary.oos_start)} .. {_iso(summary.oos_end)}) — pass the predictions "
            "file the walk-forward scored (its --predictions) with its --summary."
        )
    return frame[keep].reset_index(drop=True)


def walkforward_backtests(
    frame: pd.DataFrame,
    summary: WalkForwardSummary,
    splits: Sequence[TimeSplit],
    *,
    evaluation: EvaluationConfig,
    panel: pd.DataFrame | None = None,
    seed: int = 0,
) -> tuple[dict[str, BacktestResult], dict[str, str]]:
    """Per-bar backtests of every strategy of ``summary`` on the folds' test bars.

    Runs :class:`~.walkforward.WalkForwardBacktester` on exactly ``splits`` at the
    summary's cost, with the summary's baselines (ML baselines refitted per fold, seeded
    by ``seed``). ``panel``: the OHLCV bars the ML baselines need; without it they are
    left out. Returns ``(backtests by name, {name: why it has no per-bar series})``.
    """
    from .walkforward import MODEL, WalkForwardBacktester

    names = [n for n in summary.strategies if n != MODEL]
    cost = summary.settings.cost_bps
    tester = WalkForwardBacktester(
        1, 1, cost_bps=float(evaluation.cost_bps if cost is None else cost)
    )
    wanted = evaluation.model_copy(update={"baselines": names})
    result = tester.run(
        frame,
        panel=panel,
        config=wanted,
        baselines=names,
        regime_column=None,
        bootstrap=False,
        seed=seed,
        splits=splits,
    )
    # The walk-forward's reason names its own --db option; the report reads the database
    # of its config instead.
    missing = {
        name: "its per-bar returns need the database's OHLCV bars — pass the database "
        "walkforward read with --set data.sqlite_path=DB"
        for name in result.summary.skipped_baselines
    }
    for name in names:
        if name not in result.backtests and name not in missing:
            missing[name] = "no per-bar returns could be rebuilt from the predictions"
    return dict(result.backtests), missing


def regime_attribution(
    rows: pd.DataFrame, net_by_row: np.ndarray, labels: pd.DataFrame, ppy: float, strategy: str
) -> pd.DataFrame:
    """Metrics of one strategy over the bars of each label, for every label column.

    ``rows``: the (timestamp, symbol) rows the strategy traded, aligned with
    ``net_by_row`` (its net return per row). ``labels``: (timestamp, symbol)-indexed, one
    column per labeller (e.g. the database's ``regimes`` table, wide). Within a label,
    symbols get equal capital: the return of a bar is the mean net return of the symbols
    in that label at that bar — as the walk-forward's per-regime metrics. Returns
    columns ``labeller, regime, strategy`` and every metric key.
    """
    keys = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(rows["timestamp"], utc=True).dt.as_unit("ns").to_numpy(),
            "symbol": rows["symbol"].astype(str).to_numpy(),
            "net": net_by_row,
        }
    )
    wide = labels.reset_index()
    wide["timestamp"] = pd.to_datetime(wide["timestamp"], utc=True).dt.as_unit("ns")
    wide["symbol"] = wide["symbol"].astype(str)
    joined = keys.merge(wide, on=["timestamp", "symbol"], how="left")
    out = []
    for column in labels.columns:
        net = joined.dropna(subset=["net", column])
        by_bar = net.groupby([column, "timestamp"], sort=True)["net"].mean()
        for regime, series in by_bar.groupby(level=0, sort=True):
            metrics = compute_metrics(series.to_numpy(), periods_per_year=ppy)
            out.append(
                {
                    "labeller": str(column),
                    "regime": str(regime),
                    "strategy": strategy,
                    **{k: metrics[k] for k in METRIC_KEYS if k != "turnover"},
                }
            )
    return pd.DataFrame(out)


def sample_from_predictions(
    frame: pd.DataFrame, index: pd.Index, scored: Mapping[str, Any] | None = None
) -> ReportSample:
    """Every bar of the predictions frame, and which of the file's rows it holds.

    ``index``: the model's bars with a realised return. ``scored``: how the rows were
    picked (the ``sample`` block's keys: ``scored``, ``n_left_out``, ``notice``); without
    it a ``sample`` column says whether any bar is in-sample (``train`` / ``val``).
    """
    start = pd.Timestamp(index.min()) if len(index) else None
    end = pd.Timestamp(index.max()) if len(index) else None
    info = dict(scored or {})
    rule = info.get("scored")
    if rule is None and "sample" in frame.columns:
        in_sample = frame["sample"].astype(str).isin(["train", "val"])
        rule = "all" if in_sample.any() else "out_of_sample"
    return ReportSample(
        source="predictions",
        start=start,
        end=end,
        n_bars=len(index),
        scored=rule,
        scored_start=start,
        scored_end=end,
        scored_bars=len(index),
        n_left_out=info.get("n_left_out", 0 if rule else None),
        notice=info.get("notice"),
    )


def check_summary_cost(summary: WalkForwardSummary, cost_bps: float) -> None:
    """Refuse a report cost that differs from the one the walk-forward scored at."""
    scored = summary.settings.cost_bps
    if scored is not None and abs(float(scored) - float(cost_bps)) > 1e-12:
        raise ValueError(
            f"cost_bps={cost_bps:g} but the walk-forward summary scored every strategy at "
            f"{float(scored):g} bps: report at the summary's cost (drop --cost-bps) or rerun "
            f"`plus-ultra walkforward --cost-bps {cost_bps:g}`."
        )


def summary_headline(
    summary: WalkForwardSummary,
    model: BacktestResult,
    baselines: Mapping[str, BacktestResult],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The summary's stitched metrics per strategy, and where the rebuilt series disagree."""
    headline: dict[str, dict[str, float]] = {}
    warnings = []
    mine = {"model": model, **baselines}
    for name, stats in summary.strategies.items():
        stitched = {k: (math.nan if v is None else v) for k, v in stats.stitched.items()}
        headline[name] = stitched
        if name not in mine:
            continue
        ours = mine[name].metrics
        same_n = int(ours["n_periods"]) == int(stitched.get("n_periods", -1))
        same_sharpe = math.isclose(
            float(ours["sharpe"]), float(stitched.get("sharpe", math.nan)), abs_tol=1e-9
        ) or (math.isnan(ours["sharpe"]) and math.isnan(stitched.get("sharpe", math.nan)))
        if not (same_n and same_sharpe):
            warnings.append(
                f"{name}: rescored here on {int(ours['n_periods']):,} bars with Sharpe "
                f"{ours['sharpe']:.2f}, the walk-forward summary says "
                f"{stitched.get('sharpe', math.nan):.2f} on {stitched.get('n_periods')} bars — "
                "the table shows the summary, the charts the rescored series. Pass the "
                "predictions, config, database and guardrails the walk-forward used."
            )
    return headline, warnings


def summary_regimes(summary: WalkForwardSummary) -> pd.DataFrame | None:
    """The walk-forward's per-regime metrics (``strategies.<name>.regimes``) as rows."""
    rows = [
        {"labeller": "regime column", "regime": regime, "strategy": name, **metrics}
        for name, stats in summary.strategies.items()
        for regime, metrics in (stats.regimes or {}).items()
    ]
    return pd.DataFrame(rows).fillna(math.nan) if rows else None
