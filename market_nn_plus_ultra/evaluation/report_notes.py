"""The sentences every report states: costs, the sample, what is estimated, warnings.

Shared by the HTML and Markdown renderers, so both say the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .report_tables import interval_mismatches, n_bars, sample_years

if TYPE_CHECKING:
    from .report import ReportData

__all__ = ["honest_notes", "sample_caption"]

_SMALL_PERIODS = 100


def sample_caption(data: ReportData) -> str:
    """The bars a section's numbers cover, as one line: 'Sample: walk-forward test bars …'."""
    if data.sample is None:
        return f"Sample: {n_bars(data):,} bars."
    caption = f"Sample: {data.sample.describe()}."
    if data.sample.includes_in_sample:
        caption += " Includes in-sample bars: the model trained or was tuned on some of them."
    return caption


def honest_notes(data: ReportData) -> list[tuple[str, str]]:
    """(level, sentence) notes every report states: costs, sample size, what is estimated."""
    n = n_bars(data)
    years = sample_years(data)
    sample = data.sample
    scored = sample.scored_text() if sample else None
    notes = [
        (
            "info",
            f"Model and baselines are net of {data.cost_bps:g} bps per unit of position "
            "traded (the benchmark is gross). Returns are equal-capital across symbols.",
        ),
        (
            "info",
            f"Every number, chart and table below covers the same bars (the walk-forward "
            f"table splits them by fold): "
            f"{sample.describe() if sample else f'{n:,} bars'} ≈ {years:.2f} years at "
            f"{data.periods_per_year:.4g} periods per year.",
        ),
    ]
    if scored:
        level = "warn" if sample.includes_in_sample else "info"
        notes.append((level, f"The model was scored on: {scored}."))
    elif sample is not None and sample.source == "walkforward" and sample.scored is None:
        notes.append(
            (
                "warn",
                "The walk-forward summary does not record which bars the model trained on: "
                "these test bars are out of sample only if the model never saw them.",
            )
        )
    if sample is not None and sample.notice:
        notes.append(("warn", sample.notice))
    if sample is not None and sample.source == "predictions" and sample.includes_in_sample:
        notes.append(
            (
                "warn",
                "The predictions include bars the model trained or was tuned on "
                "(sample = train / val): these numbers are not out of sample.",
            )
        )
    notes += [("warn", text) for text in data.warnings]
    notes += [("warn", text) for text in interval_mismatches(data)]
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
    if data.sharpe_difference:
        notes.append(
            (
                "info",
                "Model − baseline Sharpe: paired stationary bootstrap on the same resampled "
                "blocks; p (Holm) is adjusted for the number of baselines.",
            )
        )
    if data.p_beat:
        notes.append(
            (
                "info",
                "P(model Sharpe > baseline): the share of stationary-bootstrap resamples in "
                "which the model's Sharpe beats the baseline's (the table below the headline).",
            )
        )
    for name, why in data.missing_series.items():
        notes.append(("info", f"{name} is in the tables but not in the charts: {why}."))
    if data.benchmark is None:
        notes.append(("info", "No benchmark_return in the predictions: no benchmark shown."))
    return notes
