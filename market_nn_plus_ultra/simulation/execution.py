"""Execution simulator: target positions in, fills, costs and net returns out (torch, batched).

Everything is a tensor ``[B, T, S]`` (scenarios × bars × symbols) on any device. A
position is a fraction of the capital slot of its symbol (``capital`` split equally over
the symbols present at the bar), held from bar t's close to bar t+1's. At each bar:

1. **Latency** — the order decided at bar u arrives at bar ``u + k`` (k drawn per order
   from ``latency_bars``/``latency_probs``); the target in force is the latest decision
   that has arrived, flat before the first.
2. **Limits** — targets are clipped to ``±max_position`` and scaled down so the gross
   leverage ``mean_s |target|`` stays within ``max_gross``.
3. **Fills** — the symbol trades towards its target; with ``participation_cap`` a fill
   is at most ``cap × dollar_volume / slot`` position units and the rest carries over
   to the next bar (the only recursion over time). Absent symbols do not trade.
4. **Costs** per unit filled: commission ``cost_bps``, half-spread
   ``half_spread_bps/1e4 + spread_vol_mult·σ``, square-root impact
   ``impact_coef·σ·sqrt(|fill|·slot/ADV)``, and ``fixed_cost/slot`` per non-zero fill;
   per bar held: borrow on shorts, financing on ``|position| > 1`` and per-bar funding
   rates (longs pay a positive rate).

The net return of a symbol over (t, t+1] is ``position_t · return_t − costs_t``; the
portfolio return is the mean over the symbols whose return is known. With every
friction off this is exactly :func:`market_nn_plus_ultra.evaluation.backtest.backtest`.
Formulas and config fields: docs/simulation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import torch
from torch import Tensor

from ..config import SimulationConfig
from .step import (
    COST_KINDS,
    LatencyBuckets,
    bar_update,
    capital_slot,
    fill_bar,
    fill_limit,
    limit_targets,
    symbol_mean,
)

__all__ = ["COST_KINDS", "ExecutionResult", "effective_targets", "simulate_execution"]


@dataclass
class ExecutionResult:
    """What the simulator did, bar by bar. Per-symbol tensors are ``[B, T, S]``."""

    targets: Tensor  # target in force after latency and limits
    positions: Tensor  # held over (t, t+1] after this bar's fill
    fills: Tensor  # position units traded at bar t (signed)
    costs: dict[str, Tensor]  # COST_KINDS → charge as a return on the slot (positive = paid)
    gross: Tensor  # positions · returns (0 where the return is unknown)
    net: Tensor  # gross − all costs (0 where the return is unknown)
    known: Tensor  # bool: the return is known (only these rows enter the portfolio)
    portfolio: Tensor  # [B, T] mean net over known symbols (NaN where none)
    portfolio_gross: Tensor  # [B, T]
    portfolio_costs: Tensor  # [B, T] mean total cost over known symbols
    turnover: Tensor  # [B, T] mean |fill| over known symbols

    def portfolio_cost(self, kind: str) -> Tensor:
        """Mean charge of one cost kind over the known symbols, ``[B, T]``."""
        if kind not in self.costs:
            raise KeyError(f"unknown cost kind {kind!r}; kinds: {list(self.costs)}")
        weight = self.known.to(self.net.dtype)
        count = weight @ torch.ones(weight.shape[-1], dtype=weight.dtype, device=weight.device)
        return symbol_mean(self.costs[kind] * weight, count)


def _forward_fill(values: Tensor, mask: Tensor, initial: Tensor) -> Tensor:
    """Along T: keep ``values`` where ``mask``, else the last masked value (``initial`` first)."""
    B, T, S = values.shape
    steps = torch.arange(T, device=values.device).view(1, T, 1).expand(B, T, S)
    last = torch.where(mask, steps, torch.full_like(steps, -1)).cummax(dim=1).values  # (B, T, S)
    taken = values.gather(1, last.clamp(min=0))
    return torch.where(last >= 0, taken, initial.unsqueeze(1).expand(B, T, S))


def effective_targets(
    targets: Tensor,
    latency_bars: list[int],
    latency_probs: list[float] | None,
    initial: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The target in force at each bar once every order has waited its latency, ``[B, T, S]``.

    The order decided at bar u arrives at ``u + k_u``; at bar t the latest decision that
    has arrived wins (so a slow order never overwrites a newer one). Before the first
    arrival the position ``initial`` ``[B, S]`` stays in force. The lags come from
    :class:`~.step.LatencyBuckets` on ``torch.rand(B, T, S)`` float64 draws of
    ``generator`` (on the CPU); :func:`~.step.arrive` is the same rule one bar at a time.
    """
    B, T, S = targets.shape
    if len(latency_bars) == 1:
        k = int(latency_bars[0])
        if k == 0:
            return targets
        head = initial.unsqueeze(1).expand(B, min(k, T), S)
        return torch.cat([head, targets[:, : max(T - k, 0)]], dim=1)[:, :T]
    uniform = torch.rand(B, T, S, dtype=torch.float64, generator=generator)
    buckets = LatencyBuckets.from_config(latency_bars, latency_probs)
    lag = buckets.draw(uniform).to(targets.device)  # (B, T, S)
    decided = torch.arange(T, device=targets.device).view(1, T, 1).expand(B, T, S)
    arrival = (decided + lag).clamp(max=T)  # T = after the last bar: never fills
    latest = torch.full((B, T + 1, S), -1, dtype=torch.long, device=targets.device)
    latest.scatter_reduce_(1, arrival, decided, reduce="amax", include_self=True)
    latest = latest[:, :T].cummax(dim=1).values  # (B, T, S) newest decision arrived by t
    taken = targets.gather(1, latest.clamp(min=0))
    return torch.where(latest >= 0, taken, initial.unsqueeze(1).expand(B, T, S))


