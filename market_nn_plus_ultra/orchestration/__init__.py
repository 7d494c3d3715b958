"""Orchestration layer: workflows that chain the others — the demo, walk-forward with
retraining per fold (and the walk-forward command's dispatcher), benchmark sweeps with their
Parquet catalogue, and the staged retrain pipeline (:mod:`.pipeline`)."""

from .catalogue import CATALOGUE_COLUMNS, append_catalogue, read_catalogue
from .demo import DEMO_STEPS, DemoResult, build_demo_databases, demo_config, run_demo
from .pipeline import RetrainOptions, RetrainResult, run_pipeline
from .retrain import FOLD_PREDICTIONS, RetrainFold, retrain_folds, walkforward_retrain
from .sweep import (
    COMPARED_METRICS,
    SWEEP_AXES,
    ComparisonResult,
    Scenario,
    SweepResult,
    expand_scenarios,
    run_pretraining_comparison,
    run_sweep,
)
from .walkforward_run import (
    WalkForwardOutputs,
    WalkForwardRun,
    check_walkforward_mode,
    run_walkforward,
)

__all__ = [
    "CATALOGUE_COLUMNS",
    "COMPARED_METRICS",
    "DEMO_STEPS",
    "FOLD_PREDICTIONS",
    "SWEEP_AXES",
    "ComparisonResult",
    "DemoResult",
    "RetrainFold",
    "RetrainOptions",
    "RetrainResult",
    "Scenario",
    "SweepResult",
    "WalkForwardOutputs",
    "WalkForwardRun",
    "append_catalogue",
    "build_demo_databases",
    "check_walkforward_mode",
    "demo_config",
    "expand_scenarios",
    "read_catalogue",
    "retrain_folds",
    "run_demo",
    "run_pipeline",
    "run_pretraining_comparison",
    "run_sweep",
    "run_walkforward",
    "walkforward_retrain",
]
