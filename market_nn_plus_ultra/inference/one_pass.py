"""One-pass inference: each symbol's history through the model in long chunks.

A model with a bounded look-back (``model.receptive_field = W``, what
``training.supervision=all`` trains) computes the output at row t from rows
``t − W + 1 .. t`` only, the same function wherever its input starts. So instead of one
forward pass per window — every bar encoded W times — :func:`run_one_pass` cuts each
symbol's rows into chunks of ``P`` outputs, each chunk read with the ``W − 1`` rows
before it, and keeps the outputs it needs: every bar is encoded about ``(P + W − 1) / P``
times. A chunk that runs past the last row is padded on the right, which a causal
model never reads back. The results equal the per-window path to float rounding
(tests/inference/test_one_pass.py) and the speed-up is in benchmarks/inference.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..windows import MarketTensors, SlidingWindowDataset

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["chunk_plan", "market_state", "run_one_pass"]

#: Outputs per chunk: long enough that the W − 1 rows of overlap cost little.
CHUNK_POSITIONS = 512


def market_state(
    tensors: MarketTensors,
    batch: dict[str, torch.Tensor],
    cells: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
) -> dict[str, torch.Tensor] | None:
    """The market-state inputs of a batch as training fed them.

    ``cells = (rows [B, T], symbols [B, 1])``: the regime label of every row (models
    trained per position); None: the window's end-row label on every step (last-step
    training). The volatility is the batch's raw ``realised_vol_*`` input per row.
    """
    state: dict[str, torch.Tensor] = {}
    T = batch["x"].shape[1]
    if tensors.regimes is not None:
        if cells is not None:
            regime = torch.from_numpy(np.asarray(tensors.regimes[cells], dtype=np.int64))
        else:
            regime = batch["regime"][:, None].expand(-1, T)  # (B, T)
        state["regime"] = regime.to(device).clamp_min(0)
    if "volatility" in batch:
        state["volatility"] = batch["volatility"].to(device)  # (B, T)
    return state or None


def chunk_plan(
    t: np.ndarray, s: np.ndarray, window: int, positions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunks covering the cells ``(t, s)``: ``(first input row, symbol)`` per chunk and,
    per cell, its chunk and its position in the chunk.

    A symbol's chunks cover its rows from its first wanted row on, ``positions`` outputs
    each; chunk k of a symbol whose first wanted row is r0 reads rows
    ``r0 + k·positions − window + 1 ..`` (never below 0: the cells all have a full window).
    """
    order = np.lexsort((t, s))
    t_sorted, s_sorted = t[order], s[order]
    first = np.full(s.max() + 1 if len(s) else 0, -1, dtype=np.int64)
    start_of_symbol = np.r_[True, s_sorted[1:] != s_sorted[:-1]] if len(s) else np.array([])
    first[s_sorted[start_of_symbol]] = t_sorted[start_of_symbol]
    k = (t - first[s]) // positions  # chunk number within the symbol
    key = np.unique(np.stack([s, k], axis=1), axis=0)  # (C, 2) sorted by symbol, chunk
    chunk_of = np.searchsorted(key[:, 0] * (k.max() + 1) + key[:, 1], s * (k.max() + 1) + k)
    lo = first[key[:, 0]] + key[:, 1] * positions - window + 1  # (C,) first input row
    offset = t - lo[chunk_of]  # position of each cell in its chunk
    return np.stack([lo, key[:, 0]], axis=1), chunk_of, offset


def run_one_pass(
    agent: Agent,
    dataset: SlidingWindowDataset,
    items: np.ndarray,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None,
) -> dict[str, np.ndarray]:
    """The outputs of :meth:`Agent._run` for ``items``, by chunks instead of windows."""
    W, device = dataset.window, agent.device
    if not len(items):
        return agent._run(dataset, items, batch_size, on_batch)
    if dataset.calendar != "union":
        raise ValueError("one-pass inference reads the union calendar (windows.calendar=union)")
    t, s = dataset.item_keys(items)
    chunks, chunk_of, offset = chunk_plan(t, s, W, CHUNK_POSITIONS)
    L = CHUNK_POSITIONS + W - 1
    per_batch = max(1, batch_size * W // L)  # about as many rows per forward as the windows
    T = dataset.tensors
    cuda = device.type == "cuda"
    use_state = agent.config.model.market_state_embedding
    parts: dict[str, np.ndarray] = {}
    total = -(-len(chunks) // per_batch)
    for b in range(total):
        ids = np.arange(b * per_batch, min((b + 1) * per_batch, len(chunks)))
        lo, sym = chunks[ids, 0], chunks[ids, 1]
        rows = lo[:, None] + np.arange(L)  # (C, L)
        beyond = rows >= T.n_rows
        rows = np.minimum(rows, T.n_rows - 1)  # right padding, masked below: never read back
        batch = _gather(dataset, rows, sym, beyond)
        x = batch["x"].to(device, non_blocking=cuda)  # (C, L, F)
        state = market_state(T, batch, (rows, sym[:, None]), device) if use_state else None
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            out = agent.model(x, state, "all")  # (C, L, ...)
        wanted = np.isin(chunk_of, ids)
        local = chunk_of[wanted] - ids[0]
        picked = out.select((torch.from_numpy(local), torch.from_numpy(offset[wanted])))
        for name, column in agent._columns(picked).items():
            if name not in parts:
                parts[name] = np.empty(len(t), dtype=np.float64)
            parts[name][np.flatnonzero(wanted)] = column
        if on_batch is not None:
            on_batch(b + 1, total)
    return parts


def _gather(
    dataset: SlidingWindowDataset, rows: np.ndarray, sym: np.ndarray, beyond: np.ndarray
) -> dict[str, torch.Tensor]:
    """Normalised inputs of the rows ``[C, L]`` of symbols ``[C]``, as the windows have them."""
    T = dataset.tensors
    cell = (rows, sym[:, None])
    m = np.asarray(T.mask[cell], dtype=bool) & ~beyond
    mask = torch.from_numpy(m)
    x = torch.from_numpy(np.ascontiguousarray(T.inputs[cell]))  # (C, L, F)
    batch = {"x": dataset._norm(x, mask, sym, "inputs")}
    if dataset._vol is not None:
        batch["volatility"] = x[..., dataset._vol].float().nan_to_num() * mask
    return batch
