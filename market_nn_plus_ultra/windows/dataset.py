"""Sliding windows over :class:`MarketTensors` by index arithmetic: no ``[N, W, F]`` copy.

The dataset keeps only the list of valid window *end cells* (one int per window), so its
memory is O(T·S) on top of the tensors' O(T·S·F). Each request gathers the rows it needs
(``inputs[t-W+1 .. t]``) with one advanced-indexing call per batch, normalises them and
returns torch tensors. ``dataset[i]`` returns one item; ``dataset[list_of_i]`` and
:meth:`SlidingWindowDataset.batch` gather a whole batch at once, so a DataLoader with
``batch_size=None, sampler=BatchSampler(...)`` feeds a GPU without per-item Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from .splits import Split
from .tensors import MarketTensors, WindowsError

if TYPE_CHECKING:
    from ..config import WindowsConfig

__all__ = [
    "Normaliser",
    "SlidingWindowDataset",
    "fit_normaliser",
    "normalise_window",
    "volatility_column",
]

_MODES = ("window_zscore", "train_zscore", "none")
_EPS = 1e-6  # smallest std a z-score divides by: constant features map to 0, not inf
_CHUNK_ELEMENTS = 1 << 22  # float64 values per pass of fit_normaliser (32 MiB)


@dataclass(frozen=True)
class Normaliser:
    """Per-(symbol, feature) mean and std fitted on training rows only.

    ``mean``/``std``: float32 ``[S, F]`` (``context_*``: ``[S, C]``). Population std;
    symbols with fewer than 2 valid training rows use the pooled statistics of all symbols.
    """

    mean: np.ndarray
    std: np.ndarray
    rows: range
    context_mean: np.ndarray | None = None
    context_std: np.ndarray | None = None


def _moments(values: np.ndarray, mask: np.ndarray, rows: range) -> tuple[np.ndarray, np.ndarray]:
    """Masked per-(symbol, feature) mean and std of ``values[rows]`` in two chunked passes."""
    S, F = values.shape[1:]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, S * F))
    count = np.zeros(S)
    total = np.zeros((S, F))
    starts = range(rows.start, rows.stop, chunk)
    for lo in starts:  # chunks bound memory when the tensors are memory-mapped
        m = np.asarray(mask[lo : min(lo + chunk, rows.stop)], dtype=np.float64)  # (c, S)
        x = np.asarray(values[lo : lo + len(m)], dtype=np.float64)  # (c, S, F)
        count += m.sum(axis=0)
        total += np.einsum("csf,cs->sf", x, m)
    if count.sum() == 0:
        raise WindowsError(
            f"no valid rows in rows {rows.start}..{rows.stop - 1} to fit the normaliser — "
            "pass the training split's input_rows, or use windows.normalise=window_zscore"
        )
    mean = total / np.maximum(count, 1)[:, None]
    squares = np.zeros((S, F))
    for lo in starts:
        m = np.asarray(mask[lo : min(lo + chunk, rows.stop)], dtype=np.float64)
        x = np.asarray(values[lo : lo + len(m)], dtype=np.float64)
        squares += np.einsum("csf,cs->sf", (x - mean) ** 2, m)
    pooled_mean = total.sum(axis=0) / count.sum()
    pooled_var = (squares + count[:, None] * (mean - pooled_mean) ** 2).sum(axis=0) / count.sum()
    var = squares / np.maximum(count, 1)[:, None]
    few = count < 2
    mean[few], var[few] = pooled_mean, pooled_var
    std = np.sqrt(var)
    std[std < _EPS] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def fit_normaliser(tensors: MarketTensors, rows: range) -> Normaliser:
    """Fit z-score statistics on ``rows`` only (pass ``train_split.input_rows``).

    Only rows where ``tensors.mask`` is True count; rows outside ``rows`` are never read.
    """
    if not isinstance(rows, range) or rows.step != 1 or not rows:
        raise WindowsError(f"fit_normaliser needs a non-empty contiguous range of rows, got {rows}")
    rows = range(max(0, rows.start), min(rows.stop, tensors.n_rows))
    mean, std = _moments(tensors.inputs, tensors.mask, rows)
    ctx_mean = ctx_std = None
    if tensors.context is not None and tensors.context.shape[2]:
        ctx_mean, ctx_std = _moments(tensors.context, tensors.mask, rows)
    return Normaliser(mean, std, rows, ctx_mean, ctx_std)


def _zscore(
    x: torch.Tensor, m: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None, mode: str
) -> torch.Tensor:
    """Normalise ``x`` ``[..., W, F]`` over its valid rows ``m`` ``[..., W]``; 0 where masked."""
    mf = m.unsqueeze(-1).to(x.dtype)  # (..., W, 1)
    if mode == "window_zscore":
        n = mf.sum(dim=-2, keepdim=True).clamp_min(1.0)  # (..., 1, 1)
        mu = (x * mf).sum(dim=-2, keepdim=True) / n  # (..., 1, F)
        var = (((x - mu) * mf) ** 2).sum(dim=-2, keepdim=True) / n
        x = (x - mu) / var.sqrt().clamp_min(_EPS)
    elif mode == "train_zscore":
        x = (x - mean) / std
    return x * mf


def volatility_column(feature_names: Sequence[str]) -> int | None:
    """Index of the first ``realised_vol_*`` input (the market state's volatility), or None."""
    return next((i for i, n in enumerate(feature_names) if n.startswith("realised_vol_")), None)


def get_items(dataset, index: int | Sequence[int] | np.ndarray | torch.Tensor | slice):
    """``dataset[index]`` of the window and sequence datasets: one item (an int) without
    the batch axis, or many (a list, array, tensor or slice) through ``dataset.batch``."""
    if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
        return {k: v[0] for k, v in dataset.batch([int(index)]).items()}
    if isinstance(index, slice):
        index = np.arange(len(dataset))[index]
    if torch.is_tensor(index):
        index = index.cpu().numpy()
    return dataset.batch(index)


def normalise_window(
    x: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalise windows ``x [..., W, F]`` with valid rows ``mask [..., W]`` as training does.

    ``mode`` is ``windows.normalise``: ``window_zscore`` (each window by its own valid
    rows), ``train_zscore`` (``mean``/``std`` broadcastable to ``[..., 1, F]``, from
    :func:`fit_normaliser`) or ``none``. Masked rows come out as 0.
    """
    if mode not in _MODES:
        raise WindowsError(f"windows.normalise={mode!r}: use one of {', '.join(_MODES)}")
    if mode == "train_zscore" and (mean is None or std is None):
        raise WindowsError("windows.normalise=train_zscore needs the training mean and std")
    return _zscore(x, mask, mean, std, mode)


class SlidingWindowDataset(Dataset):
    """Windows ending at row t (inclusive): inputs rows ``t-W+1 .. t``, targets ``targets[t]``.

    Items are dicts of torch tensors. ``symbols_per_item="one"``: ``x`` ``[W, F]``,
    ``mask`` ``[W]``, ``y``/``y_mask`` ``[H]``, ``realised`` scalar (the *simple* return
    t → t+1 whatever ``tensors.target`` is: what a position held over (t, t+1] earns),
    ``t_index``/``symbol_index`` scalars, ``regime`` (label at row t), ``context``
    ``[W, C]``. ``"all"``: one more leading symbol axis (``x`` ``[S, W, F]``, ``y``
    ``[S, H]``, ``realised`` ``[S]``, ``symbol_index`` ``[S]``). ``x`` is 0 where ``mask``
    is False; ``y`` and ``realised`` are 0 where ``y_mask`` (its first step) is False.

    Indexable windows: the end cell is valid (``tensors.mask``), has W rows of history
    (``calendar="union"``: union rows; ``"own"``: the symbol's own last W bars), its end row
    lies in ``split.rows`` and its targets are complete and end before
    ``split.target_limit`` (unless ``require_targets=False``, for inference on the newest
    bars). ``stride`` keeps every stride-th end row (own bar under ``"own"``).
    """

    def __init__(
        self,
        tensors: MarketTensors,
        window: int,
        horizon: int | None = None,
        *,
        stride: int = 1,
        symbols_per_item: str = "one",
        normalise: str = "window_zscore",
        normaliser: Normaliser | None = None,
        split: Split | None = None,
        calendar: str = "union",
        require_targets: bool = True,
    ) -> None:
        horizon = tensors.horizon if horizon is None else horizon
        _check_args(
            tensors, window, horizon, stride, symbols_per_item, normalise, normaliser, calendar
        )
        self.tensors, self.window, self.horizon, self.stride = tensors, window, horizon, stride
        self.symbols_per_item, self.normalise, self.calendar = symbols_per_item, normalise, calendar
        self.normaliser, self.split = normaliser, split
        self._offsets = np.arange(-window + 1, 1)  # (W,) row offsets of a window, relative to t
        self._rank = self._bars = self._bar_offsets = None
        valid = self._valid_cells(require_targets)
        index_dtype = np.int32 if valid.size < 2**31 else np.int64
        if symbols_per_item == "one":
            self._items = np.flatnonzero(valid).astype(index_dtype)  # t * S + s
            self._valid = None
        else:
            self._items = np.flatnonzero(valid.any(axis=1)).astype(index_dtype)  # t
            self._valid = valid  # (T, S): which symbols of an item have a target
        self._stats = _stats_tensors(normaliser)
        self._vol = volatility_column(tensors.feature_names)

    @classmethod
    def from_config(
        cls,
        tensors: MarketTensors,
        cfg: WindowsConfig,
        *,
        split: Split | None = None,
        normaliser: Normaliser | None = None,
        require_targets: bool = True,
    ) -> SlidingWindowDataset:
        """The dataset ``cfg`` (the ``windows`` config section) describes."""
        return cls(
            tensors,
            cfg.window,
            cfg.horizon,
            stride=cfg.stride,
            symbols_per_item=cfg.symbols_per_item,
            normalise=cfg.normalise,
            normaliser=normaliser,
            split=split,
            calendar=cfg.calendar,
            require_targets=require_targets,
        )

    # ----------------------------------------------------------------------------------
    # Which windows exist
    # ----------------------------------------------------------------------------------

    def _valid_cells(self, require_targets: bool) -> np.ndarray:
        """bool ``[T, S]``: a window may end at (t, s)."""
        t, W, h, split = self.tensors, self.window, self.horizon, self.split
        valid = np.array(t.mask, dtype=bool)  # (T, S), a copy we may edit
        if require_targets:
            valid &= np.all(t.target_mask[:, :, :h], axis=2)
        if split is not None:
            valid[: max(0, split.rows.start)] = False
            valid[max(0, split.rows.stop) :] = False
            if require_targets and split.target_limit < t.n_rows:
                ahead = t.forward_row(h)  # (T, S) row of the last target bar
                valid &= ahead < split.target_limit
        if self.calendar == "union":
            valid[: W - 1] = False
            valid[(np.arange(t.n_rows) - (W - 1)) % self.stride != 0] = False
            return valid
        self._rank = t.bar_rank()  # (T, S) own-bar index k of each cell
        self._bars, self._bar_offsets = t.own_bars()
        valid &= (self._rank >= W - 1) & ((self._rank - (W - 1)) % self.stride == 0)
        if split is not None:  # own windows may reach back past the split's first input row
            rows, syms = np.nonzero(valid)
            first = self._bars[self._bar_offsets[syms] + self._rank[rows, syms] - W + 1]
            early = first < split.input_rows.start
            valid[rows[early], syms[early]] = False
        return valid

    def __len__(self) -> int:
        return len(self._items)

    def windows_per_symbol(self) -> np.ndarray:
        """int64 ``[S]``: the windows of each symbol (``"all"``: items where it has a target)."""
        S = self.tensors.n_symbols
        if self.symbols_per_item == "all":
            return np.count_nonzero(self._valid[self._items], axis=0).astype(np.int64)
        return np.bincount(self._items % S, minlength=S).astype(np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes the dataset holds besides the tensors (index arrays: O(T·S), not O(N·W·F))."""
        extra = [self._items, self._valid, self._rank, self._bars, self._offsets]
        return int(sum(a.nbytes for a in extra if a is not None))

    def item_keys(
        self, indices: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(t_index, symbol_index)`` of items (all items by default); -1 symbol for "all"."""
        flat = self._items if indices is None else self._items[self._check(indices)]
        if self.symbols_per_item == "all":
            return flat.astype(np.int64), np.full(len(flat), -1, dtype=np.int64)
        S = self.tensors.n_symbols
        return (flat // S).astype(np.int64), (flat % S).astype(np.int64)

    def input_rows(self, t: np.ndarray, s: np.ndarray) -> np.ndarray:
        """int64 ``[B, W]``: the rows a window ending at (t, s) reads, oldest first."""
        if self.calendar == "union":
            return np.asarray(t, dtype=np.int64)[:, None] + self._offsets
        pos = self._bar_offsets[s] + self._rank[t, s]  # (B,) index of bar t in _bars
        return self._bars[pos[:, None] + self._offsets].astype(np.int64)

    # ----------------------------------------------------------------------------------
    # Gathering
    # ----------------------------------------------------------------------------------

    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self._items)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"window index out of range: the dataset has {n} windows")
        return np.where(idx < 0, idx + n, idx)

    def __getitem__(
        self, index: int | Sequence[int] | np.ndarray | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return get_items(self, index)

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Gather many windows at once: every value gets a leading batch axis ``B``."""
        idx = self._check(indices)
        t, s = self.item_keys(idx)
        T = self.tensors
        h = self.horizon
        if self.symbols_per_item == "one":
            rows = self.input_rows(t, s)  # (B, W)
            cell = (rows, s[:, None])
            x, m = T.inputs[cell], T.mask[cell]  # (B, W, F), (B, W)
            y, ym = T.targets[t, s, :h], T.target_mask[t, s, :h]  # (B, H)
            realised = T.realised_at(t, s)  # (B,)
            symbol = torch.from_numpy(s)
        else:
            rows = t[:, None] + self._offsets  # (B, W)
            x = T.inputs[rows].transpose(0, 2, 1, 3)  # (B, W, S, F) -> (B, S, W, F)
            m = T.mask[rows].transpose(0, 2, 1)  # (B, S, W)
            y = T.targets[t, :, :h]  # (B, S, H)
            ym = T.target_mask[t, :, :h] & self._valid[t][:, :, None]
            every = np.arange(T.n_symbols)
            realised = T.realised_at(t[:, None], every[None, :])  # (B, S)
            symbol = torch.arange(T.n_symbols).expand(len(t), -1)
        m = torch.from_numpy(np.ascontiguousarray(m))
        x = torch.from_numpy(np.ascontiguousarray(x))
        out = {
            "x": self._norm(x, m, s, "inputs"),
            "y": torch.from_numpy(np.where(ym, y, 0.0).astype(np.float32)),
            "mask": m,
            "y_mask": torch.from_numpy(np.ascontiguousarray(ym)),
            "realised": torch.from_numpy(np.where(ym[..., 0], realised, 0.0).astype(np.float32)),
            "t_index": torch.from_numpy(t),
            "symbol_index": symbol,
        }
        if self._vol is not None:  # market state: the raw realised_vol_* input per row
            out["volatility"] = x[..., self._vol].float().nan_to_num() * m  # (B, [S,] W)
        if T.regimes is not None:
            regime = T.regimes[t, s] if self.symbols_per_item == "one" else T.regimes[t]
            out["regime"] = torch.from_numpy(np.asarray(regime, dtype=np.int64))
        if T.context is not None:
            if self.symbols_per_item == "one":
                c = T.context[rows, s[:, None]]  # (B, W, C)
            else:
                c = T.context[rows].transpose(0, 2, 1, 3)  # (B, S, W, C)
            out["context"] = self._norm(torch.from_numpy(np.ascontiguousarray(c)), m, s, "context")
        return out

    def _norm(self, x: torch.Tensor, m: torch.Tensor, s: np.ndarray, stream: str) -> torch.Tensor:
        mean = std = None
        if self.normalise == "train_zscore":
            mean, std = self._stats[stream]  # (S, F)
            if self.symbols_per_item == "one":
                mean, std = mean[s].unsqueeze(1), std[s].unsqueeze(1)  # (B, 1, F)
            else:
                mean, std = mean.unsqueeze(1), std.unsqueeze(1)  # (S, 1, F), broadcast over B
        return _zscore(x, m, mean, std, self.normalise)


def _stats_tensors(normaliser: Normaliser | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if normaliser is None:
        return {}
    stats = {"inputs": (torch.from_numpy(normaliser.mean), torch.from_numpy(normaliser.std))}
    if normaliser.context_mean is not None:
        stats["context"] = (
            torch.from_numpy(normaliser.context_mean),
            torch.from_numpy(normaliser.context_std),
        )
    return stats


def _check_args(
    tensors: MarketTensors,
    window: int,
    horizon: int,
    stride: int,
    symbols_per_item: str,
    normalise: str,
    normaliser: Normaliser | None,
    calendar: str,
) -> None:
    if not 1 <= window <= tensors.n_rows:
        raise WindowsError(
            f"windows.window={window} must lie in 1..{tensors.n_rows} (rows in the tensors)"
        )
    if not 1 <= horizon <= tensors.horizon:
        raise WindowsError(
            f"windows.horizon={horizon} must lie in 1..{tensors.horizon}: the tensors hold "
            f"{tensors.horizon} target steps — rebuild them with horizon={horizon}"
        )
    if stride < 1:
        raise WindowsError(f"windows.stride must be >= 1, got {stride}")
    if symbols_per_item not in ("one", "all"):
        raise WindowsError(f"windows.symbols_per_item={symbols_per_item!r}: use 'one' or 'all'")
    if normalise not in _MODES:
        raise WindowsError(f"windows.normalise={normalise!r}: use one of {', '.join(_MODES)}")
    if calendar not in ("union", "own"):
        raise WindowsError(f"windows.calendar={calendar!r}: use 'union' or 'own'")
    if calendar == "own" and symbols_per_item == "all":
        raise WindowsError(
            "windows.calendar=own needs windows.symbols_per_item=one: multi-symbol items share "
            "the union calendar"
        )
    if normalise == "train_zscore":
        if normaliser is None:
            raise WindowsError(
                "windows.normalise=train_zscore needs normaliser=fit_normaliser(tensors, "
                "train_split.input_rows), fitted on the training rows only"
            )
        if normaliser.mean.shape != (tensors.n_symbols, tensors.n_features):
            raise WindowsError(
                f"normaliser was fitted on [S, F] = {normaliser.mean.shape}, the tensors are "
                f"{(tensors.n_symbols, tensors.n_features)} — refit it on these tensors"
            )
        if tensors.context is not None and normaliser.context_mean is None:
            raise WindowsError("normaliser has no context statistics — refit it on these tensors")
