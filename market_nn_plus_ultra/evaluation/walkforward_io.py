"""Files in and out of the walk-forward: the predictions file, the database's bars, outputs.

:func:`walkforward_from_files` is what ``plus-ultra walkforward`` runs: it reads the
predictions Parquet (DESIGN.md "Predictions file"), optionally the OHLCV bars of the same
symbols from the database for the baselines, runs :class:`WalkForwardBacktester`, and
:func:`write_walkforward` writes per-fold metrics (Parquet) and the summary (JSON), each
atomically.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .._io import atomic_path, write_json
from ..config import DataConfig, EvaluationConfig, GuardrailsConfig
from .guardrails import apply_guardrails, sectors_from_assets
from .predictions import check_predictions
from .sample import ScoredSample, select_sample
from .walkforward import WalkForwardBacktester, WalkForwardResult

__all__ = [
    "load_predictions",
    "read_frame",
    "read_predictions",
    "walkforward_from_files",
    "write_walkforward",
]


def read_frame(path: str | Path, what: str = "predictions") -> pd.DataFrame:
    """Read a .parquet or .csv table; errors name ``what`` the file is and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file {path} does not exist — check the path"
            + (" or write one with `plus-ultra predict`" if what == "predictions" else "")
        )
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ValueError(
            f"{what} file {path}: unsupported extension {suffix!r}; use .parquet or .csv"
        )
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{what} file {path} could not be read: {err}") from None


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file (.parquet or .csv; ``timestamp``, ``symbol`` as index or columns)."""
    frame = read_frame(path, "predictions")
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    if "timestamp" in frame.columns:
        try:
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: column timestamp is not parseable ({err})") from None
    return frame


def load_predictions(
    path: str | Path,
    *,
    include_in_sample: bool = False,
    clip_positions: bool = False,
    return_column: str = "realised_return",
) -> tuple[pd.DataFrame, pd.DataFrame, ScoredSample]:
    """Read a predictions file, enforce its contract and pick the rows to score.

    Returns ``(scored rows, every row, what was scored)``: the scored rows are the
    out-of-sample ones (``test``/``unseen``) unless ``include_in_sample``; every row is
    kept for what may look back (baselines fitted on earlier bars). Errors name the file,
    the rows and the fix (positions outside [-1, 1] unless ``clip_positions``, duplicated
    or unsorted keys, missing columns with a "did you mean").
    """
    frame = read_predictions(path)
    for name in ("timestamp", "symbol", "position", return_column):
        if name not in frame.columns:
            guess = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            option = " (--return-column)" if name == return_column else ""
            raise ValueError(
                f"predictions file {path}: no column {name!r}{option}.{hint} "
                f"Columns present: {list(frame.columns)}."
            )
    frame = check_predictions(frame, clip=clip_positions, what=f"predictions file {path}")
    scored, sample = select_sample(
        frame, include_in_sample=include_in_sample, what=f"predictions file {path}"
    )
    return scored, frame, sample


def walkforward_from_files(
    predictions: str | Path,
    evaluation: EvaluationConfig,
    data: DataConfig | None = None,
    *,
    bootstrap: bool = True,
    guardrails: GuardrailsConfig | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    include_in_sample: bool = False,
    clip_positions: bool = False,
) -> WalkForwardResult:
    """Walk-forward the predictions file; baselines read their bars from ``data.sqlite_path``.

    Only out-of-sample bars are scored (see :func:`load_predictions`): the folds' test
    windows start at the first ``test``/``unseen`` bar, and earlier bars serve only as the
    baselines' training history. ``include_in_sample``: score every bar (the summary's
    ``sample`` says so). ``data`` None: the rule baselines run on prices implied by
    ``realised_return`` and the ML baselines are skipped (the summary says so).
    ``guardrails``: apply these limits to the model's scored positions first (sectors from
    the database's ``assets`` table when sector caps are set); the breaches land in
    ``result.breaches`` and their counts per rule in the summary. Baselines trade unguarded.
    """
    from ..data.validation_entry import read_checked_panel

    scored, frame, sample = load_predictions(
        predictions, include_in_sample=include_in_sample, clip_positions=clip_positions
    )
    score_from = sample.start if sample.out_of_sample else None
    breaches = None
    if guardrails is not None:
        scored, breaches = guard_predictions(scored, guardrails, data)
    if score_from is not None:
        history = frame[pd.to_datetime(frame["timestamp"], utc=True) < score_from]
        scored = pd.concat([history, scored], ignore_index=True)
    panel = None
    if data is not None:
        symbols = sorted(scored["symbol"].astype(str).unique())
        end = pd.to_datetime(scored["timestamp"], utc=True).max()
        request = {"symbols": symbols, "end": end.isoformat(), "include_indicators": False}
        panel = read_checked_panel(data.model_copy(update=request))  # validated as read
    tester = WalkForwardBacktester.from_config(evaluation)
    result = tester.run(
        scored,
        panel=panel,
        config=evaluation,
        regime_column=evaluation.regime_column,
        bootstrap=bootstrap,
        seed=seed,
        on_step=on_step,
        score_from=score_from,
        sample=sample,
    )
    if breaches is not None:
        result = attach_breaches(result, breaches)
    return result


def guard_predictions(
    frame: pd.DataFrame, guardrails: GuardrailsConfig, data: DataConfig | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``apply_guardrails`` with sectors read from ``data.sqlite_path`` when sector caps are set."""
    sectors = None
    if guardrails.max_sector_gross is not None or guardrails.sector_caps:
        if data is None or data.sqlite_path is None:
            raise ValueError("guardrails sector caps need the assets table: pass --db with sectors")
        sectors = sectors_from_assets(data.sqlite_path)
    return apply_guardrails(frame, guardrails, sectors)


def attach_breaches(result: WalkForwardResult, breaches: pd.DataFrame) -> WalkForwardResult:
    """A copy of ``result`` that keeps the breaches and counts them per rule in its summary."""
    counts = {str(rule): int(n) for rule, n in breaches.groupby("rule").size().items()}
    summary = replace(result.summary, guardrail_breaches=counts)
    return replace(result, summary=summary, breaches=breaches)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_walkforward(
    result: WalkForwardResult,
    metrics_path: str | Path | None = None,
    summary_path: str | Path | None = None,
    regimes_path: str | Path | None = None,
    breaches_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write per-fold metrics (Parquet), the summary (JSON), per-regime metrics and
    guardrail breaches (Parquet, when present), each atomically (``atomic_path``: temp file, fsync, rename).

    Returns ``{what: path}`` for the files written.
    """
    written: dict[str, Path] = {}
    if metrics_path is not None:
        written["per-fold metrics"] = _atomic(Path(metrics_path), result.per_split.to_parquet)
    if summary_path is not None:
        written["summary"] = write_json(Path(summary_path), result.summary.to_dict())
    if regimes_path is not None and result.regimes is not None:
        written["per-regime metrics"] = _atomic(Path(regimes_path), result.regimes.to_parquet)
    if breaches_path is not None and result.breaches is not None:
        written["guardrail breaches"] = _atomic(Path(breaches_path), result.breaches.to_parquet)
    return written
