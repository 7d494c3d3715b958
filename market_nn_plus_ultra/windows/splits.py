"""Purged chronological splits of window end rows (train → val → test, and walk-forward).

Rows are union-calendar rows ``0..T-1``. A window ending at row t reads inputs
``t-W+1 .. t`` and targets ``t+1 .. t+H``. Between a split A and the next split B::

    A's last end row a │ A's targets a+1..a+H │ embargo rows │ B's inputs b-W+1..b │ B's first end row b

so ``b = a + H + embargo + W``: no target of A lies in B's inputs or targets, and
``embargo`` further rows (default ``max(H, W)``) that nobody reads absorb features whose
look-back would otherwise carry A's target rows into B's first inputs. On ragged
calendars a symbol's h-th next bar can lie more than h rows ahead; each split therefore
carries ``target_limit`` and the dataset drops windows whose targets reach it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from .tensors import WindowsError

__all__ = ["Split", "default_embargo", "purged_splits", "walk_forward_splits"]


@dataclass(frozen=True)
class Split:
    """One split: the window end rows it owns and the rows those windows may read.

    ``rows``: end rows (a window ending at t ∈ rows is in the split). ``target_limit``:
    targets must lie in rows ``< target_limit`` (the purge before the next split).
    """

    name: str
    rows: range
    window: int
    horizon: int
    target_limit: int

    @property
    def input_rows(self) -> range:
        """Rows the split's inputs read: ``rows.start - W + 1 .. rows.stop - 1``."""
        return range(max(0, self.rows.start - self.window + 1), self.rows.stop)

    @property
    def target_rows(self) -> range:
        """Rows the split's targets read on a shared calendar: ``rows.start + 1 .. stop - 1 + H``."""
        if not self.rows:
            return range(self.rows.start, self.rows.start)
        return range(self.rows.start + 1, self.rows.stop + self.horizon)

    def __len__(self) -> int:
        return len(self.rows)


def default_embargo(window: int, horizon: int) -> int:
    """The embargo used when none is given: ``max(horizon, window)`` rows."""
    return max(int(horizon), int(window))


def _check(window: int, horizon: int, embargo: int | None) -> int:
    if window < 1:
        raise WindowsError(f"windows.window must be >= 1 (rows per input window), got {window}")
    if horizon < 1:
        raise WindowsError(f"windows.horizon must be >= 1 (forward bars per target), got {horizon}")
    if embargo is None:
        return default_embargo(window, horizon)
    if embargo < 0:
        raise WindowsError(
            f"windows.embargo must be >= 0 rows (or null for max(H, W)), got {embargo}"
        )
    return int(embargo)


def _sizes(usable: int, fractions: list[float]) -> list[int]:
    """Rows per split: val/test get floor(usable · fraction), train the rest."""
    tail = [int(usable * f) for f in fractions[1:]]
    return [usable - sum(tail), *tail]


def purged_splits(
    n_rows: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    *,
    window: int,
    horizon: int,
    embargo: int | None = None,
) -> tuple[Split, Split, Split]:
    """Chronological ``(train, val, test)`` splits of window end rows, purged and embargoed.

    The fractions share the end rows left after the purge gaps (``H + embargo + W - 1``
    rows at each boundary); a fraction of 0 gives an empty split and no gap. Raises
    :class:`WindowsError` naming the rows needed when ``n_rows`` is too short.
    """
    embargo = _check(window, horizon, embargo)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise WindowsError(f"windows.{name} must lie in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise WindowsError(
            f"windows.val_fraction + windows.test_fraction = {val_fraction + test_fraction:g} "
            "leaves no training rows — keep their sum below 1, e.g. 0.15 + 0.15"
        )
    fractions = [1.0 - val_fraction - test_fraction, val_fraction, test_fraction]
    active = [f > 0 for f in fractions]
    gap = horizon + embargo + window - 1
    first, stop = window - 1, n_rows - horizon  # end rows with full history and H rows ahead
    usable = stop - first - gap * (sum(active) - 1)
    if (
        usable < 1
        or min(s for s, a in zip(_sizes(usable, fractions), active, strict=True) if a) < 1
    ):
        least = max([sum(active)] + [math.ceil(1 / f) for f in fractions[1:] if f > 0])
        while min(s for s, a in zip(_sizes(least, fractions), active, strict=True) if a) < 1:
            least += 1  # at most a few steps: float rounding in floor(least · fraction)
        need = least + first + horizon + gap * (sum(active) - 1)
        raise WindowsError(
            f"{n_rows} rows are too few for purged splits with window={window}, "
            f"horizon={horizon}, embargo={embargo}, val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}: at least {need} rows are needed (each split "
            f"boundary costs {gap} rows = horizon + embargo + window - 1). Load more history "
            "or shorten windows.window / windows.horizon / windows.embargo."
        )
    out, start = [], first
    for name, size, is_active in zip(
        ("train", "val", "test"), _sizes(usable, fractions), active, strict=True
    ):
        size = size if is_active else 0
        out.append((name, range(start, start + size)))
        start += size + (gap if is_active else 0)
    splits = []
    for i, (name, rows) in enumerate(out):
        later = any(len(r) for _, r in out[i + 1 :])
        limit = rows.stop + horizon if rows and later else n_rows
        splits.append(Split(name, rows, window, horizon, limit))
    return splits[0], splits[1], splits[2]


def walk_forward_splits(
    n_rows: int,
    train: int,
    test: int,
    step: int | None = None,
    *,
    window: int,
    horizon: int,
    embargo: int | None = None,
    expanding: bool = False,
) -> Iterator[tuple[Split, Split]]:
    """Purged walk-forward folds ``(train, test)``: ``train`` then ``test`` end rows each.

    Fold k's training end rows start at ``W - 1 + k·step`` (or stay at ``W - 1`` when
    ``expanding``) and its test rows begin ``H + embargo + W - 1`` rows after them; folds
    advance by ``step`` (default ``test``, so test blocks tile the data) while the test
    block still has H rows ahead.
    """
    embargo = _check(window, horizon, embargo)
    step = test if step is None else step
    for name, value in (("train", train), ("test", test), ("step", step)):
        if value < 1:
            raise WindowsError(f"walk-forward `{name}` must be >= 1 end rows, got {value}")
    gap = horizon + embargo + window - 1
    first, stop = window - 1, n_rows - horizon
    need = first + train + gap + test + horizon
    if n_rows < need:
        raise WindowsError(
            f"{n_rows} rows are too few for one walk-forward fold with train={train}, "
            f"test={test}, window={window}, horizon={horizon}, embargo={embargo}: at least "
            f"{need} rows are needed. Load more history or shrink train/test/window/embargo."
        )
    n_folds = (stop - (first + train + gap + test)) // step + 1
    for k in range(n_folds):
        train_stop = first + train + k * step
        train_rows = range(first if expanding else first + k * step, train_stop)
        test_rows = range(train_stop + gap, train_stop + gap + test)
        yield (
            Split(f"fold{k}/train", train_rows, window, horizon, train_stop + horizon),
            Split(f"fold{k}/test", test_rows, window, horizon, n_rows),
        )
