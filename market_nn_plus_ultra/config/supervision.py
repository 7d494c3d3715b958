"""Which positions a supervised run trains on: ``training.supervision`` resolved.

``all`` trains every position of a sequence with at least ``training.min_context`` rows
behind it; each position reads exactly ``windows.window`` rows (the model is built with
``model.receptive_field = windows.window``), so the model seen in training is the one
inference runs, in one pass over a long history. It needs a backbone with a bounded
look-back (``SEQUENCE_ARCHITECTURES``), a causal normalisation (``train_zscore`` or
``none``: a window z-score would mix later rows of a sequence into earlier positions),
one symbol per item on the union calendar, and no window curriculum. Left unset,
``supervision`` is ``all`` where those hold and ``last`` elsewhere.

The config keeps what the user wrote (unset fields stay unset, so a saved config still
follows a later ``--set windows.window=…``); :func:`supervision_of` computes the
effective values wherever they are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import SEQUENCE_ARCHITECTURES, ModelConfig

if TYPE_CHECKING:
    from . import Config

__all__ = ["Supervision", "sequence_blockers", "supervision_of", "training_model"]


@dataclass(frozen=True)
class Supervision:
    """The effective supervision of a config: ``mode`` and, for ``all``, the sequence
    length, the context a scored position needs and the model's receptive field."""

    mode: str  # "all" | "last"
    sequence_length: int | None = None
    min_context: int | None = None
    receptive_field: int | None = None

    @property
    def scored_per_sequence(self) -> int:
        """Positions a full sequence scores (``sequence_length − min_context + 1``); 1 for
        last-step supervision (one target per window)."""
        if self.mode != "all":
            return 1
        return self.sequence_length - self.min_context + 1


def sequence_blockers(cfg: Config) -> list[str]:
    """Why ``training.supervision=all`` cannot run with ``cfg``, as fixes to apply (empty: it can)."""
    reasons = []
    if cfg.model.architecture not in SEQUENCE_ARCHITECTURES:
        reasons.append(
            f"model.architecture={cfg.model.architecture} reads an unbounded look-back — use "
            f"one of {', '.join(SEQUENCE_ARCHITECTURES)}"
        )
    if cfg.windows.normalise == "window_zscore":
        reasons.append(
            "windows.normalise=window_zscore mixes later rows into earlier positions — set "
            "windows.normalise=train_zscore"
        )
    if cfg.windows.symbols_per_item != "one":
        reasons.append("windows.symbols_per_item=all — set windows.symbols_per_item=one")
    if cfg.windows.calendar != "union":
        reasons.append("windows.calendar=own — set windows.calendar=union")
    if cfg.model.patch_size != 1:
        reasons.append(f"model.patch_size={cfg.model.patch_size} — set model.patch_size=1")
    if cfg.curriculum.enabled:
        reasons.append("curriculum.enabled grows the window — set curriculum.enabled=false")
    return reasons


def supervision_of(cfg: Config) -> Supervision:
    """The effective :class:`Supervision` of ``cfg``; ValueError naming the fix when an
    explicit ``training.supervision=all`` (or its fields) cannot hold."""
    t, w = cfg.training, cfg.windows
    blockers = sequence_blockers(cfg)
    mode = t.supervision or ("last" if blockers else "all")
    if mode == "last":
        return Supervision("last")
    if blockers:
        raise ValueError(
            "training.supervision=all cannot run here: " + "; ".join(blockers) + " (or set "
            "training.supervision=last)"
        )
    if cfg.model.receptive_field not in (None, w.window):
        raise ValueError(
            f"model.receptive_field={cfg.model.receptive_field} differs from windows.window="
            f"{w.window}: with training.supervision=all every position reads one window — "
            "leave model.receptive_field unset"
        )
    length = t.sequence_length or 2 * w.window
    context = t.min_context or w.window
    if not 1 <= context <= length:
        raise ValueError(
            f"training.min_context={context} must lie in 1..training.sequence_length="
            f"{length} — lower training.min_context or raise training.sequence_length"
        )
    return Supervision("all", length, context, w.window)


def training_model(cfg: Config) -> ModelConfig:
    """``cfg.model`` as training builds it: with ``receptive_field`` set under ``all``."""
    sup = supervision_of(cfg)
    if sup.receptive_field is None:
        return cfg.model
    return cfg.model.model_copy(update={"receptive_field": sup.receptive_field})
