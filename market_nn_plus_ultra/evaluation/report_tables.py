"""The report's tables and wording, computed from :class:`ReportData` (no rendering).

Every function returns display-ready strings (a DataFrame of str, or a list of
sentences) so the HTML and Markdown renderers show the same numbers.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from .metrics import hit_rate, sharpe_ratio

if TYPE_CHECKING:
    from .report import ReportData
    from .summary import SharpeDifference

__all__ = [
    "HEADLINE_METRICS",
    "breach_tables",
    "comparison_table",
    "config_text",
    "fmt_value",
    "headline_table",
    "interval_mismatches",
    "interval_table",
    "n_bars",
    "provenance_items",
    "regime_metrics_table",
    "regime_table",
    "sample_years",
    "trade_table",
    "walkforward_table",
]

#: (metrics key, column label, format) of the headline table, in order.
HEADLINE_METRICS = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "Volatility (ann.)", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("calmar", "Calmar", "ratio"),
    ("hit_rate", "Hit rate", "pct"),
    ("turnover", "Turnover / bar", "pct"),
    ("cvar_95", "CVaR 95%", "pct"),
    ("n_periods", "Periods", "int"),
)
_FORMATS = {key: kind for key, _, kind in HEADLINE_METRICS}


def fmt_value(value: Any, kind: str = "auto") -> str:
    """One number as the report prints it: 12.34% / 1.23 / 1,234; NaN → '—'."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) and kind in ("auto", "int"):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating, int, np.integer)):
        number = float(value)
        if math.isnan(number):
            return "—"
        if math.isinf(number):
            return "∞" if number > 0 else "−∞"
        if kind == "pct":
            return f"{100 * number:.2f}%"
        if kind == "int":
            return f"{round(number):,}"
        if kind == "ratio":
            return f"{number:.2f}"
        return f"{number:.4g}"
    if isinstance(value, pd.Timestamp):
        return (
            value.strftime("%Y-%m-%d %H:%M") if value.hour or value.minute else f"{value:%Y-%m-%d}"
        )
    return str(value)


def n_bars(data: ReportData) -> int:
    """Bars behind the headline (the sample's, else the model backtest's)."""
    return int(data.sample.n_bars if data.sample else data.model.metrics["n_periods"])


def sample_years(data: ReportData) -> float:
    """Length of the headline's sample in years (bars / periods per year)."""
    return n_bars(data) / data.periods_per_year


def _same(point: Any, value: Any) -> bool:
    """True when an interval's point estimate is the headline's value (same bars)."""
    try:
        a, b = float(point), float(value)
    except (TypeError, ValueError):
        return False
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def interval_mismatches(data: ReportData) -> list[str]:
    """Intervals whose point estimate is not the headline's value: drawn on other bars."""
    if data.intervals is None or data.intervals.empty:
        return []
    metrics = data.metrics()
    out = []
    for row in data.intervals.to_dict("records"):
        name, metric = str(row["strategy"]).lower(), str(row["metric"])
        if name not in metrics or metric not in metrics[name]:
            continue
        value = metrics[name][metric]
        if not _same(row["point"], value):
            kind = _FORMATS.get(metric, "auto")
            out.append(
                f"The {metric} interval of {name} was drawn on other bars (its estimate "
                f"{fmt_value(row['point'], kind)}, {fmt_value(value, kind)} here): it is not "
                "attached to the headline — pass the walk-forward summary's strategies with "
                "its intervals."
            )
    return out


def _interval_cells(data: ReportData) -> dict[tuple[str, str], str]:
    """Interval text per (strategy, metric), only where its point is the headline's value."""
    if data.intervals is None or data.intervals.empty:
        return {}
    metrics = data.metrics()
    cells = {}
    for row in data.intervals.to_dict("records"):
        name, metric = str(row["strategy"]).lower(), str(row["metric"])
        if not _same(row["point"], metrics.get(name, {}).get(metric)):
            continue
        kind = _FORMATS.get(metric, "auto")
        cells[(name, metric)] = f" [{fmt_value(row['low'], kind)}, {fmt_value(row['high'], kind)}]"
    return cells


def headline_table(data: ReportData) -> pd.DataFrame:
    """Strategies × headline metrics, with bootstrap intervals appended when given."""
    cells = _interval_cells(data)
    rows = {}
    for name, metrics in data.metrics().items():
        rows[name] = [
            fmt_value(metrics.get(key, math.nan), kind) + cells.get((name.lower(), key), "")
            for key, _, kind in HEADLINE_METRICS
        ]
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=[c for _, c, _ in HEADLINE_METRICS]
    )
    table.index.name = "Strategy"
    return table.reset_index()


def _bracket(low: Any, high: Any) -> str:
    if low is None and high is None:
        return "—"
    return f"[{fmt_value(low, 'ratio')}, {fmt_value(high, 'ratio')}]"


def _difference_cells(diff: SharpeDifference | None) -> list[str]:
    if diff is None:
        return ["—"] * 5
    significant = diff.significant
    return [
        _bracket(diff.low, diff.high),
        _bracket(diff.low_adjusted, diff.high_adjusted),
        fmt_value(diff.p_value, "ratio"),
        fmt_value(diff.p_adjusted, "ratio"),
        "—" if significant is None else ("yes" if significant else "no"),
    ]


