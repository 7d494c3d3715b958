"""Where episodes start: the allowed start rows, their high-volatility third, seeded draws.

A start row is *high-volatility* when the market's σ at that row — the mean over the
symbols of the simulator's σ at t (:meth:`~.market.EnvMarket.start_volatility`), which
uses returns up to t only — is in the top third of the allowed start rows' σ: the
``ceil(n / 3)`` largest, ties going to the earlier row; rows where no σ is known yet count
as calm. ``high_vol_share`` then sets the share of episodes started in that third (None:
every allowed row equally likely, so about a third of starts are high-volatility).
Everything stays on the device: a draw is a few tensor operations on the env's generator.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "HIGH_VOL_FRACTION",
    "UNIFORM_STARTS",
    "EpisodeStarts",
    "StageSettings",
    "check_settings",
]

#: The share of the allowed start rows that counts as high-volatility.
HIGH_VOL_FRACTION = 1.0 / 3.0

#: ``env.configure(high_vol_share=UNIFORM_STARTS)`` returns to uniform starts (None keeps).
UNIFORM_STARTS = "uniform"


@dataclass(frozen=True)
class StageSettings:
    """What a curriculum stage sets (``VectorTradingEnv.stage_settings``)."""

    episode_length: int  # bars per episode
    cost_multiplier: float  # scale of every execution charge rate
    window: int  # bars of history per observation
    high_vol_share: float | None  # share of high-volatility starts; None: uniform starts


def check_settings(settings: StageSettings, max_window: int) -> StageSettings:
    """``settings`` as plain ints and floats, refusing any out of range with its bound."""
    length, window, m, share = (
        settings.episode_length, settings.window, settings.cost_multiplier,
        settings.high_vol_share,
    )  # fmt: skip
    if not _is_int(length) or length < 1:
        raise ValueError(f"episode_length must be an integer >= 1, got {length!r}")
    if not _is_int(window) or not 1 <= window <= max_window:
        raise ValueError(
            f"window={window!r} must be an integer in 1..{max_window} (windows.window): "
            "observations are cut from the configured windows — lower the window or raise "
            "windows.window"
        )
    if not (_is_real(m) and math.isfinite(m) and m >= 0):
        raise ValueError(f"cost_multiplier must be a finite number >= 0, got {m!r}")
    if share is not None and not (_is_real(share) and 0.0 <= share <= 1.0):
        raise ValueError(
            f"high_vol_share must lie in [0, 1] (or be {UNIFORM_STARTS!r} for uniform starts), "
            f"got {share!r}"
        )
    return StageSettings(
        int(length), float(m), int(window), None if share is None else float(share)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class EpisodeStarts:
    """The allowed start rows ``rows [n]`` (ascending) split into ``high`` and ``calm``.

    ``sigma`` is the market's σ ``[T]`` on the rows' device (NaN = unknown).
    """

    def __init__(self, rows: Tensor, sigma: Tensor) -> None:
        n = len(rows)
        vol = sigma.index_select(0, rows).nan_to_num(nan=-math.inf)  # (n,) unknown σ: calm
        order = torch.sort(vol, descending=True, stable=True).indices  # ties: earlier row first
        is_high = torch.zeros(n, dtype=torch.bool, device=rows.device)
        is_high[order[: math.ceil(n * HIGH_VOL_FRACTION)]] = True
        self.rows, self.is_high = rows, is_high
        self.high, self.calm = rows[is_high], rows[~is_high]

    def draw(self, n: int, generator: torch.Generator, share: float | None) -> Tensor:
        """``n`` start rows ``[n]``: uniform over ``rows`` (``share`` None), else each env's
        start is high-volatility with probability ``share`` (0 and 1 exactly none / all;
        with no calm row — a single allowed start — every start is a high one)."""
        if share is None:
            return _pick(self.rows, n, generator)
        device = self.rows.device
        coin = torch.rand(n, generator=generator, device=device) < share  # (n,)
        high = _pick(self.high, n, generator)
        calm = _pick(self.calm, n, generator) if len(self.calm) else high
        return torch.where(coin, high, calm)


def _pick(rows: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` entries of ``rows`` drawn uniformly with replacement."""
    index = torch.randint(len(rows), (n,), generator=generator, device=rows.device)
    return rows[index]
