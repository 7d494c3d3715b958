"""What ``plus-ultra report`` runs: the walk-forward's files in, a :class:`ReportData` out.

:func:`report_data_from_files` reads the predictions file, the walk-forward's per-split
table and summary JSON, and — when the summary holds stitched metrics — rebuilds every
strategy of the summary on exactly the folds' test bars (the walk-forward's guardrails
and cost included), so that the headline's point estimates, its intervals and the charts
all cover the same bars. Regime labels come from the summary, a predictions column, or
the database's ``regimes`` table, in that order; without any, the report says which of
them was missing.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import DataConfig, EvaluationConfig, GuardrailsConfig
from .report import ReportData, build_report_data, split_summary
from .report_sample import (
    regime_attribution,
    sample_from_summary,
    splits_from_per_split,
    test_rows,
    walkforward_backtests,
)
from .summary import WalkForwardSummary, is_walkforward_summary

__all__ = ["read_summary", "report_data_from_files", "require_column"]


def read_summary(path: str | Path | None) -> dict[str, Any]:
    """The walk-forward summary JSON as a dict ({} when ``path`` is None).

    :meth:`~.summary.WalkForwardSummary.from_dict` turns it into the typed summary.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"summary file {path} does not exist — `plus-ultra walkforward` writes one "
            "(--summary-output, default outputs/walkforward/summary.json)."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"summary file {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"summary file {path}: expected a JSON object (the walk-forward summary).")
    return raw


def require_column(frame: pd.DataFrame, name: str, option: str) -> None:
    """Refuse a column the predictions lack, with the closest name and the columns present."""
    if name not in frame.columns:
        guess = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(
            f"predictions: no column {name!r} for {option}.{hint} "
            f"Columns present: {list(frame.columns)}."
        )


def _database(data: DataConfig | None) -> Path | None:
    if data is None or data.sqlite_path is None:
        return None
    path = Path(data.sqlite_path)
    return path if path.is_file() else None


