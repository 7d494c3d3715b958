"""What ``plus-ultra walkforward`` runs: score a predictions file, or retrain per fold.

:func:`run_walkforward` picks the mode, runs it and writes its outputs, so the command
only parses options and prints. The two modes:

- **file** (``predictions`` given): :func:`~..evaluation.walkforward_io.walkforward_from_files`
  over the out-of-sample rows of the predictions file, baselines beside the model;
- **retrain** (``retrain=True``): :func:`~.retrain.walkforward_retrain`, a fresh model per
  fold trained on that fold's past only, its stitched test predictions scored the same way.

Both write the per-fold metrics (Parquet), the summary (JSON), and, when present, the
per-regime metrics and guardrail breaches (Parquet), each atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..evaluation.walkforward import WalkForwardResult
from ..evaluation.walkforward_io import walkforward_from_files, write_walkforward
from .retrain import walkforward_retrain

__all__ = ["WalkForwardOutputs", "WalkForwardRun", "check_walkforward_mode", "run_walkforward"]


@dataclass(frozen=True, slots=True)
class WalkForwardOutputs:
    """Where the walk-forward's files go (None: not written; regimes/breaches when present)."""

    metrics: Path | None = Path("outputs/walkforward/per_split.parquet")
    summary: Path | None = Path("outputs/walkforward/summary.json")
    regimes: Path | None = None
    breaches: Path | None = None


@dataclass(frozen=True, slots=True)
class WalkForwardRun:
    """The walk-forward's result and ``{what: path}`` of every file or folder it wrote."""

    result: WalkForwardResult
    paths: dict[str, Path]


def check_walkforward_mode(retrain: bool, predictions: Path | None) -> None:
    """Refuse option mixes that mean nothing, naming the option to drop or add."""
    if retrain and predictions is not None:
        raise ValueError(
            "--predictions is not used with --retrain: the retrain mode trains a model per "
            "fold and writes its own out-of-sample predictions under --output-dir. Drop "
            "--predictions (or --retrain to score an existing predictions file)."
        )
    if not retrain and predictions is None:
        raise ValueError(
            "missing --predictions: pass a predictions file (plus-ultra predict writes one), "
            "or --retrain --config … to train a fresh model per fold"
        )


def run_walkforward(
    cfg: Config,
    *,
    predictions: str | Path | None = None,
    retrain: bool = False,
    output_dir: str | Path = Path("outputs/walkforward"),
    outputs: WalkForwardOutputs | None = None,
    read_bars: bool = True,
    bootstrap: bool = True,
    guardrails: bool = False,
    include_in_sample: bool = False,
    clip_positions: bool = False,
    on_fold: Callable[[int, int, str], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> WalkForwardRun:
    """Walk-forward ``predictions`` (file mode) or retrain per fold (``retrain``), then write.

    ``cfg``: the evaluation section sets the folds (bars), costs (bps) and baselines;
    ``cfg.seed`` seeds the ML baselines. ``read_bars``: in file mode, read the baselines'
    OHLCV bars from ``cfg.data.sqlite_path`` (False: rule baselines on prices implied by
    the returns, ML baselines skipped). ``guardrails``: apply ``cfg.guardrails`` to the
    model's positions first. ``include_in_sample`` / ``clip_positions``: file mode only
    (see :func:`~..evaluation.walkforward_io.load_predictions`). ``output_dir``: the
    retrain mode's fold folders (``fold_k/``, resumable) and stitched predictions.
    ``on_fold(done, total, message)``: each retrain fold; ``on_step(message)``: each step.
    Raises ``ValueError`` for a meaningless option mix (see :func:`check_walkforward_mode`).
    """
    check_walkforward_mode(retrain, None if predictions is None else Path(predictions))
    files = outputs or WalkForwardOutputs()
    step = on_step or (lambda _message: None)
    if retrain:
        result = walkforward_retrain(
            cfg,
            output_dir,
            bootstrap=bootstrap,
            guardrails=guardrails,
            on_fold=on_fold,
            on_step=step,
        )
    else:
        result = walkforward_from_files(
            predictions,
            cfg.evaluation,
            cfg.data if read_bars else None,
            bootstrap=bootstrap,
            guardrails=cfg.guardrails if guardrails else None,
            seed=cfg.seed,
            on_step=step,
            include_in_sample=include_in_sample,
            clip_positions=clip_positions,
        )
    step("writing outputs")
    paths = write_walkforward(result, files.metrics, files.summary, files.regimes, files.breaches)
    if result.summary.retrain is not None:
        paths["fold runs (fold_k/, resumable)"] = Path(output_dir)
        paths["predictions (stitched)"] = Path(result.summary.retrain.predictions)
    return WalkForwardRun(result, paths)