def comparison_table(data: ReportData) -> pd.DataFrame | None:
    """The model against each baseline on the same bars: Sharpe difference and P(beat).

    ``Sharpe − model``: the model's Sharpe minus the baseline's (the paired bootstrap's
    estimate when the summary has one, else the difference of the headline Sharpes);
    interval (and its Holm-adjusted widening when the summary has one), raw and
    Holm-adjusted p-values and significance from ``data.sharpe_difference`` when given,
    '—' otherwise.
    """
    metrics = data.metrics()
    # The benchmark is gross and was never part of the walk-forward's paired tests.
    names = [n for n in metrics if n not in ("model", "benchmark")]
    if not names:
        return None
    model_sharpe = float(metrics["model"].get("sharpe", math.nan))
    level = next((d.level for d in (data.sharpe_difference or {}).values()), None)
    if level is None and data.intervals is not None and not data.intervals.empty:
        level = float(data.intervals["level"].iloc[0])
    band = f"{100 * level:.0f}% interval" if level else "Interval"
    rows = []
    for name in names:
        diff = (data.sharpe_difference or {}).get(name)
        point = diff.estimate if diff is not None else None
        if point is None:
            point = model_sharpe - float(metrics[name].get("sharpe", math.nan))
        n = diff.n if diff is not None and diff.n is not None else metrics[name].get("n_periods")
        beat = (data.p_beat or {}).get(name)
        rows.append(
            [
                name,
                fmt_value(metrics[name].get("sharpe"), "ratio"),
                fmt_value(point, "ratio"),
                *_difference_cells(diff),
                "—" if beat is None else f"{beat:.2f}",
                fmt_value(n, "int"),
            ]
        )
    columns = [
        "Baseline",
        "Sharpe",
        "Model − baseline Sharpe",
        band,
        "Holm-adjusted interval",
        "p",
        "p (Holm)",
        "Significant",
        "P(model Sharpe > baseline)",
        "Bars",
    ]
    table = pd.DataFrame(rows, columns=columns)
    if (table["Holm-adjusted interval"] == "—").all():  # older summaries: no such interval
        table = table.drop(columns="Holm-adjusted interval")
    return table


def interval_table(data: ReportData) -> pd.DataFrame | None:
    """The bootstrap intervals as given (low ≤ point ≤ high at ``level``), formatted."""
    if data.intervals is None or data.intervals.empty:
        return None
    iv = data.intervals
    kinds = iv["metric"].map(_FORMATS).fillna("auto")
    out = pd.DataFrame(
        {
            "Metric": iv["metric"].astype(str),
            "Strategy": iv["strategy"].astype(str),
            "Low": [fmt_value(v, k) for v, k in zip(iv["low"], kinds, strict=True)],
            "Point": [fmt_value(v, k) for v, k in zip(iv["point"], kinds, strict=True)],
            "High": [fmt_value(v, k) for v, k in zip(iv["high"], kinds, strict=True)],
            "Level": [f"{100 * float(v):.0f}%" for v in iv["level"]],
        }
    )
    return out


def _holding_periods(positions: pd.DataFrame) -> np.ndarray:
    """Lengths (bars) of runs of an unchanged non-zero position, per symbol."""
    ordered = positions.sort_values(["symbol", "timestamp"], kind="stable")
    pos = ordered["position"].to_numpy(dtype=np.float64)
    sym = ordered["symbol"].to_numpy()
    new_run = np.ones(len(pos), dtype=bool)
    new_run[1:] = (sym[1:] != sym[:-1]) | ~np.isclose(pos[1:], pos[:-1], rtol=0.0, atol=1e-12)
    run_id = np.cumsum(new_run)
    lengths = np.bincount(run_id)[1:]
    held = np.abs(pos[new_run]) > 1e-12
    return lengths[held]


def _trades(positions: pd.DataFrame) -> int:
    ordered = positions.sort_values(["symbol", "timestamp"], kind="stable")
    pos = ordered["position"].to_numpy(dtype=np.float64)
    first = np.ones(len(pos), dtype=bool)
    first[1:] = ordered["symbol"].to_numpy()[1:] != ordered["symbol"].to_numpy()[:-1]
    prev = np.where(first, 0.0, np.concatenate([[0.0], pos[:-1]]))
    return int((np.abs(pos - prev) > 1e-12).sum())


def trade_table(data: ReportData) -> pd.DataFrame:
    """Turnover, trades, holding period, hit rate and cost paid for every strategy.

    Trades and holding periods need positions, which only the model carries; cost paid
    is the sum of per-bar costs as a fraction of capital (and its annual drag).
    """
    rows = {}
    results = {"model": data.model, **data.baselines}
    for name, result in results.items():
        valid = result.returns.notna()
        cost = result.costs[valid]
        rows[name] = {
            "Turnover / bar": fmt_value(float(result.turnover[valid].mean()), "pct"),
            "Trades": "—",
            "Avg holding (bars)": "—",
            "Hit rate": fmt_value(hit_rate(result.returns[valid].to_numpy()), "pct"),
            "Cost paid": fmt_value(float(cost.sum()), "pct"),
            "Cost drag / year": fmt_value(float(cost.mean()) * data.periods_per_year, "pct"),
        }
    if data.positions is not None:
        runs = _holding_periods(data.positions)
        rows["model"]["Trades"] = fmt_value(_trades(data.positions), "int")
        rows["model"]["Avg holding (bars)"] = f"{runs.mean():.1f}" if len(runs) else "—"
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Strategy"
    return table.reset_index()