def _panel(db: Path, frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    from ..data.panel import read_panel

    symbols = sorted(frame["symbol"].astype(str).unique())
    end = pd.to_datetime(frame["timestamp"], utc=True).max()
    return read_panel(
        db,
        symbols,
        data.start,
        end.isoformat(),
        include_indicators=False,
        cache=data.cache,
        cache_dir=data.cache_dir,
        threads=data.read_threads,
    )


def _walked_without_bars(summary: WalkForwardSummary) -> bool:
    """True when the walk-forward ran without a database (rule baselines on implied prices)."""
    return any("OHLCV" in str(why) for why in summary.skipped_baselines.values())


def _database_regimes(db: Path | None, data: DataConfig | None) -> tuple[pd.DataFrame | None, str]:
    """The ``regimes`` table, wide, or None and why."""
    from ..data.regimes import read_regimes
    from ..data.store import StoreError

    if db is None:
        where = "no database was given" if data is None else f"{data.sqlite_path} does not exist"
        return None, f"{where} to read the `regimes` table from (--set data.sqlite_path=DB)"
    try:
        labels = read_regimes(db)
    except StoreError:
        labels = None
    if labels is None or labels.empty:
        return None, (
            f"{db} has no `regimes` rows — build them with "
            f"`plus-ultra data build {db} --regime-labels`"
        )
    return labels, ""


def _regimes(
    frame: pd.DataFrame, regime_column: str | None, default_column: str | None
) -> tuple[pd.Series | None, str]:
    """A label per timestamp from a predictions column, or None and why."""
    column = regime_column or default_column
    if column is None or column not in frame.columns:
        return None, (
            f"the predictions have no {column or 'regime'!r} column (`plus-ultra predict` "
            "writes none; pass --regime-column with a column of labels)"
        )
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return frame[column].groupby(stamps).first(), ""


def _walkforward_inputs(
    scored: pd.DataFrame,
    frame: pd.DataFrame,
    score_from: pd.Timestamp | None,
    wf_summary: WalkForwardSummary,
    per_split: pd.DataFrame | None,
    *,
    evaluation: EvaluationConfig,
    data: DataConfig | None,
    guardrails: GuardrailsConfig | None,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The walk-forward's test rows and its strategies' backtests, rebuilt as it built them.

    As ``walkforward_from_files``: guardrails (when the summary counts breaches) act on
    the scored rows only, and the bars before the first scored one are the baselines'
    history.
    """
    from .walkforward_io import guard_predictions

    db = _database(data)
    breaches = None
    if wf_summary.guardrail_breaches is not None and guardrails is not None:
        scored, breaches = guard_predictions(scored, guardrails, data if db else None)
    if score_from is not None:
        history = frame[pd.to_datetime(frame["timestamp"], utc=True) < score_from]
        scored = pd.concat([history, scored], ignore_index=True)
    splits = splits_from_per_split(per_split)
    if splits is None:
        from .walkforward import WalkForwardBacktester

        settings = wf_summary.settings
        if settings.train_window is None or settings.test_window is None:
            raise ValueError(
                "walk-forward summary: settings.train_window / settings.test_window are "
                "missing and no per-fold table was given — pass the walk-forward's "
                "per_split.parquet (--walkforward) or its complete summary.json"
            )
        tester = WalkForwardBacktester(
            settings.train_window,
            settings.test_window,
            1 if settings.embargo is None else settings.embargo,
            settings.step,
            expanding=bool(settings.expanding),
        )
        stamps = pd.to_datetime(scored["timestamp"], utc=True)
        splits = tester.splits(stamps, score_from=score_from)
    panel = None
    if db is not None and data is not None and not _walked_without_bars(wf_summary):
        panel = _panel(db, scored, data)
    backtests, missing = walkforward_backtests(
        scored, wf_summary, splits, evaluation=evaluation, panel=panel, seed=seed
    )
    options = {
        "baselines": {n: r for n, r in backtests.items() if n != "model"},
        "missing_series": missing,
        "breaches": breaches,
    }
    return test_rows(scored, splits, wf_summary), options


def _regime_options(
    frame: pd.DataFrame,
    regime_column: str | None,
    evaluation: EvaluationConfig,
    wf_summary: WalkForwardSummary | None,
    data: DataConfig | None,
) -> tuple[pd.Series | None, pd.DataFrame | None, str | None]:
    """(labels per timestamp, database labels per row, why there are none)."""
    regimes, why_column = _regimes(frame, regime_column, evaluation.regime_column)
    strategies = wf_summary.strategies if wf_summary is not None else {}
    if regimes is not None or any(s.regimes for s in strategies.values()):
        return regimes, None, None
    labels, why_db = _database_regimes(_database(data), data)
    if labels is not None:
        return None, labels, None
    reasons = [why_column]
    if wf_summary is not None:
        reasons.append("the walk-forward summary has no per-regime metrics")
    reasons.append(why_db)
    return None, None, "No regime labels: " + "; ".join(reasons) + "."


def report_data_from_files(
    predictions: str | Path,
    *,
    evaluation: EvaluationConfig,
    data: DataConfig | None = None,
    guardrails: GuardrailsConfig | None = None,
    walkforward: str | Path | None = None,
    summary: str | Path | None = None,
    cost_bps: float | None = None,
    benchmark_column: str = "benchmark_return",
    regime_column: str | None = None,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    include_in_sample: bool = False,
) -> ReportData:
    """Everything a report shows, read from the files ``plus-ultra walkforward`` wrote.

    Rows are picked as the walk-forward picks them: only out-of-sample bars
    (``sample`` = ``test``/``unseen``) unless ``include_in_sample`` or the summary says
    it scored every bar; a file without a ``sample`` column is scored as given, with a
    notice. ``cost_bps``: None = the summary's cost (else ``evaluation.cost_bps``); with
    a summary it must equal the summary's. ``data``: the database of the baselines'
    OHLCV bars and of the ``regimes`` table. ``guardrails``: applied to the model's
    positions when the summary says the walk-forward applied them (it counts breaches),
    so the model is rescored as it was scored. ``seed``: the ML baselines' seed (the
    config's ``seed``, as walkforward uses).
    """
    from .walkforward_io import load_predictions, read_frame

    raw = read_summary(summary)
    listed, intervals, p_beat = split_summary(raw)
    # the file boundary: a walk-forward summary is read typed, anything else only listed
    wf_summary = WalkForwardSummary.from_dict(raw) if is_walkforward_summary(raw) else None
    block = None if wf_summary is None else wf_summary.sample
    include = include_in_sample or (block is not None and block.scored == "all")
    scored, frame, chosen = load_predictions(predictions, include_in_sample=include)
    if benchmark_column != "benchmark_return":
        require_column(frame, benchmark_column, "--benchmark-column")
    if regime_column is not None:
        require_column(frame, regime_column, "--regime-column")
    per_split = read_frame(walkforward, "walk-forward") if walkforward else None
    db = _database(data)
    provenance: dict[str, Any] = {"predictions file": str(predictions)}
    if db is not None:
        provenance["database"] = str(db)
    if cost_bps is None:
        cost = None if wf_summary is None else wf_summary.settings.cost_bps
        cost_bps = float(evaluation.cost_bps if cost is None else cost)
    options: dict[str, Any] = {"scored_sample": chosen.as_dict()}
    if sample_from_summary(wf_summary) is not None:
        score_from = chosen.start if chosen.out_of_sample else None
        scored, walked = _walkforward_inputs(
            scored,
            frame,
            score_from,
            wf_summary,
            per_split,
            evaluation=evaluation,
            data=data,
            guardrails=guardrails,
            seed=seed,
        )
        options.update(walked)
    regimes, labels, note = _regime_options(scored, regime_column, evaluation, wf_summary, data)
    report = build_report_data(
        scored,
        cost_bps=cost_bps,
        walkforward=per_split,
        walkforward_summary=wf_summary or listed or None,
        intervals=intervals,
        p_beat=p_beat,
        regimes=regimes,
        provenance=provenance,
        config=config,
        benchmark_column=benchmark_column,
        regime_note=note,
        **options,
    )
    if labels is not None:
        # The model's own rows: the database labels each (timestamp, symbol) it traded.
        report.regime_metrics = regime_attribution(
            report.positions, report.model.net_by_row, labels, report.periods_per_year, "model"
        )
    return report