@numba.njit(cache=True, nogil=True)
def _fill_with_cap_kernel(targets, limit, initial, out):  # pragma: no cover - compiled
    """``out[b, t, s]``: held after bar t's fill; ``targets``/``limit`` ``[B, T, S]``."""
    B, T, S = targets.shape
    for b in range(B):
        for t in range(T):
            for s in range(S):
                h = initial[b, s] if t == 0 else out[b, t - 1, s]
                lim = limit[b, t, s]
                out[b, t, s] = h + min(max(targets[b, t, s] - h, -lim), lim)


def _fill_with_cap(targets: Tensor, present: Tensor, limit: Tensor, initial: Tensor) -> Tensor:
    """Held positions when each bar fills at most ``limit`` units toward the target.

    ``h_t = h_{t-1} + clip(target_t − h_{t-1}, −limit_t, limit_t)`` is a genuine recursion
    (a partial fill moves the next bar's start). On the CPU, without autograd, it runs as
    one compiled numba pass (no per-bar Python and tensor-op overhead); on other devices
    or when a gradient is needed, as a loop of per-bar tensor ops.
    """
    limit = fill_limit(limit, present)  # (B, T, S)
    needs_grad = torch.is_grad_enabled() and (
        targets.requires_grad or limit.requires_grad or initial.requires_grad
    )
    same = targets.dtype == limit.dtype == initial.dtype in (torch.float32, torch.float64)
    if targets.device.type == "cpu" and not needs_grad and same:
        out = torch.empty_like(targets, memory_format=torch.contiguous_format)
        _fill_with_cap_kernel(
            targets.detach().contiguous().numpy(),
            limit.detach().expand_as(targets).contiguous().numpy(),
            initial.detach().expand(targets.shape[0], targets.shape[2]).contiguous().numpy(),
            out.numpy(),
        )
        return out  # (B, T, S)
    held = []
    h = initial
    for wanted, lim in zip(targets.unbind(1), limit.unbind(1), strict=True):  # per-bar views
        h = fill_bar(h, wanted, lim)
        held.append(h)
    return torch.stack(held, dim=1)  # (B, T, S)


