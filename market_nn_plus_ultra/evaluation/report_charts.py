"""The report's chart series (pandas) and their interactive plotly figures.

The series functions are shared with the Markdown renderer's static PNGs, so both
reports plot the same numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .report import ReportData

__all__ = [
    "CHARTS",
    "LINE_CHARTS",
    "MONTHS",
    "chart_divs",
    "colours",
    "drawdowns",
    "equity_curves",
    "monthly_returns",
    "plotly_figures",
    "resolve_window",
    "return_distribution",
    "rolling_sharpe",
]

#: (chart id, title) of every chart, in report order.
CHARTS = (
    ("equity", "Equity curves"),
    ("drawdown", "Drawdown"),
    ("rolling_sharpe", "Rolling Sharpe"),
    ("monthly", "Monthly returns (model)"),
    ("distribution", "Return distribution (model)"),
)
#: Charts with one line per strategy (the others show the model alone).
LINE_CHARTS = ("equity", "drawdown", "rolling_sharpe")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MODEL_COLOUR = "#1f4e9c"
_OTHER_COLOURS = ("#e07b39", "#3a9a5b", "#8e5ab5", "#c94f6d", "#7f7f7f", "#b8a22d")
_BENCH_COLOUR = "#555555"


def colours(names: list[str]) -> dict[str, str]:
    """A fixed colour per strategy: the model blue, the benchmark grey, baselines cycled."""
    out, others = {}, iter(_OTHER_COLOURS * 4)
    for name in names:
        out[name] = (
            _MODEL_COLOUR
            if name == "model"
            else _BENCH_COLOUR
            if name == "benchmark"
            else next(others)
        )
    return out


def _aligned_returns(data: ReportData) -> pd.DataFrame:
    """Net returns per strategy on the model's timestamps (a missing bar earns 0)."""
    index = data.model.returns.dropna().index
    return pd.DataFrame({k: v.reindex(index) for k, v in data.strategies().items()}).fillna(0.0)


def equity_curves(data: ReportData) -> pd.DataFrame:
    """Wealth of 1 invested at the start, per strategy: [T, strategies]."""
    return (1.0 + _aligned_returns(data)).cumprod()


def drawdowns(data: ReportData) -> pd.DataFrame:
    """Fraction below the running peak of wealth (≤ 0), per strategy: [T, strategies]."""
    wealth = equity_curves(data)
    peak = np.maximum(wealth.cummax(), 1.0)  # the peak includes the starting wealth of 1
    return wealth / peak - 1.0


