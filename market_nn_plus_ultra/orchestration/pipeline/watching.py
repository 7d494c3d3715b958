"""``plus-ultra retrain --watch DIR``: one pipeline run per SQLite dump landing in DIR.

:func:`~market_nn_plus_ultra.orchestration.watch.watch` finds the dumps (debounced, one
run at a time, a dump with unchanged content never runs twice); each runs the whole
pipeline with ``--dataset`` set to it, under the same ``--output-dir``, so every run is
compared with the champion the previous ones promoted. The debounce, patterns and
polling come from ``orchestration.watch_*`` of the training config.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...config import load_config
from .run import RetrainResult, StageEvent, run_retrain

__all__ = ["watch_retrain"]

log = logging.getLogger(__name__)


def watch_retrain(
    folder: Path,
    given: Mapping[str, Any],
    *,
    stop: threading.Event | None = None,
    on_event: Callable[[StageEvent], None] | None = None,
    on_result: Callable[[RetrainResult], None] | None = None,
) -> None:
    """Run the pipeline (options ``given``, as for :func:`~.run.run_retrain`) on every new
    or changed dump in ``folder`` until ``stop`` is set; a failed run is logged and
    watching goes on."""
    from ..watch import watch

    if given.get("regenerate_regimes"):
        raise ValueError(
            "--watch with --regenerate-regimes would write labels into each dump, which "
            "changes it and starts another run — build the labels before the dump lands "
            "(`plus-ultra data build DB --regime-labels`) and drop --regenerate-regimes"
        )
    if not given.get("train_config"):
        raise ValueError("--watch needs --train-config: the config every run trains with")
    settings = load_config(given["train_config"], list(given.get("overrides") or ())).orchestration

    def run(path: Path) -> RetrainResult:
        result = run_retrain({**given, "dataset": Path(path)}, on_event=on_event)
        if on_result is not None:
            on_result(result)
        return result

    watch(
        Path(folder),
        run,
        debounce_s=settings.watch_debounce_s,
        stop=stop,
        patterns=tuple(settings.watch_patterns),
        polling=settings.watch_polling,
    )
