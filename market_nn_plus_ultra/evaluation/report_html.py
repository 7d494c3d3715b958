"""The HTML report: one self-contained file (plotly.js inlined, no CDN, works offline)."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import pandas as pd

from .report_charts import CHARTS, LINE_CHARTS, chart_divs
from .report_notes import honest_notes, sample_caption
from .report_tables import (
    breach_tables,
    comparison_table,
    config_text,
    headline_table,
    interval_table,
    provenance_items,
    regime_metrics_table,
    regime_table,
    trade_table,
    walkforward_table,
)

if TYPE_CHECKING:
    from .report import ReportData

__all__ = ["SECTIONS", "render_html", "table_html"]

#: (section id, heading) of every section of the HTML report, in order.
SECTIONS = (
    ("headline", "Headline metrics"),
    ("equity", "Equity curves"),
    ("drawdown", "Drawdown"),
    ("rolling_sharpe", "Rolling Sharpe"),
    ("monthly", "Monthly returns"),
    ("distribution", "Return distribution"),
    ("regimes", "Regime attribution"),
    ("trades", "Trade analytics"),
    ("guardrails", "Guardrail breaches"),
    ("walkforward", "Walk-forward splits"),
    ("provenance", "Data quality and provenance"),
    ("config", "Run configuration"),
)

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 24px 32px; color: #1d2330; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; border-bottom: 2px solid #e3e7ef; padding-bottom: 4px; margin-top: 2rem; }
.sub { color: #5b6475; margin-top: 0; }
nav a { margin-right: 12px; font-size: 0.85rem; color: #1f4e9c; text-decoration: none; }
/* Wide tables scroll sideways inside their box instead of losing columns. */
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 8px 0; }
th, td { border-bottom: 1px solid #e3e7ef; padding: 4px 10px; text-align: right; }
td { white-space: nowrap; }
th { background: #f4f6fa; }
td:first-child, th:first-child { text-align: left; font-weight: 600; }
tr.model td { background: #eef3fc; }
.note { padding: 6px 12px; margin: 4px 0; border-radius: 4px; font-size: 0.9rem; }
.note.info { background: #f1f4f9; }
.note.warn { background: #fff3cd; border-left: 4px solid #e0a800; }
.muted { color: #6b7385; font-size: 0.85rem; }
pre { background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 0.8rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; font-size: 0.9rem; }
dt { font-weight: 600; }
dd { margin: 0; }
</style>
<script type="text/javascript">{{ plotly_js }}</script>
</head>
<body>
<h1>{{ title }}</h1>
<p class="sub">Generated {{ generated }} · {{ strategies|join(", ") }}</p>
<p class="sub" id="sample">{{ caption }}</p>
<nav>{% for id, heading in sections %}<a href="#{{ id }}">{{ heading }}</a>{% endfor %}</nav>

<section id="headline"><h2>Headline metrics</h2>
{% for level, text in notes %}<div class="note {{ level }}">{{ text }}</div>{% endfor %}
{{ headline }}
{% if comparison %}<h3>The model against each baseline (same bars)</h3>
{{ comparison }}{% endif %}
{% if intervals %}<p class="muted">Bootstrap intervals as computed (stationary bootstrap):</p>
{{ intervals }}{% endif %}
</section>

{% for id, heading in charts %}
<section id="{{ id }}"><h2>{{ heading }}</h2>
{% if id == "equity" %}<p class="muted">Use the Linear/Log buttons to switch the scale.</p>{% endif %}
{% if id == "rolling_sharpe" %}<p class="muted">Window: {{ window }} bars.</p>{% endif %}
<p class="muted">{{ caption }}{% if id in line_charts and missing %} Not drawn: {{ missing }}.{% endif %}</p>
{{ divs[id] }}
</section>
{% endfor %}

<section id="regimes"><h2>Regime attribution</h2>
{% if regime_metrics or regimes %}<p class="muted">{{ caption }}</p>{{ regime_metrics }}{{ regimes }}
{% else %}<p class="muted">{{ regime_note }}</p>{% endif %}
</section>

<section id="trades"><h2>Trade analytics</h2>
<p class="muted">Turnover is the mean |Δposition| per bar; cost paid is the sum of costs as a
fraction of capital at {{ cost_bps }} bps per unit traded; hit rate counts bars with a
non-zero net return. {{ caption }}</p>
{{ trades }}
</section>

<section id="guardrails"><h2>Guardrail breaches</h2>
{% if breach_rules %}{{ breach_rules }}{{ breach_rows }}
{% if breaches_left %}<p class="muted">… and {{ breaches_left }} more.</p>{% endif %}
{% else %}<p class="muted">{{ breach_note }}</p>{% endif %}
</section>

<section id="walkforward"><h2>Walk-forward splits</h2>
{% if walkforward %}{{ walkforward }}{% else %}<p class="muted">No walk-forward splits were supplied.</p>{% endif %}
{% if wf_summary %}<details><summary>Walk-forward summary ({{ wf_summary|length }} values)</summary>
<dl>{% for k, v in wf_summary %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl></details>{% endif %}
</section>

<section id="provenance"><h2>Data quality and provenance</h2>
<dl>{% for k, v in provenance %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
</section>

<section id="config"><h2>Run configuration</h2>
<details><summary>Resolved configuration (click to expand)</summary>
<pre>{{ config }}</pre></details>
</section>
</body>
</html>
"""