def resolve_window(data: ReportData, window: int | None) -> int:
    """Rolling-Sharpe window in bars: ~3 months of bars by default, at most a third of
    the sample (so the chart has points), at least 5."""
    n = int(data.model.metrics["n_periods"])
    wanted = int(window) if window else max(5, round(data.periods_per_year / 4))
    if wanted < 2:
        raise ValueError(f"rolling Sharpe window must be >= 2 bars, got {wanted}")
    return int(max(2, min(wanted, max(5, n // 3))))


def rolling_sharpe(data: ReportData, window: int) -> pd.DataFrame:
    """Annualised Sharpe over the trailing ``window`` bars, per strategy: [T, strategies]."""
    returns = _aligned_returns(data)
    roll = returns.rolling(window, min_periods=window)
    std = roll.std(ddof=1)
    return (roll.mean() / std.where(std > 0)) * math.sqrt(data.periods_per_year)


def monthly_returns(data: ReportData) -> pd.DataFrame:
    """Compounded model return per calendar month: years × 12 months (NaN where absent)."""
    r = data.model.returns.dropna()
    index = pd.DatetimeIndex(r.index)
    growth = (1.0 + r).groupby([index.year, index.month]).prod() - 1.0
    table = growth.unstack(level=1).reindex(columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table


def return_distribution(data: ReportData) -> tuple[np.ndarray, float, float]:
    """(model net returns per bar, their mean, their standard deviation ddof=1)."""
    r = data.model.returns.dropna().to_numpy()
    sd = float(np.std(r, ddof=1)) if len(r) > 1 else 0.0
    return r, float(np.mean(r)) if len(r) else 0.0, sd


def _layout(fig: go.Figure, title: str, yformat: str | None = None) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        hovermode="x unified",
    )
    if yformat:
        fig.update_yaxes(tickformat=yformat)
    return fig


def _lines(frame: pd.DataFrame, title: str, yformat: str | None = None) -> go.Figure:
    import plotly.graph_objects as go

    palette = colours(list(frame.columns))
    fig = go.Figure()
    for name in frame.columns:
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=frame[name].to_numpy(),
                name=name,
                mode="lines",
                line={
                    "color": palette[name],
                    "width": 2.4 if name == "model" else 1.4,
                    "dash": "dot" if name == "benchmark" else "solid",
                },
            )
        )
    return _layout(fig, title, yformat)


def _equity_figure(data: ReportData, log_scale: bool) -> go.Figure:
    fig = _lines(equity_curves(data), "Equity curves (wealth of 1, net of costs)")
    scale = {"type": "log" if log_scale else "linear"}
    fig.update_yaxes(**scale)
    buttons = [
        {"label": "Linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
        {"label": "Log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "active": 1 if log_scale else 0,
                # Inside the plot's top-left corner: clear of the title and the modebar.
                "x": 0.01,
                "xanchor": "left",
                "y": 0.99,
                "yanchor": "top",
                "showactive": True,
                "bgcolor": "#ffffff",
            }
        ]
    )
    return fig


def _monthly_figure(data: ReportData) -> go.Figure:
    import plotly.graph_objects as go

    table = monthly_returns(data)
    z = table.to_numpy() * 100.0
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(MONTHS),
            y=[str(y) for y in table.index],
            colorscale="RdYlGn",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            # Pre-formatted labels: a month without data stays blank instead of "%".
            text=np.where(np.isfinite(z), np.char.mod("%.1f%%", np.nan_to_num(z)), ""),
            texttemplate="%{text}",
            hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
            colorbar={"title": "%"},
        )
    )
    fig = _layout(fig, "Monthly returns of the model (net, %)")
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def _distribution_figure(data: ReportData) -> go.Figure:
    import plotly.graph_objects as go

    r, mean, sd = return_distribution(data)
    fig = go.Figure(
        go.Histogram(
            x=r * 100.0,
            histnorm="probability density",
            name="model",
            marker={"color": _MODEL_COLOUR},
            opacity=0.75,
        )
    )
    if sd > 0:
        x = np.linspace(r.min(), r.max(), 200)
        pdf = np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        # The histogram is in % units, so the density is per percentage point.
        fig.add_trace(
            go.Scatter(
                x=x * 100.0,
                y=pdf / 100.0,
                name=f"normal (μ={mean * 100:.3f}%, σ={sd * 100:.3f}%)",
                mode="lines",
                line={"color": "#c94f6d", "width": 2},
            )
        )
    fig = _layout(fig, "Distribution of net returns per bar (%) with a normal overlay")
    fig.update_layout(hovermode="closest", bargap=0.02)
    return fig


def plotly_figures(
    data: ReportData, *, rolling_window: int | None = None, log_scale: bool = False
) -> dict[str, go.Figure]:
    """Every chart of the report as a plotly figure, keyed by the ids in :data:`CHARTS`."""
    window = resolve_window(data, rolling_window)
    return {
        "equity": _equity_figure(data, log_scale),
        "drawdown": _lines(drawdowns(data), "Drawdown from the running peak", ".0%"),
        "rolling_sharpe": _lines(
            rolling_sharpe(data, window),
            f"Rolling Sharpe ({window} bars, annualised × √{data.periods_per_year:.4g})",
        ),
        "monthly": _monthly_figure(data),
        "distribution": _distribution_figure(data),
    }


def chart_divs(
    data: ReportData, *, rolling_window: int | None = None, log_scale: bool = False
) -> dict[str, str]:
    """Each figure as an HTML ``<div>`` (plotly.js not included; the page inlines it once)."""
    figures = plotly_figures(data, rolling_window=rolling_window, log_scale=log_scale)
    return {
        key: fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{key}",
            config={"displaylogo": False, "responsive": True},
        )
        for key, fig in figures.items()
    }