def regime_table(data: ReportData) -> pd.DataFrame | None:
    """Per regime label: bars, share of time, model and benchmark return, Sharpe, hit rate."""
    if data.regimes is None:
        return None
    returns = data.model.returns.dropna()
    frame = pd.DataFrame({"r": returns, "regime": data.regimes.reindex(returns.index)})
    if data.benchmark is not None:
        frame["b"] = data.benchmark.reindex(returns.index)
    frame = frame.dropna(subset=["regime"])
    grouped = frame.groupby("regime", sort=True)
    ppy = data.periods_per_year
    out = pd.DataFrame(
        {
            "Bars": grouped.size(),
            "Share of time": grouped.size() / len(frame),
            "Model return": grouped["r"].apply(lambda r: float(np.prod(1 + r) - 1)),
            "Model mean / year": grouped["r"].mean() * ppy,
            "Model Sharpe": grouped["r"].apply(lambda r: sharpe_ratio(r.to_numpy(), ppy)),
            "Hit rate": grouped["r"].apply(lambda r: hit_rate(r.to_numpy())),
        }
    )
    if "b" in frame:
        out["Benchmark return"] = grouped["b"].apply(lambda b: float(np.prod(1 + b.dropna()) - 1))
    kinds = {"Bars": "int", "Model Sharpe": "ratio"}
    shown = out.apply(lambda col: col.map(lambda v, k=kinds.get(col.name, "pct"): fmt_value(v, k)))
    shown.index = shown.index.astype(str)
    shown.index.name = "Regime"
    return shown.reset_index()


def regime_metrics_table(data: ReportData) -> pd.DataFrame | None:
    """Per labeller, regime and strategy: bars, share of bars, return, Sharpe, drawdown."""
    frame = data.regime_metrics
    if frame is None or frame.empty:
        return None
    bars = frame["n_periods"].astype(float)
    totals = bars.groupby([frame["labeller"], frame["strategy"]]).transform("sum")
    return pd.DataFrame(
        {
            "Labeller": frame["labeller"].astype(str),
            "Regime": frame["regime"].astype(str),
            "Strategy": frame["strategy"].astype(str),
            "Bars": [fmt_value(v, "int") for v in bars],
            "Share of bars": [fmt_value(v, "pct") for v in bars / totals],
            "Total return": [fmt_value(v, "pct") for v in frame["total_return"]],
            "Sharpe": [fmt_value(v, "ratio") for v in frame["sharpe"]],
            "Max drawdown": [fmt_value(v, "pct") for v in frame["max_drawdown"]],
            "Hit rate": [fmt_value(v, "pct") for v in frame["hit_rate"]],
        }
    )


def breach_tables(data: ReportData, limit: int = 20) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(count per rule, the first ``limit`` breaches, how many were left out)."""
    breaches = data.breaches
    if breaches is None or breaches.empty:
        return pd.DataFrame(columns=["Rule", "Breaches"]), pd.DataFrame(), 0
    counts = breaches.groupby("rule").size().sort_values(ascending=False)
    by_rule = pd.DataFrame({"Rule": counts.index.astype(str), "Breaches": counts.to_numpy()})
    by_rule["Breaches"] = by_rule["Breaches"].map(lambda v: f"{v:,}")
    first = breaches.sort_values("timestamp", kind="stable").head(limit)
    shown = first.apply(lambda col: col.map(fmt_value))
    return by_rule, shown.reset_index(drop=True), max(0, len(breaches) - limit)


def walkforward_table(data: ReportData) -> pd.DataFrame | None:
    """The per-split walk-forward table, every value formatted (ratios and counts as is)."""
    if data.walkforward is None:
        return None
    frame = data.walkforward

    def _kind(column: str) -> str:
        return _FORMATS.get(column, "auto")

    return frame.apply(lambda col: col.map(lambda v, k=_kind(str(col.name)): fmt_value(v, k)))


def provenance_items(data: ReportData) -> list[tuple[str, str]]:
    """Provenance as (label, text) pairs; nested mappings are flattened with ' · '."""
    items: list[tuple[str, str]] = []
    for key, value in data.provenance.items():
        if isinstance(value, dict):
            text = " · ".join(f"{k}: {fmt_value(v)}" for k, v in value.items())
        else:
            text = fmt_value(value)
        items.append((str(key), text))
    return items


def config_text(data: ReportData) -> str:
    """The resolved config as YAML (JSON-safe values), or a note that none was given."""
    if not data.config:
        return "# no configuration was recorded with these predictions"
    plain = json.loads(json.dumps(data.config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).rstrip()
