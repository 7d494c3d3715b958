"""Files in and out of the walk-forward: the predictions file, the database's bars, outputs.

:func:`walkforward_from_files` is what ``plus-ultra walkforward`` runs: it reads the
predictions Parquet (DESIGN.md "Predictions file"), optionally the OHLCV bars of the same
symbols from the database for the baselines, runs :class:`WalkForwardBacktester`, and
:func:`write_walkforward` writes per-fold metrics (Parquet) and the summary (JSON), each
atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig, EvaluationConfig, GuardrailsConfig
from .guardrails import apply_guardrails, sectors_from_assets
from .walkforward import WalkForwardBacktester, WalkForwardResult

__all__ = ["read_frame", "read_predictions", "walkforward_from_files", "write_walkforward"]


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


def walkforward_from_files(
    predictions: str | Path,
    evaluation: EvaluationConfig,
    data: DataConfig | None = None,
    *,
    bootstrap: bool = True,
    guardrails: GuardrailsConfig | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> WalkForwardResult:
    """Walk-forward the predictions file; baselines read their bars from ``data.sqlite_path``.

    ``data`` None: the rule baselines run on prices implied by ``realised_return`` and the
    ML baselines are skipped (the summary says so). ``guardrails``: apply these limits to
    the model's positions first (sectors from the database's ``assets`` table when sector
    caps are set); the breaches land in ``result.breaches`` and their counts per rule in
    the summary. Baselines trade unguarded.
    """
    from ..data.panel import read_panel

    frame = read_predictions(predictions)
    breaches = None
    if guardrails is not None:
        frame, breaches = guard_predictions(frame, guardrails, data)
    panel = None
    if data is not None:
        symbols = sorted(frame["symbol"].astype(str).unique())
        end = pd.to_datetime(frame["timestamp"], utc=True).max()
        panel = read_panel(
            data.sqlite_path,
            symbols,
            data.start,
            end.isoformat(),
            include_indicators=False,
            cache=data.cache,
            cache_dir=data.cache_dir,
            threads=data.read_threads,
        )
    tester = WalkForwardBacktester.from_config(evaluation)
    result = tester.run(
        frame,
        panel=panel,
        config=evaluation,
        regime_column=evaluation.regime_column,
        bootstrap=bootstrap,
        seed=seed,
        on_step=on_step,
    )
    if breaches is not None:
        attach_breaches(result, breaches)
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


def attach_breaches(result: WalkForwardResult, breaches: pd.DataFrame) -> None:
    """Keep the breaches on the result and count them per rule in its summary."""
    result.breaches = breaches
    result.summary["guardrail_breaches"] = breaches.groupby("rule").size().to_dict()


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, timestamps → ISO-8601."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_walkforward(
    result: WalkForwardResult,
    metrics_path: str | Path | None = None,
    summary_path: str | Path | None = None,
    regimes_path: str | Path | None = None,
    breaches_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write per-fold metrics (Parquet), the summary (JSON), per-regime metrics and
    guardrail breaches (Parquet, when present), each atomically (temp file, then rename).

    Returns ``{what: path}`` for the files written.
    """
    written: dict[str, Path] = {}
    if metrics_path is not None:
        written["per-fold metrics"] = _atomic(Path(metrics_path), result.per_split.to_parquet)
    if summary_path is not None:
        text = json.dumps(_clean(result.summary), indent=2, allow_nan=False)
        written["summary"] = _atomic(Path(summary_path), lambda p: p.write_text(text + "\n"))
    if regimes_path is not None and result.regimes is not None:
        written["per-regime metrics"] = _atomic(Path(regimes_path), result.regimes.to_parquet)
    if breaches_path is not None and result.breaches is not None:
        written["guardrail breaches"] = _atomic(Path(breaches_path), result.breaches.to_parquet)
    return written