def table_html(frame: pd.DataFrame | None) -> str:
    """A string DataFrame as an HTML table (values escaped; the model row highlighted)."""
    if frame is None or frame.empty:
        return ""
    html = frame.to_html(index=False, escape=True, border=0, na_rep="—")
    html = html.replace("<tr>\n      <td>model</td>", '<tr class="model">\n      <td>model</td>')
    return f'<div class="scroll">{html}</div>'


def render_html(
    data: ReportData, *, rolling_window: int | None = None, log_scale: bool = False
) -> str:
    """The whole report as one HTML page with every section and one plotly div per chart."""
    from jinja2 import Environment
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from .report import flatten_summary
    from .report_charts import resolve_window
    from .report_tables import fmt_value

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    by_rule, rows, left = breach_tables(data)
    divs = chart_divs(data, rolling_window=rolling_window, log_scale=log_scale)
    guard_note = (
        "No guardrail breaches were supplied for this run."
        if data.breaches is None
        else "No guardrail fired: every position stayed within the configured limits."
    )
    summary = data.walkforward_summary or {}
    return env.from_string(_TEMPLATE).render(
        title=data.title,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        strategies=list(data.strategies()),
        sections=SECTIONS,
        charts=CHARTS,
        plotly_js=Markup(get_plotlyjs()),
        notes=honest_notes(data),
        headline=Markup(table_html(headline_table(data))),
        comparison=Markup(table_html(comparison_table(data))),
        caption=sample_caption(data),
        line_charts=LINE_CHARTS,
        missing=", ".join(f"{k} ({v})" for k, v in data.missing_series.items()),
        intervals=Markup(table_html(interval_table(data))),
        divs={k: Markup(v) for k, v in divs.items()},
        window=resolve_window(data, rolling_window),
        regimes=Markup(table_html(regime_table(data))),
        regime_metrics=Markup(table_html(regime_metrics_table(data))),
        regime_note=data.regime_note or "No regime labels were supplied.",
        trades=Markup(table_html(trade_table(data))),
        cost_bps=f"{data.cost_bps:g}",
        breach_rules=Markup(table_html(by_rule)),
        breach_rows=Markup(table_html(rows)),
        breaches_left=f"{left:,}" if left else "",
        breach_note=guard_note,
        walkforward=Markup(table_html(walkforward_table(data))),
        wf_summary=[(k, fmt_value(v)) for k, v in flatten_summary(summary).items()],
        provenance=provenance_items(data),
        config=config_text(data),
    )
