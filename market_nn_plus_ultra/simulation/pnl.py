"""Differentiable profit and loss: positions and returns in, net returns out (torch).

The convention is DESIGN.md's backtest convention, extended with slippage and a holding
charge. For each stream (a symbol, or a sample's forward horizon) the net return earned
over (t, t+1] is::

    net_t = position_t * return_t
            - (cost_bps + slippage_bps) / 1e4 * |position_t - position_{t-1}|
            - holding_bps / 1e4 * |position_t|

with ``return_t`` the simple return from t to t+1 and ``position_{-1}`` the initial
position (flat unless given). Costs zero gives ``position * return`` exactly, so the
evaluation backtest and the training loss agree on what a trade earns.

``|x|`` has a kink at 0 whose subgradient (0) stops a flat policy from ever learning that
trading costs; ``smooth_abs > 0`` swaps it for ``sqrt(x² + s²) − s``, which is exact at
0, within ``s`` of ``|x|`` everywhere and has a non-zero gradient near 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "equity_curve",
    "horizon_pnl",
    "pnl_stream",
    "smooth_abs",
    "trade_sizes",
]


def smooth_abs(x: Tensor, smoothing: float = 0.0) -> Tensor:
    """``|x|`` (``smoothing == 0``) or ``sqrt(x² + s²) − s`` (differentiable at 0, same units)."""
    if smoothing < 0:
        raise ValueError(f"smooth_abs: smoothing must be >= 0, got {smoothing}")
    if smoothing == 0:
        return x.abs()
    s = torch.as_tensor(smoothing, dtype=x.dtype, device=x.device)
    return torch.sqrt(x * x + s * s) - s


def trade_sizes(positions: Tensor, initial_position: Tensor | float | None = None) -> Tensor:
    """``position_t − position_{t−1}`` along the last dim; shape as ``positions`` ([..., T]).

    ``initial_position`` (a float or a tensor broadcastable to ``positions[..., 0]``) is
    the position held before the first bar; None means flat, so entering costs a trade.
    """
    if positions.ndim == 0:
        raise ValueError("trade_sizes: positions must have a time dimension [..., T]")
    first = positions[..., :1]
    if initial_position is None:
        previous0 = torch.zeros_like(first)
    else:
        init = torch.as_tensor(initial_position, dtype=positions.dtype, device=positions.device)
        previous0 = torch.broadcast_to(init, first.shape[:-1]).unsqueeze(-1)  # (..., 1)
    previous = torch.cat([previous0, positions[..., :-1]], dim=-1)  # (..., T)
    return positions - previous


def pnl_stream(
    positions: Tensor,
    returns: Tensor,
    cost_bps: float = 0.0,
    slippage_bps: float = 0.0,
    holding_bps: float = 0.0,
    initial_position: Tensor | float | None = None,
    smoothing: float = 0.0,
) -> Tensor:
    """Net simple returns ``[..., T]`` of holding ``positions`` over ``returns``.

    Args:
        positions: exposure held from bar t's close to bar t+1's, ``[..., T]`` (fraction
            of capital, usually in [-1, 1]).
        returns: simple return from t to t+1, same shape (or broadcastable) as positions.
        cost_bps: commission per unit of position traded, basis points.
        slippage_bps: extra execution cost per unit traded, basis points.
        holding_bps: charge per bar per unit of gross exposure (borrow/funding), bps.
        initial_position: position before the first bar (None = flat).
        smoothing: 0 for the exact ``|·|``; > 0 for :func:`smooth_abs` (gradients at 0).

    Returns:
        ``net[..., T]``; equal to ``positions * returns`` when every charge is zero.
    """
    for name, value in (
        ("cost_bps", cost_bps),
        ("slippage_bps", slippage_bps),
        ("holding_bps", holding_bps),
    ):
        if value < 0:
            raise ValueError(f"pnl_stream: {name} must be >= 0 (basis points), got {value}")
    gross = positions * returns
    trade_rate = (cost_bps + slippage_bps) / 1e4
    if trade_rate:
        gross = gross - trade_rate * smooth_abs(trade_sizes(positions, initial_position), smoothing)
    if holding_bps:
        gross = gross - holding_bps / 1e4 * smooth_abs(positions, smoothing)
    return gross


def horizon_pnl(
    position: Tensor,
    forward_returns: Tensor,
    cost_bps: float = 0.0,
    slippage_bps: float = 0.0,
    holding_bps: float = 0.0,
    initial_position: Tensor | float | None = None,
    smoothing: float = 0.0,
) -> Tensor:
    """Net returns ``[B, H]`` of holding each sample's ``position[B]`` over t+1..t+H.

    ``forward_returns[B, H]`` are per-bar simple returns (column k: bar t+k to t+k+1).
    The position is entered once (a trade from ``initial_position``, flat by default) and
    then held, so only the first column pays the trading cost; every column pays holding.
    """
    if position.ndim != forward_returns.ndim - 1:
        raise ValueError(
            f"horizon_pnl: position {tuple(position.shape)} must have one dim fewer than "
            f"forward_returns {tuple(forward_returns.shape)} (the horizon H)"
        )
    held = position.unsqueeze(-1).expand_as(forward_returns)  # (B, H)
    return pnl_stream(
        held, forward_returns, cost_bps, slippage_bps, holding_bps, initial_position, smoothing
    )


def equity_curve(net: Tensor) -> Tensor:
    """Compounded wealth ``prod(1 + net)`` after each bar, starting from 1; shape of ``net``."""
    return torch.cumprod(1.0 + net, dim=-1)
