"""What the look-ahead audit found, and how likely it was to find it (its power).

Power of the truncation test: a feature that looks one bar ahead changes, at a cut, only
on the last bar at or before the cut (that bar's value needed the bar after it). If the
feature peeks on a share ``p`` of bars, each tested bar exposes it with probability
``p``; with ``k`` distinct tested bars per symbol it escapes every one with
``P(miss) = (1 - p)^k``. The default number of cuts is the least ``k`` with
``1 - (1 - p)^k >= 0.95`` for ``p = 0.3``: ``ceil(log 0.05 / log 0.7) = 9``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .leakage_stored import StoredAudit

__all__ = [
    "DEFAULT_LEAK_RATE",
    "DEFAULT_POWER",
    "LEAK_COLUMNS",
    "AuditPower",
    "AuditReport",
    "choose_cuts",
    "cuts_for_power",
]

#: Columns of :attr:`AuditReport.leaks`, one row per (kind, column, symbol).
LEAK_COLUMNS = [
    "kind",
    "column",
    "symbol",
    "first_timestamp",
    "cut",
    "n_changed",
    "full_value",
    "truncated_value",
]
#: The audit's default target: catch a one-bar peek on 30% of bars 95% of the time.
DEFAULT_POWER = 0.95
DEFAULT_LEAK_RATE = 0.3


def cuts_for_power(power: float = DEFAULT_POWER, leak_rate: float = DEFAULT_LEAK_RATE) -> int:
    """Fewest cuts ``k`` with ``1 - (1 - leak_rate)^k >= power`` (9 for the defaults)."""
    if not 0 < power < 1 or not 0 < leak_rate < 1:
        raise ValueError(
            f"power {power} and leak rate {leak_rate} must both lie strictly between 0 and 1"
        )
    return math.ceil(math.log(1 - power) / math.log(1 - leak_rate) - 1e-12)


def choose_cuts(index: pd.MultiIndex, n: int, seed: int) -> tuple[list[pd.Timestamp], int]:
    """``n`` random cut timestamps past the first 20% and before the last bar, and ``k``.

    Each cut tests every symbol's last bar at or before it. Cuts are drawn so that each
    one tests a bar not tested yet for every symbol trading by then (two cuts on the
    same weekend would test an equity's Friday twice); where calendars do not allow it,
    a cut that tests a new bar of some symbol is taken. ``k``: the fewest distinct bars
    tested for any symbol (the ``k`` of the power).
    """
    stamps = index.get_level_values("timestamp")
    unique = stamps.unique().sort_values()
    lo, hi = int(0.2 * len(unique)), len(unique) - 1
    if n < 1 or hi - lo < 1:
        raise ValueError(
            f"leakage audit needs at least one cut inside the data: {len(unique)} timestamps "
            f"and --cuts {n} — use more data (data.start/data.end) or --cuts >= 1"
        )
    candidates = unique[lo:hi][np.random.default_rng(seed).permutation(hi - lo)]
    symbols = index.get_level_values("symbol")
    own = [stamps[symbols == s].sort_values() for s in pd.unique(symbols)]
    bars = np.stack([o.searchsorted(candidates, side="right") - 1 for o in own], axis=1)  # (C, S)
    tested: list[set[int]] = [set() for _ in own]
    picked: list[int] = []
    for strict in (True, False):
        for row in range(len(candidates)):
            if len(picked) == n:
                break
            trading = [j for j, bar in enumerate(bars[row]) if bar >= 0]
            fresh = [j for j in trading if bars[row, j] not in tested[j]]
            if row in picked or not fresh or (strict and len(fresh) < len(trading)):
                continue
            picked.append(row)
            for j in fresh:
                tested[j].add(int(bars[row, j]))
    cuts = sorted(candidates[i] for i in picked)
    return cuts, min(len(t) for t in tested)


@dataclass(frozen=True)
class AuditPower:
    """Power of the truncation test against a one-bar peek on ``leak_rate`` of bars.

    ``tested_bars``: distinct bars tested per symbol (the fewest over symbols: two cuts
    between the same two bars of a symbol test one bar of it).
    """

    cuts: int
    tested_bars: int
    leak_rate: float = DEFAULT_LEAK_RATE

    @property
    def miss(self) -> float:
        """``(1 - p)^k``: probability that every tested bar is a non-peeking one."""
        return (1.0 - self.leak_rate) ** self.tested_bars

    @property
    def power(self) -> float:
        return 1.0 - self.miss

    def describe(self) -> str:
        p, k = self.leak_rate, self.tested_bars
        return (
            f"a feature that looks one bar ahead on {p:.0%} of bars is caught with "
            f"probability 1 - (1 - {p:g})^{k} = {self.power:.1%} ({k} tested bars per "
            f"symbol from {self.cuts} cuts; raise --cuts for more)"
        )


@dataclass
class AuditReport:
    """Leaks found (empty when clean), the cuts used, what was checked and the power.

    ``leaks``: truncation and target findings (:data:`LEAK_COLUMNS`); ``stored``: the
    stored-data check (None when it was not run).
    """

    leaks: pd.DataFrame
    cuts: list[pd.Timestamp]
    checked: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    window: int = 0
    horizon: int = 0
    power: AuditPower | None = None
    stored: StoredAudit | None = None

    @property
    def ok(self) -> bool:
        """True when nothing leaked, recomputed or stored."""
        return self.leaks.empty and (self.stored is None or self.stored.findings.empty)

    @property
    def leaking_columns(self) -> list[str]:
        """Every recomputed column with at least one leak, in report order."""
        return list(dict.fromkeys(self.leaks["column"]))

    @property
    def leaking_stored(self) -> list[str]:
        """Every stored ``table.column`` with a finding, in report order."""
        if self.stored is None:
            return []
        found = self.stored.findings
        pairs = zip(found["table"], found["column"], strict=True)
        return list(dict.fromkeys(f"{t}.{c}" for t, c in pairs))

    def summary(self) -> str:
        """One line: what was checked at how many cuts, and what leaked."""
        n = sum(len(v) for v in self.checked.values())
        head = f"{n} columns checked at {len(self.cuts)} cuts (window {self.window}, "
        head += f"horizon {self.horizon})"
        if self.stored is not None:
            head += f", {sum(len(v) for v in self.stored.checked.values())} stored columns tested"
        if self.ok:
            return head + ": no look-ahead found"
        named = [*self.leaking_columns, *self.leaking_stored]
        return head + f": LEAKS in {', '.join(named)}"
