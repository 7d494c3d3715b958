"""Sequences for every-position supervision: ``L`` rows per item, a target at every row.

With ``training.supervision=all`` an item is the run of rows ``e − L + 1 .. e`` of one
symbol (``L = training.sequence_length``). The model reads it in one causal pass; each
position i reads at most ``windows.window`` rows behind it (``model.receptive_field``),
so position i of a sequence is exactly the window ending at that row — the windows
contract holds per position. A position is scored when

- it has at least ``min_context`` rows of the sequence behind it (itself included),
- its row lies in the split's rows, the bar exists with finite features, and its
  ``H`` targets are known and end before the split's ``target_limit`` (the purge).

Sequences of a split start at its first input row (a split shorter than ``L`` gets
sequences as long as it is: positions do not depend on where a sequence starts) and
follow at a stride of
``L − min_context + 1`` rows, so the scored positions of consecutive sequences tile the
split: each row is one target per epoch (the last sequence ends at the split's last
row and may overlap the one before). Like :class:`SlidingWindowDataset` everything is
index arithmetic over :class:`MarketTensors`: no ``[N, L, F]`` copy is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import supervision_of
from .dataset import (
    Normaliser,
    _stats_tensors,
    get_items,
    normalise_window,
    volatility_column,
)
from .splits import Split
from .tensors import MarketTensors, WindowsError

__all__ = ["SequenceDataset"]


class SequenceDataset(Dataset):
    """Items of ``sequence_length`` rows ending at row e, one symbol each.

    ``batch(indices)`` returns ``x [B, L, F]`` (normalised, 0 where ``mask`` is False),
    ``mask [B, L]``, ``y``/``y_mask [B, L, H]`` (``y_mask`` False at every position not
    scored), ``realised [B, L]`` (the simple return t → t+1 of each position),
    ``rows [B, L]`` (the row of each position), ``t_index [B]`` (end row),
    ``symbol_index [B]`` and, when the tensors have them, ``regime [B, L]``,
    ``volatility [B, L]`` (the raw ``realised_vol_*`` input) and ``context [B, L, C]``.
    """

    def __init__(
        self,
        tensors: MarketTensors,
        sequence_length: int,
        min_context: int,
        horizon: int | None = None,
        *,
        split: Split | None = None,
        normalise: str = "train_zscore",
        normaliser: Normaliser | None = None,
    ) -> None:
        horizon = tensors.horizon if horizon is None else horizon
        L = sequence_length
        if not 1 <= L <= tensors.n_rows:
            raise WindowsError(
                f"training.sequence_length={L} must lie in 1..{tensors.n_rows} (rows in the "
                "tensors) — shorten training.sequence_length or windows.window"
            )
        if not 1 <= min_context <= L:
            raise WindowsError(
                f"training.min_context={min_context} must lie in 1..{L} (the sequence length)"
            )
        if not 1 <= horizon <= tensors.horizon:
            raise WindowsError(
                f"windows.horizon={horizon} must lie in 1..{tensors.horizon} (target steps held)"
            )
        if normalise == "window_zscore":
            raise WindowsError(
                "windows.normalise=window_zscore is not causal within a sequence — use "
                "train_zscore or none with training.supervision=all"
            )
        if normalise == "train_zscore" and normaliser is None:
            raise WindowsError(
                "windows.normalise=train_zscore needs normaliser=fit_normaliser(tensors, "
                "train_split.input_rows)"
            )
        if split is not None:  # a split shorter than L gets shorter sequences, as valid
            L = max(min_context, min(L, split.rows.stop - max(0, split.input_rows.start)))
        self.tensors, self.sequence_length, self.min_context = tensors, L, min_context
        self.horizon, self.split, self.normalise = horizon, split, normalise
        self.normaliser = normaliser
        self.window = min_context  # rows of history a scored position needs (reports)
        self.stride = L - min_context + 1
        self._offsets = np.arange(-L + 1, 1)  # (L,) row offsets relative to the end row
        self._scored = self._scorable()  # (T, S) bool: a target this split may train on
        self._items = self._item_ends()
        self._stats = _stats_tensors(normaliser)
        self._vol = volatility_column(tensors.feature_names)

    @classmethod
    def from_config(
        cls,
        tensors: MarketTensors,
        cfg,  # the Config: windows and training sections
        *,
        split: Split | None = None,
        normaliser: Normaliser | None = None,
    ) -> SequenceDataset:
        """The dataset ``training.sequence_length``/``min_context`` and ``windows`` describe."""
        sup = supervision_of(cfg)
        return cls(
            tensors,
            sup.sequence_length,
            sup.min_context,
            cfg.windows.horizon,
            split=split,
            normalise=cfg.windows.normalise,
            normaliser=normaliser,
        )

    # ----------------------------------------------------------------------------------
    # Which positions and items exist
    # ----------------------------------------------------------------------------------

    def _scorable(self) -> np.ndarray:
        T, h, split = self.tensors, self.horizon, self.split
        ok = np.asarray(T.mask, dtype=bool) & np.all(T.target_mask[:, :, :h], axis=2)
        if split is not None:
            ok[: max(0, split.rows.start)] = False
            ok[max(0, split.rows.stop) :] = False
            if split.target_limit < T.n_rows:
                ok &= T.forward_row(h) < split.target_limit
        return ok

    def _item_ends(self) -> np.ndarray:
        """Flat ``e * S + s`` of every item with at least one scored position."""
        T, L = self.tensors, self.sequence_length
        self._first_scored = np.full(T.n_rows, T.n_rows, dtype=np.int64)  # by end row
        first = L - 1
        last = T.n_rows - 1
        if self.split is not None:
            first = max(first, self.split.input_rows.start + L - 1)
            last = min(last, self.split.rows.stop - 1)
        if last < first:
            return np.empty(0, dtype=np.int64)
        ends = np.arange(first, last + 1, self.stride)
        lo = ends - L + self.min_context  # first scored row of each end
        if ends[-1] != last:  # the split's tail: overlaps the sequence before, scored after it
            lo = np.append(lo, ends[-1] + 1)
            ends = np.append(ends, last)
        self._first_scored[ends] = lo
        cum = np.concatenate([np.zeros((1, T.n_symbols), np.int64), np.cumsum(self._scored, 0)])
        counts = cum[ends + 1] - cum[lo]  # (E, S) scored positions of each (end, symbol)
        e, s = np.nonzero(counts > 0)
        return (ends[e] * T.n_symbols + s).astype(np.int64)

    def __len__(self) -> int:
        return len(self._items)

    def item_keys(
        self, indices: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(end_row, symbol_index)`` of items (all items by default)."""
        flat = self._items if indices is None else self._items[self._check(indices)]
        S = self.tensors.n_symbols
        return flat // S, flat % S

    def windows_per_symbol(self) -> np.ndarray:
        """int64 ``[S]``: scored positions of each symbol over all items (its targets)."""
        e, s = self.item_keys()
        S = self.tensors.n_symbols
        if not len(e):
            return np.zeros(S, dtype=np.int64)
        scored = self._position_mask(e, s)  # (N, L)
        return np.bincount(s, weights=scored.sum(axis=1), minlength=S).astype(np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held besides the tensors: O(T·S) index arrays."""
        arrays = (self._items, self._scored, self._offsets, self._first_scored)
        return int(sum(a.nbytes for a in arrays))

    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self._items)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"sequence index out of range: the dataset has {n} sequences")
        return np.where(idx < 0, idx + n, idx)

    def _position_mask(self, e: np.ndarray, s: np.ndarray) -> np.ndarray:
        """bool ``[B, L]``: which positions of items (e, s) are scored."""
        rows = e[:, None] + self._offsets  # (B, L)
        # from min_context rows of context on, and never a row an earlier item scores
        return self._scored[rows, s[:, None]] & (rows >= self._first_scored[e][:, None])

    # ----------------------------------------------------------------------------------
    # Gathering
    # ----------------------------------------------------------------------------------

    def __getitem__(
        self, index: int | Sequence[int] | np.ndarray | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return get_items(self, index)

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Gather many sequences at once (leading batch axis ``B``)."""
        T, h = self.tensors, self.horizon
        e, s = self.item_keys(indices)
        rows = e[:, None] + self._offsets  # (B, L)
        cell = (rows, s[:, None])
        m = torch.from_numpy(np.ascontiguousarray(T.mask[cell]))  # (B, L)
        scored = self._position_mask(e, s)  # (B, L)
        ym = T.target_mask[cell][..., :h] & scored[..., None]  # (B, L, H)
        y = np.where(ym, T.targets[cell][..., :h], 0.0).astype(np.float32)
        realised = T.realised_at(rows, s[:, None])  # (B, L)
        x = torch.from_numpy(np.ascontiguousarray(T.inputs[cell]))  # (B, L, F)
        out = {
            "x": self._norm(x, m, s, "inputs"),
            "y": torch.from_numpy(y),
            "mask": m,
            "y_mask": torch.from_numpy(np.ascontiguousarray(ym)),
            "realised": torch.from_numpy(np.where(ym[..., 0], realised, 0.0).astype(np.float32)),
            "rows": torch.from_numpy(rows),
            "t_index": torch.from_numpy(e),
            "symbol_index": torch.from_numpy(s),
        }
        if T.regimes is not None:
            out["regime"] = torch.from_numpy(np.asarray(T.regimes[cell], dtype=np.int64))
        if self._vol is not None:  # the raw input (normalising returns a new tensor)
            out["volatility"] = x[..., self._vol].float().nan_to_num() * m  # (B, L)
        if T.context is not None:
            c = torch.from_numpy(np.ascontiguousarray(T.context[cell]))  # (B, L, C)
            out["context"] = self._norm(c, m, s, "context")
        return out

    def _norm(self, x: torch.Tensor, m: torch.Tensor, s: np.ndarray, stream: str) -> torch.Tensor:
        mean = std = None
        if self.normalise == "train_zscore":
            mean, std = self._stats[stream]  # (S, F)
            mean, std = mean[s].unsqueeze(1), std[s].unsqueeze(1)  # (B, 1, F)
        return normalise_window(x, m, self.normalise, mean, std)
