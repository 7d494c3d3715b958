"""One bar of the execution simulator: the arithmetic every caller shares.

:func:`~market_nn_plus_ultra.simulation.execution.simulate_execution` applies these
functions to whole ``[B, T, S]`` paths at once (every bar's arithmetic is elementwise
once the held positions are known, and the fill recursion runs over T in one compiled
pass); the reinforcement-learning environment applies the same functions to one bar of
``[N, S]`` environments per step. Both therefore charge exactly the same costs.

- :func:`capital_slot` — currency behind one position unit of each symbol;
- :class:`LatencyBuckets` — latency in bars drawn from uniform numbers;
- :class:`OrderBook` / :func:`arrive` — the bar-by-bar form of
  :func:`~market_nn_plus_ultra.simulation.execution.effective_targets`;
- :func:`limit_targets` — per-symbol and gross caps;
- :func:`fill_limit` / :func:`fill_bar` — participation-capped partial fills;
- :func:`bar_update` — fills, every cost kind, gross and net returns of the bar.

Formulas and config fields: docs/simulation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import SimulationConfig

__all__ = [
    "COST_KINDS",
    "BarUpdate",
    "LatencyBuckets",
    "OrderBook",
    "arrive",
    "bar_update",
    "capital_slot",
    "fill_bar",
    "fill_limit",
    "limit_targets",
    "symbol_mean",
]

#: Every cost the simulator charges, in the order reports list them.
COST_KINDS = (
    "commission",
    "fixed",
    "spread",
    "impact",
    "borrow",
    "leverage_funding",
    "funding",
)

# A fill smaller than this (position units) is rounding, not a trade that pays fixed_cost.
_MIN_FILL = 1e-12


def _ones_like_symbols(values: Tensor) -> Tensor:
    return torch.ones(values.shape[-1], dtype=values.dtype, device=values.device)


def symbol_mean(zeroed: Tensor, count: Tensor) -> Tensor:
    """Mean over the last (symbol) axis of ``zeroed`` (0 off the mask) given the mask's ``count``.

    NaN where ``count`` is 0. A matrix-vector product with ones sums the small last dim
    ~10× faster than ``sum(-1)``.
    """
    total = zeroed @ _ones_like_symbols(zeroed)  # (...,)
    return torch.where(count > 0, total / count.clamp(min=1), float("nan"))


def symbol_count(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """How many symbols ``mask [..., S]`` marks, as ``dtype`` ``[...]``."""
    weight = mask.to(dtype)
    return weight @ _ones_like_symbols(weight)


def capital_slot(present: Tensor, cfg: SimulationConfig, dtype: torch.dtype) -> Tensor:
    """Currency per symbol ``[..., 1]``: ``capital`` split over the symbols present at the bar."""
    n_present = symbol_count(present, dtype).clamp(min=1).unsqueeze(-1)  # (..., 1)
    return cfg.capital / n_present


# --------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyBuckets:
    """Latency buckets as tensors: ``draw(uniform)`` maps draws in [0, 1) to lags in bars.

    Bucket ``j`` (``latency_bars[j]`` bars) is taken with probability ``latency_probs[j]``
    (equal when None): the draw falls in ``[edges[j-1], edges[j])``.
    """

    edges: Tensor  # (J - 1,) float64 cumulative probabilities
    lags: Tensor  # (J,) int64 bars of each bucket

    @classmethod
    def from_config(
        cls,
        latency_bars: list[int],
        latency_probs: list[float] | None,
        device: str | torch.device = "cpu",
    ) -> LatencyBuckets:
        n = len(latency_bars)
        probs = torch.tensor(latency_probs or [1.0 / n] * n, dtype=torch.float64)
        return cls(
            edges=probs.cumsum(0)[:-1].to(device),
            lags=torch.tensor(latency_bars, dtype=torch.long, device=device),
        )

    def draw(self, uniform: Tensor) -> Tensor:
        """int64 lag of each order from its float64 ``uniform`` draw (any shape)."""
        return self.lags[torch.searchsorted(self.edges, uniform, right=True)]


@dataclass
class OrderBook:
    """Orders still travelling, per environment and symbol (a ring of ``K`` slots).

    ``K = max(latency_bars) + 1``: an order decided ``K`` bars ago has arrived, so its slot
    can be reused. ``decided`` is -1 in an empty slot; ``in_force_decided`` is -1 before
    the first arrival (``in_force`` then holds the initial position).
    """

    target: Tensor  # (N, K, S) the order's target position
    decided: Tensor  # (N, K, S) int64 bar the order was decided at
    arrival: Tensor  # (N, K, S) int64 bar it arrives at
    in_force: Tensor  # (N, S) target in force
    in_force_decided: Tensor  # (N, S) int64 decision bar of the target in force

    @classmethod
    def empty(cls, initial: Tensor, max_lag: int) -> OrderBook:
        """No order in flight; ``initial`` ``[N, S]`` is in force."""
        N, S = initial.shape
        K = int(max_lag) + 1
        long = {"dtype": torch.long, "device": initial.device}
        return cls(
            target=initial.new_zeros(N, K, S),
            decided=torch.full((N, K, S), -1, **long),
            arrival=torch.zeros(N, K, S, **long),
            in_force=initial.clone(),
            in_force_decided=torch.full((N, S), -1, **long),
        )

    def clear(self, rows: Tensor, initial: Tensor) -> None:
        """Empty the books of environments ``rows`` (bool ``[N]``) and put ``initial`` in force."""
        keep = ~rows
        self.decided.masked_fill_(rows.view(-1, 1, 1), -1)
        self.in_force_decided.masked_fill_(rows.view(-1, 1), -1)
        self.in_force = torch.where(keep.view(-1, 1), self.in_force, initial)


def arrive(book: OrderBook, targets: Tensor, lag: Tensor, bar: Tensor) -> Tensor:
    """Queue the orders decided at ``bar`` and return the target in force there, ``[N, S]``.

    ``targets``/``lag`` ``[N, S]`` (int64 lags), ``bar`` ``[N]`` int64, each environment's
    own bar count. The newest decision that has arrived by ``bar`` wins, so a slow order
    never overwrites a newer one — :func:`effective_targets`, one bar at a time.
    """
    N, K, S = book.target.shape
    slot = (bar % K).view(N, 1, 1).expand(N, 1, S)
    now = bar.view(N, 1).expand(N, S)
    book.target.scatter_(1, slot, targets.unsqueeze(1).to(book.target.dtype))
    book.decided.scatter_(1, slot, now.unsqueeze(1))
    book.arrival.scatter_(1, slot, (now + lag).unsqueeze(1))
    arrived = (book.decided >= 0) & (book.arrival <= bar.view(N, 1, 1))
    newest, which = torch.where(arrived, book.decided, -1).max(dim=1)  # (N, S)
    newer = newest > book.in_force_decided
    taken = book.target.gather(1, which.unsqueeze(1)).squeeze(1)  # (N, S)
    book.in_force = torch.where(newer, taken, book.in_force)
    book.in_force_decided = torch.where(newer, newest, book.in_force_decided)
    return book.in_force


# --------------------------------------------------------------------------------------
# Limits and fills
# --------------------------------------------------------------------------------------


def limit_targets(targets: Tensor, present: Tensor, cfg: SimulationConfig) -> Tensor:
    """Clip ``targets [..., S]`` to ``±max_position``, then scale each bar to ``max_gross``.

    The gross leverage is ``mean_s |target|`` over the symbols ``present`` at the bar.
    """
    if cfg.max_position is not None:
        targets = targets.clamp(-cfg.max_position, cfg.max_position)
    if cfg.max_gross is not None:
        weight = present.to(targets.dtype)
        gross = symbol_mean(targets.abs() * weight, weight @ _ones_like_symbols(weight))  # (...)
        scale = torch.where(
            gross > cfg.max_gross, cfg.max_gross / gross, torch.ones_like(gross)
        ).nan_to_num(1.0)
        targets = targets * scale.unsqueeze(-1)
    return targets


def fill_limit(limit: Tensor, present: Tensor) -> Tensor:
    """The most position units a bar may fill: 0 where absent or the volume is unknown."""
    return torch.where(present, limit.nan_to_num(0.0).clamp(min=0.0), 0.0)


def fill_bar(previous: Tensor, wanted: Tensor, limit: Tensor) -> Tensor:
    """Held after one bar: ``h = h_prev + clip(wanted − h_prev, −limit, limit)``."""
    return previous + torch.minimum(torch.maximum(wanted - previous, -limit), limit)


# --------------------------------------------------------------------------------------
# Costs and returns of the bar
# --------------------------------------------------------------------------------------


@dataclass
class BarUpdate:
    """Fills, costs and returns of bars ``[..., S]`` (``[B, T, S]`` paths or ``[N, S]``)."""

    fills: Tensor  # position units traded (signed)
    size: Tensor  # |fills|
    costs: dict[str, Tensor]  # COST_KINDS → charge as a return on the slot (positive = paid)
    known: Tensor  # bool: the return is known (only these enter the portfolio)
    count: Tensor  # [...] known symbols per bar
    gross: Tensor  # held · return (0 where unknown)
    charged: Tensor  # total cost (0 where unknown)
    net: Tensor  # gross − charged


def _require(tensor: Tensor | None, what: str, needed_by: str, fix: str) -> Tensor:
    if tensor is None:
        raise ValueError(f"simulation.{needed_by} needs {what}: {fix}")
    return tensor


def _trade_costs(
    costs: dict[str, Tensor],
    size: Tensor,
    slot: Tensor,
    cfg: SimulationConfig,
    volatility: Tensor | None,
    adv: Tensor | None,
) -> None:
    """Commission, fixed cost, spread and square-root impact of the fills ``size``."""
    zero = costs["commission"]
    if cfg.cost_bps:
        costs["commission"] = cfg.cost_bps / 1e4 * size
    if cfg.fixed_cost:
        costs["fixed"] = torch.where(size > _MIN_FILL, cfg.fixed_cost / slot, zero)
    if cfg.half_spread_bps or cfg.spread_vol_mult or cfg.impact_coef:
        sigma = zero
        if cfg.spread_vol_mult or cfg.impact_coef:
            sigma = _require(
                volatility,
                "per-bar volatility",
                "spread_vol_mult/impact_coef",
                "add a volatility column or keep realised_return so it can be estimated",
            ).to(size)
            sigma = sigma.nan_to_num(0.0)
        costs["spread"] = (cfg.half_spread_bps / 1e4 + cfg.spread_vol_mult * sigma) * size
        if cfg.impact_coef:
            daily = _require(
                adv,
                "average dollar volume",
                "impact_coef",
                "add a dollar_volume column (or volume and close) or set impact_coef=0",
            ).to(size)
            participation = torch.where(daily > 0, size * slot / daily, zero).nan_to_num(0.0)
            costs["impact"] = cfg.impact_coef * sigma * participation.sqrt() * size


def bar_update(
    held: Tensor,
    previous: Tensor,
    returns: Tensor,
    present: Tensor,
    slot: Tensor,
    cfg: SimulationConfig,
    *,
    volatility: Tensor | None = None,
    adv: Tensor | None = None,
    funding: Tensor | None = None,
    periods_per_year: float = 252.0,
) -> BarUpdate:
    """Everything a bar charges and earns once its fill is known.

    ``held``: position held over (t, t+1] after the bar's fill; ``previous``: held over
    (t−1, t]; ``returns``: simple return t → t+1, NaN where unknown; ``present``: bool, the
    symbol has a bar at t; ``slot``: currency per symbol (:func:`capital_slot`). Every
    tensor is ``[..., S]`` (or broadcastable): the arithmetic is elementwise per bar, so
    whole paths and single bars go through the same code.
    """
    fills = held - previous
    size = fills.abs()
    zero = torch.zeros_like(held)
    costs = dict.fromkeys(COST_KINDS, zero)
    _trade_costs(costs, size, slot, cfg, volatility, adv)
    if cfg.borrow_bps:
        costs["borrow"] = cfg.borrow_bps / 1e4 / periods_per_year * (-held).clamp(min=0.0)
    if cfg.leverage_funding_bps:
        rate = cfg.leverage_funding_bps / 1e4 / periods_per_year
        costs["leverage_funding"] = rate * (held.abs() - 1.0).clamp(min=0.0)
    if funding is not None:
        costs["funding"] = held * funding.to(held).nan_to_num(0.0)

    total_cost = costs["commission"]
    for kind in COST_KINDS[1:]:
        if costs[kind] is not zero:
            total_cost = total_cost + costs[kind]
    known = present & ~torch.isnan(returns)
    weight = known.to(held.dtype)
    count = weight @ _ones_like_symbols(weight)  # (...) symbols in the portfolio
    gross = torch.where(known, held * returns, 0.0)
    charged = total_cost * weight
    return BarUpdate(
        fills=fills,
        size=size,
        costs=costs,
        known=known,
        count=count,
        gross=gross,
        charged=charged,
        net=gross - charged,
    )
