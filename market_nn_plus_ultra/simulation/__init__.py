"""Simulation layer: the differentiable PnL (torch) that training losses use, and the
batched execution simulator (costs, impact, partial fills, latency, funding, limits)."""

from .execution import COST_KINDS, ExecutionResult, effective_targets, simulate_execution
from .pnl import equity_curve, horizon_pnl, pnl_stream, smooth_abs, trade_sizes

__all__ = [
    "COST_KINDS",
    "ExecutionResult",
    "effective_targets",
    "equity_curve",
    "horizon_pnl",
    "pnl_stream",
    "simulate_execution",
    "smooth_abs",
    "trade_sizes",
]
