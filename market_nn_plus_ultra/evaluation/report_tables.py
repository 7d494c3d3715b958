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

__all__ = [
    "HEADLINE_METRICS",
    "breach_tables",
    "config_text",
    "fmt_value",
    "headline_table",
    "honest_notes",
    "interval_table",
    "provenance_items",
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
_SMALL_PERIODS = 100


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


def sample_years(data: ReportData) -> float:
    """Length of the model's sample in years (periods / periods per year)."""
    return float(data.model.metrics["n_periods"]) / data.periods_per_year


def _interval_cells(data: ReportData) -> dict[tuple[str, str], str]:
    if data.intervals is None or data.intervals.empty:
        return {}
    iv = data.intervals
    kinds = iv["metric"].map(_FORMATS).fillna("auto")
    text = [
        f" [{fmt_value(lo, k)}, {fmt_value(hi, k)}]"
        for lo, hi, k in zip(iv["low"], iv["high"], kinds, strict=True)
    ]
    keys = zip(iv["strategy"].astype(str).str.lower(), iv["metric"].astype(str), strict=True)
    return dict(zip(keys, text, strict=True))


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


def honest_notes(data: ReportData) -> list[tuple[str, str]]:
    """(level, sentence) notes every report states: costs, sample size, what is estimated."""
    n = int(data.model.metrics["n_periods"])
    years = sample_years(data)
    notes = [
        (
            "info",
            f"Model and baselines are net of {data.cost_bps:g} bps per unit of position "
            "traded (the benchmark is gross). Returns are equal-capital across symbols.",
        ),
        (
            "info",
            f"Sample: {n:,} periods ≈ {years:.2f} years at {data.periods_per_year:.4g} "
            "periods per year.",
        ),
    ]
    if data.cost_bps == 0:
        notes.append(("warn", "Costs are zero: these results are before any trading cost."))
    if n < _SMALL_PERIODS or years < 1.0:
        notes.append(
            (
                "warn",
                f"Small sample ({n:,} periods, {years:.2f} years): Sharpe and CAGR estimates "
                "are very noisy — treat them as indicative only.",
            )
        )
    if data.intervals is not None and not data.intervals.empty:
        level = float(data.intervals["level"].iloc[0])
        notes.append(
            (
                "info",
                f"Intervals are {100 * level:.0f}% stationary-bootstrap intervals "
                "(resampled blocks of returns), not guarantees.",
            )
        )
    else:
        notes.append(("info", "No bootstrap intervals were supplied: point estimates only."))
    for name, prob in (data.p_beat or {}).items():
        notes.append(
            (
                "info",
                f"P(model Sharpe > {name} Sharpe) = {prob:.2f} under the stationary bootstrap.",
            )
        )
    if data.benchmark is None:
        notes.append(("info", "No benchmark_return in the predictions: no benchmark shown."))
    return notes
