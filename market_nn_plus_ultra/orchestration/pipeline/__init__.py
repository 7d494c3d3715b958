"""The retrain pipeline: validate → regimes → pretrain → train → RL fine-tune → evaluate
→ report → promote → push, one folder per stage under ``automation_runs/<UTC timestamp>/``
and a ``manifest.json`` that makes every run resumable (``docs/retrain.md``)::

    result = run_pipeline(RetrainOptions(dataset=Path("data/market.db"),
                                         train_config=Path("configs/default_desktop.yaml")))
    result.run_dir, result.promoted, result.why_not
    run_pipeline(resume=result.run_dir, from_stage="evaluate")   # rerun the tail
"""

from .context import RetrainRun, StagePlan, StageResult, checkpoint_file
from .manifest import MANIFEST_FILE, STAGES, STATUSES, Manifest, StageRecord, versions
from .options import RUN_FILE, WARM_STARTS, RetrainOptions
from .run import (
    STAGE_FUNCTIONS,
    RetrainResult,
    StageEvent,
    execute_stage,
    open_run,
    run_pipeline,
    run_retrain,
)
from .watching import watch_retrain

__all__ = [
    "MANIFEST_FILE",
    "RUN_FILE",
    "STAGES",
    "STAGE_FUNCTIONS",
    "STATUSES",
    "WARM_STARTS",
    "Manifest",
    "RetrainOptions",
    "RetrainResult",
    "RetrainRun",
    "StageEvent",
    "StagePlan",
    "StageRecord",
    "StageResult",
    "checkpoint_file",
    "execute_stage",
    "open_run",
    "run_pipeline",
    "run_retrain",
    "versions",
    "watch_retrain",
]
