"""Simulation layer: the differentiable PnL (torch) that training losses and backtests share."""

from .pnl import equity_curve, horizon_pnl, pnl_stream, smooth_abs, trade_sizes

__all__ = ["equity_curve", "horizon_pnl", "pnl_stream", "smooth_abs", "trade_sizes"]
