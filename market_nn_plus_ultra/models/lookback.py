"""Bounded look-back: every output position of a backbone reads exactly the last R rows.

With ``model.receptive_field = R`` (set by ``training.supervision: all``), the
hybrid, mixture-of-experts and state-space backbones limit each time-mixing layer to a
``span`` of rows (the step itself and ``span − 1`` before it): attention through a
causal band mask, the state-space mixer through a kernel of ``span`` taps, the dilated
convolutions through their own kernel. The spans of a stack add up to at most ``R``:

    lookback = Σ_layers (span − 1) ≤ R − 1

so the output at step t is a function of rows ``t − R + 1 .. t`` only — the same
function wherever the sequence starts. That is what makes every-position supervision
and one-pass inference exact: position t of a long sequence equals the last position of
the window of R rows ending at t (tested in tests/models/test_lookback.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["band_mask", "split_lookback"]


def split_lookback(receptive_field: int, fixed: int, n_free: int, where: str) -> int:
    """The span each of ``n_free`` adjustable mixers gets so the stack reads ``receptive_field``
    rows at most, after ``fixed`` rows of look-back taken by fixed-width layers
    (convolutions). Raises a ValueError naming the fix when fewer than 2 rows remain."""
    room = receptive_field - 1 - fixed
    span = 1 + room // max(1, n_free)
    if span < 2:
        raise ValueError(
            f"model.receptive_field={receptive_field} is too short for {where}: the "
            f"convolutions take {fixed} rows of look-back and {n_free} attention/SSM mixers "
            "need at least 1 more row each — lengthen windows.window, or lower model.depth, "
            "model.dilations or model.conv_kernel"
        )
    return span


def band_mask(seq_len: int, span: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Additive ``(T, T)`` mask (0 or −inf): query q may read key k iff ``q − span < k <= q``."""
    q = torch.arange(seq_len, device=device)[:, None]
    k = torch.arange(seq_len, device=device)[None, :]
    visible = (k <= q) & (k > q - span)
    return torch.zeros((seq_len, seq_len), dtype=dtype, device=device).masked_fill(
        ~visible, float("-inf")
    )
