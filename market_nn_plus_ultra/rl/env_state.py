"""The environment's running state as plain tensors, for an exact save and resume.

:meth:`~.env.VectorTradingEnv.state_dict` is made of these pieces: the order book of
orders still travelling and the reward shaper's per-env moments, peaks and CVaR rings.
Every value is a CPU tensor (or None), so ``torch.load(path, weights_only=True)`` reads
the saved state back; loading moves them to the env's device and checks their shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from ..simulation.step import OrderBook
from .reward import RewardShaper

__all__ = ["book_from_state", "book_state", "load_shaper_state", "restore", "shaper_state"]

_MOMENTS = ("mean", "second", "downside2", "decay")


def restore(state: Mapping[str, Any], key: str, like: Tensor) -> Tensor:
    """``state[key]`` on ``like``'s device and dtype, refusing a different shape."""
    if key not in state:
        raise ValueError(f"the env state has no {key!r} — pass a VectorTradingEnv.state_dict()")
    value = torch.as_tensor(state[key])
    if value.shape != like.shape:
        raise ValueError(
            f"the env state's {key!r} is {list(value.shape)} but this env needs "
            f"{list(like.shape)} — restore into an env built with the same num_envs, symbols, "
            "simulation and reward settings"
        )
    return value.to(device=like.device, dtype=like.dtype).clone()


def book_state(book: OrderBook | None) -> dict[str, Tensor] | None:
    """The order book's tensors (None without latency)."""
    if book is None:
        return None
    return {f.name: getattr(book, f.name).detach().cpu().clone() for f in fields(book)}


def book_from_state(state: Mapping[str, Any] | None, empty: OrderBook | None) -> OrderBook | None:
    """The book saved in ``state``, shaped and placed like ``empty`` (this env's fresh book)."""
    if (state is None) != (empty is None):
        raise ValueError(
            "the env state's order book does not match this env's simulation.latency_bars — "
            "restore into an env built with the same simulation settings"
        )
    if empty is None:
        return None
    return OrderBook(
        **{f.name: restore(state, f.name, getattr(empty, f.name)) for f in fields(empty)}
    )


def shaper_state(shaper: RewardShaper) -> dict[str, Tensor]:
    """Every per-env tensor of the reward shaper."""
    out = {
        f"{kind}_{name}": getattr(getattr(shaper, kind), name)
        for kind in ("sharpe", "sortino")
        for name in _MOMENTS
    }
    out.update(peak=shaper.peak, recent=shaper.recent, count=shaper.count)
    return {k: v.detach().cpu().clone() for k, v in out.items()}


def load_shaper_state(shaper: RewardShaper, state: Mapping[str, Any]) -> None:
    """Put a :func:`shaper_state` back into ``shaper`` (same envs and CVaR window)."""
    for kind in ("sharpe", "sortino"):
        moments = getattr(shaper, kind)
        for name in _MOMENTS:
            setattr(moments, name, restore(state, f"{kind}_{name}", getattr(moments, name)))
    shaper.peak = restore(state, "peak", shaper.peak)
    shaper.recent = restore(state, "recent", shaper.recent)
    shaper.count = restore(state, "count", shaper.count)
