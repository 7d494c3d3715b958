"""Evaluation layer: metrics, backtests, the execution-simulator bridge, walk-forward,
baselines, bootstrap intervals, guardrails, the leakage audit and reports."""

from .backtest import BacktestResult, backtest, require_columns
from .backtest_io import BacktestRun, backtest_file
from .baselines import (
    BASELINE_NAMES,
    TimeSplit,
    baseline_predictions,
    buy_and_hold,
    mean_reversion,
    ml_baseline,
    momentum,
    run_baselines,
)
from .bootstrap import (
    BOOTSTRAP_METRICS,
    bootstrap_metrics,
    compare_sharpe,
    optimal_block,
    prob_sharpe_exceeds,
)
from .deflated import (
    deflate_trials,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    return_moments,
)
from .guardrails import BREACH_COLUMNS, apply_guardrails, sectors_from_assets
from .leakage import LEAK_COLUMNS, AuditReport, audit_leakage, audit_panel, check_targets
from .leakage_stored import StoredAudit, StoredThresholds, audit_stored
from .metrics import METRIC_KEYS, compute_metrics, infer_periods_per_year
from .paired import holm_adjust, mean_sharpe_lift, sharpe_differences
from .report import ReportData, ReportPaths, build_report_data, write_report
from .stress import StressResult, run_stress, simulate_backtest
from .summary import (
    BootstrapSummary,
    SharpeDifference,
    StrategySummary,
    WalkForwardSummary,
)
from .walkforward import WalkForwardBacktester, WalkForwardResult
from .walkforward_io import read_predictions, walkforward_from_files, write_walkforward

__all__ = [
    "BASELINE_NAMES",
    "BOOTSTRAP_METRICS",
    "BREACH_COLUMNS",
    "LEAK_COLUMNS",
    "METRIC_KEYS",
    "AuditReport",
    "BacktestResult",
    "BacktestRun",
    "BootstrapSummary",
    "ReportData",
    "ReportPaths",
    "SharpeDifference",
    "StoredAudit",
    "StoredThresholds",
    "StrategySummary",
    "StressResult",
    "TimeSplit",
    "WalkForwardBacktester",
    "WalkForwardResult",
    "WalkForwardSummary",
    "apply_guardrails",
    "audit_leakage",
    "audit_panel",
    "audit_stored",
    "backtest",
    "backtest_file",
    "baseline_predictions",
    "bootstrap_metrics",
    "build_report_data",
    "buy_and_hold",
    "check_targets",
    "compare_sharpe",
    "compute_metrics",
    "deflate_trials",
    "deflated_sharpe",
    "expected_max_sharpe",
    "holm_adjust",
    "infer_periods_per_year",
    "mean_reversion",
    "mean_sharpe_lift",
    "ml_baseline",
    "momentum",
    "optimal_block",
    "prob_sharpe_exceeds",
    "probabilistic_sharpe",
    "read_predictions",
    "require_columns",
    "return_moments",
    "run_baselines",
    "run_stress",
    "sectors_from_assets",
    "sharpe_differences",
    "simulate_backtest",
    "walkforward_from_files",
    "write_report",
    "write_walkforward",
]
