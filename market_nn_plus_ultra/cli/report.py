"""``plus-ultra report``: predictions (+ walk-forward results) → HTML and Markdown reports."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import ConfigOption, SetOption, console, load, user_errors, wrote

if TYPE_CHECKING:
    import pandas as pd

# Library modules are imported inside the command so `plus-ultra --help` stays fast.


def _read_frame(path: Path, what: str) -> pd.DataFrame:
    from ..evaluation.walkforward_io import read_frame

    return read_frame(path, what)


def _summary(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.exists():
        raise FileNotFoundError(f"summary file {path} does not exist.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"summary file {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"summary file {path}: expected a JSON object (the walk-forward summary).")
    return raw


def _column(frame: pd.DataFrame, name: str, option: str) -> None:
    if name not in frame.columns:
        guess = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(
            f"predictions: no column {name!r} for {option}.{hint} "
            f"Columns present: {list(frame.columns)}."
        )


def report(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions", "-p", help="Predictions file (.parquet or .csv), one row per bar."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="HTML report path; the .md and <stem>_files/ go beside it."
        ),
    ] = Path("reports/latest.html"),
    walkforward: Annotated[
        Path | None,
        typer.Option("--walkforward", help="Walk-forward per-split table (.parquet or .csv)."),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            help="Walk-forward summary JSON (its bootstrap block gives the intervals).",
        ),
    ] = None,
    benchmark_column: Annotated[
        str,
        typer.Option("--benchmark-column", help="Predictions column with the benchmark return."),
    ] = "benchmark_return",
    regime_column: Annotated[
        str | None,
        typer.Option("--regime-column", help="Predictions column with a regime label per bar."),
    ] = None,
    cost_bps: Annotated[
        float | None,
        typer.Option(
            "--cost-bps", min=0, help="Cost per unit traded, bps (default: evaluation.cost_bps)."
        ),
    ] = None,
    rolling_window: Annotated[
        int | None,
        typer.Option("--rolling-window", min=2, help="Rolling Sharpe window in bars."),
    ] = None,
    log_scale: Annotated[
        bool, typer.Option("--log-scale", help="Start the equity chart on a log axis.")
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Write a report a portfolio manager can read: headline metrics against baselines and
    the benchmark (costs stated), equity, drawdown, rolling Sharpe, monthly returns,
    return distribution, regimes, trades, guardrails, walk-forward splits, provenance and
    the run config. Writes OUTPUT (.html, self-contained) and the .md beside it.

    Example: plus-ultra report -p outputs/predictions.parquet -o reports/latest.html"""
    import pandas as pd

    from ..config import config_to_dict
    from ..evaluation.report import build_report_data, split_summary, write_report

    with user_errors():
        cfg = load(config, overrides)
        frame = _read_frame(predictions, "predictions")
        if benchmark_column != "benchmark_return":
            _column(frame, benchmark_column, "--benchmark-column")
        regimes = None
        if regime_column is not None:
            _column(frame, regime_column, "--regime-column")
            stamps = pd.to_datetime(frame["timestamp"], utc=True)
            regimes = frame[regime_column].groupby(stamps).first()
        per_split = _read_frame(walkforward, "walk-forward") if walkforward else None
        wf_summary, intervals, p_beat = split_summary(_summary(summary))
        provenance: dict[str, Any] = {"predictions file": str(predictions)}
        if cfg.data.sqlite_path and Path(cfg.data.sqlite_path).exists():
            provenance["database"] = str(cfg.data.sqlite_path)
        cost = cfg.evaluation.cost_bps if cost_bps is None else cost_bps
        data = build_report_data(
            frame,
            cost_bps=cost,
            walkforward=per_split,
            walkforward_summary=wf_summary or None,
            intervals=intervals,
            p_beat=p_beat,
            regimes=regimes,
            provenance=provenance,
            config=config_to_dict(cfg),
            benchmark_column=benchmark_column,
        )
        console.print(
            f"reporting {data.model.metrics['n_periods']:,} periods at {cost:g} bps",
            highlight=False,
        )
        paths = write_report(data, output, rolling_window=rolling_window, log_scale=log_scale)
    wrote("HTML report", paths.html)
    wrote("Markdown report", paths.markdown)
    wrote("charts", paths.images)
