"""The Markdown report, with static PNG charts (matplotlib, Agg) written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .report import flatten_summary
from .report_charts import (
    CHARTS,
    LINE_CHARTS,
    MONTHS,
    colours,
    drawdowns,
    equity_curves,
    monthly_returns,
    resolve_window,
    return_distribution,
    rolling_sharpe,
)
from .report_notes import honest_notes, sample_caption
from .report_tables import (
    breach_tables,
    comparison_table,
    config_text,
    fmt_value,
    headline_table,
    interval_table,
    provenance_items,
    regime_metrics_table,
    regime_table,
    trade_table,
    walkforward_table,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .report import ReportData

__all__ = ["markdown_table", "render_markdown", "write_pngs"]


def markdown_table(frame: pd.DataFrame | None) -> str:
    """A string DataFrame as a GitHub-flavoured Markdown table ('|' escaped)."""
    if frame is None or frame.empty:
        return ""
    cells = frame.astype(str).apply(lambda col: col.str.replace("|", r"\|", regex=False))
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * (len(frame.columns) - 1)) + "|"
    body = ("| " + cells.agg(" | ".join, axis=1) + " |").tolist()
    return "\n".join([header, rule, *body])


def _figure(height: float = 3.6) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    # Fixed margins: constrained layout costs more than drawing the chart itself.
    fig = Figure(figsize=(10, height), dpi=100)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.88, bottom=0.14)
    return fig, fig.add_subplot()


def _line_png(
    frame: pd.DataFrame, title: str, path: Path, *, log: bool = False, pct: bool = False
) -> None:
    from matplotlib.ticker import PercentFormatter

    fig, ax = _figure()
    palette = colours(list(frame.columns))
    for name in frame.columns:
        ax.plot(
            frame.index,
            frame[name].to_numpy(),
            label=name,
            color=palette[name],
            linewidth=2.0 if name == "model" else 1.1,
            linestyle=":" if name == "benchmark" else "-",
        )
    if log:
        ax.set_yscale("log")
    if pct:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, ncols=min(4, len(frame.columns)))
    fig.savefig(path)


def _monthly_png(data: ReportData, path: Path) -> None:
    table = monthly_returns(data)
    z = table.to_numpy() * 100.0
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig, ax = _figure(max(2.0, 0.45 * len(table) + 1.2))
    image = ax.imshow(z, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(12), MONTHS)
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    rows, cols = np.nonzero(np.isfinite(z))
    for r, c in zip(rows, cols, strict=True):  # one label per month cell, at most 12 a year
        ax.text(c, r, f"{z[r, c]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="%")
    ax.set_title("Monthly returns of the model (net, %)", loc="left")
    fig.savefig(path)


def _distribution_png(data: ReportData, path: Path) -> None:
    r, mean, sd = return_distribution(data)
    fig, ax = _figure()
    ax.hist(
        r * 100.0, bins=min(60, max(10, len(r) // 10)), density=True, color="#1f4e9c", alpha=0.75
    )
    if sd > 0:
        x = np.linspace(r.min(), r.max(), 200)
        pdf = np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        ax.plot(x * 100.0, pdf / 100.0, color="#c94f6d", label="normal with the same μ, σ")
        ax.legend(fontsize=8)
    ax.set_xlabel("net return per bar (%)")
    ax.set_title("Distribution of net returns per bar with a normal overlay", loc="left")
    ax.grid(alpha=0.3)
    fig.savefig(path)


def write_pngs(
    data: ReportData, folder: Path, *, rolling_window: int | None = None, log_scale: bool = False
) -> dict[str, Path]:
    """Write one PNG per chart id of :data:`CHARTS` into ``folder``; returns their paths."""
    window = resolve_window(data, rolling_window)
    paths = {key: folder / f"{key}.png" for key, _ in CHARTS}
    _line_png(
        equity_curves(data),
        "Equity curves (wealth of 1, net of costs)" + (" — log scale" if log_scale else ""),
        paths["equity"],
        log=log_scale,
    )
    _line_png(drawdowns(data), "Drawdown from the running peak", paths["drawdown"], pct=True)
    _line_png(
        rolling_sharpe(data, window),
        f"Rolling Sharpe ({window} bars, annualised)",
        paths["rolling_sharpe"],
    )
    _monthly_png(data, paths["monthly"])
    _distribution_png(data, paths["distribution"])
    return paths


def render_markdown(
    data: ReportData, images: Path, *, rolling_window: int | None = None, log_scale: bool = False
) -> str:
    """The report as Markdown; the PNGs go to ``images`` and are linked relatively."""
    paths = write_pngs(data, images, rolling_window=rolling_window, log_scale=log_scale)
    window = resolve_window(data, rolling_window)
    caption = sample_caption(data)
    lines = [f"# {data.title}", "", f"Strategies: {', '.join(data.strategies())}", ""]
    lines += [caption, ""]
    lines += ["## Headline metrics", ""]
    lines += [
        f"> {'**Warning:** ' if level == 'warn' else ''}{text}\n"
        for level, text in honest_notes(data)
    ]
    lines += [markdown_table(headline_table(data)), ""]
    comparison = comparison_table(data)
    if comparison is not None:
        lines += ["### The model against each baseline (same bars)", ""]
        lines += [markdown_table(comparison), ""]
    intervals = interval_table(data)
    if intervals is not None:
        lines += ["Bootstrap intervals (stationary bootstrap):", "", markdown_table(intervals), ""]
    notes = {"rolling_sharpe": f"Window: {window} bars. "}
    missing = ", ".join(f"{k} ({v})" for k, v in data.missing_series.items())
    for key, heading in CHARTS:
        link = f"{images.name}/{paths[key].name}"
        note = notes.get(key, "") + caption
        if key in LINE_CHARTS and missing:
            note += f" Not drawn: {missing}."
        lines += [f"## {heading}", "", note, "", f"![{heading}]({link})", ""]
    tables = [t for t in (regime_metrics_table(data), regime_table(data)) if t is not None]
    lines += ["## Regime attribution", ""]
    if tables:
        lines += [caption, ""]
        for table in tables:
            lines += [markdown_table(table), ""]
    else:
        lines += [f"_{data.regime_note or 'No regime labels were supplied.'}_", ""]
    lines += [
        "## Trade analytics",
        "",
        f"Turnover is the mean |Δposition| per bar; cost paid is the sum of costs as a fraction "
        f"of capital at {data.cost_bps:g} bps per unit traded. {caption}",
        "",
        markdown_table(trade_table(data)),
        "",
        "## Guardrail breaches",
        "",
    ]
    by_rule, rows, left = breach_tables(data)
    if by_rule.empty:
        lines.append(
            "_No guardrail breaches were supplied for this run._"
            if data.breaches is None
            else "_No guardrail fired._"
        )
    else:
        lines += [markdown_table(by_rule), "", markdown_table(rows)]
        lines += [f"\n… and {left:,} more." if left else ""]
    lines += ["", "## Walk-forward splits", ""]
    walkforward = walkforward_table(data)
    lines.append(
        markdown_table(walkforward)
        if walkforward is not None
        else "_No walk-forward splits were supplied._"
    )
    flat = flatten_summary(data.walkforward_summary or {})
    if flat:
        lines += ["", f"<details><summary>Walk-forward summary ({len(flat)} values)</summary>", ""]
        lines += [f"- **{k}**: {fmt_value(v)}" for k, v in flat.items()]
        lines += ["", "</details>"]
    lines += ["", "## Data quality and provenance", ""]
    lines += [f"- **{k}**: {v}" for k, v in provenance_items(data)]
    lines += [
        "",
        "## Run configuration",
        "",
        "<details><summary>Resolved configuration</summary>",
        "",
        "```yaml",
        config_text(data),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)