def simulate_execution(
    targets: Tensor,
    returns: Tensor,
    cfg: SimulationConfig,
    *,
    present: Tensor | None = None,
    volatility: Tensor | None = None,
    dollar_volume: Tensor | None = None,
    adv: Tensor | None = None,
    funding: Tensor | None = None,
    periods_per_year: float = 252.0,
    initial_position: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ExecutionResult:
    """Simulate trading ``targets`` ``[B, T, S]`` against ``returns`` ``[B, T, S]``.

    Args:
        targets: desired position per bar (fraction of the symbol's capital slot).
        returns: simple return from t to t+1; NaN where unknown (that row earns nothing
            and is left out of the portfolio mean, but its trade still happens).
        cfg: the ``simulation`` config section (costs, fills, latency, limits).
        present: bool, the symbol has a bar at t (absent symbols neither trade nor
            count); default: everywhere. Broadcastable to ``[B, T, S]``.
        volatility: per-bar return std σ (needed by ``spread_vol_mult``/``impact_coef``).
        dollar_volume: the bar's traded value in currency (``participation_cap``).
        adv: average dollar volume in currency (``impact_coef``).
        funding: per-bar funding rate paid by longs (received by shorts); NaN = 0.
        periods_per_year: bars per year, to turn annual borrow/financing into per bar.
        initial_position: ``[B, S]`` held before the first bar; default flat.
        generator: random source of latency draws (seed it for reproducible runs).

    Returns:
        :class:`ExecutionResult`; every friction zero reproduces the backtest convention.
    """
    if targets.ndim != 3:
        raise ValueError(
            f"simulate_execution: targets must be [B, T, S], got {tuple(targets.shape)}"
        )
    B, T, S = targets.shape
    returns = returns.to(targets).expand(B, T, S)
    present = (
        torch.ones_like(targets, dtype=torch.bool)
        if present is None
        else present.to(targets.device, torch.bool).expand(B, T, S)
    )
    if torch.isnan(targets).any():
        raise ValueError("simulate_execution: targets contain NaN; fill absent bars first")
    initial = (
        torch.zeros(B, S, dtype=targets.dtype, device=targets.device)
        if initial_position is None
        else initial_position.to(targets).expand(B, S)
    )

    wanted = effective_targets(targets, cfg.latency_bars, cfg.latency_probs, initial, generator)
    wanted = limit_targets(wanted, present, cfg)
    slot = capital_slot(present, cfg, targets.dtype)  # (B, T, 1) currency per symbol
    if cfg.participation_cap is not None:
        if dollar_volume is None:
            raise ValueError(
                "simulation.participation_cap needs per-bar dollar volume: add a dollar_volume "
                "column (or volume and close) or set participation_cap=null"
            )
        volume = dollar_volume.to(targets)
        held = _fill_with_cap(wanted, present, cfg.participation_cap * volume / slot, initial)
    else:
        # Absent symbols keep their position; skip the (costly) fill when none is absent.
        held = wanted if bool(present.all()) else _forward_fill(wanted, present, initial)
    previous = torch.cat([initial.unsqueeze(1), held[:, :-1]], dim=1)  # (B, T, S)
    bar = bar_update(
        held,
        previous,
        returns,
        present,
        slot,
        cfg,
        volatility=volatility,
        adv=adv,
        funding=funding,
        periods_per_year=periods_per_year,
    )
    count = bar.count  # (B, T) symbols in the portfolio
    return ExecutionResult(
        targets=wanted,
        positions=held,
        fills=bar.fills,
        costs=bar.costs,
        gross=bar.gross,
        net=bar.net,
        known=bar.known,
        portfolio=symbol_mean(bar.net, count),
        portfolio_gross=symbol_mean(bar.gross, count),
        portfolio_costs=symbol_mean(bar.charged, count),
        turnover=symbol_mean(bar.size * bar.known.to(held.dtype), count),
    )
