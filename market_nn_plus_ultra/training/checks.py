"""Config checks that need the registries, run before any data is read.

The config layer validates types, ranges and limits within a section when a config is
loaded, but it sits below the models and features layers and cannot see their
registries. :func:`check_config` does the rest at the very start of ``train()``,
``pretrain()`` and ``Agent.tensors()``, so a typo in ``model.architecture`` or a
horizon the windows cannot supply fails in milliseconds, not after the panel, features
and tensors are built::

    check_config(cfg)               # train: backbone, head, features, horizons
    check_config(cfg, head=False)   # pretrain: no head is trained
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from ..config import Config, ConfigError
from ..features.pipeline import FeaturePipeline
from ..models import BACKBONES, HEADS
from .curriculum import CurriculumScheduler

__all__ = ["check_config"]


def _registered(option: str, name: str, table: Mapping[str, object]) -> None:
    if name in table:
        return
    guess = difflib.get_close_matches(name, list(table), n=1)
    hint = f" — did you mean `{option}={guess[0]}`?" if guess else ""
    raise ConfigError(
        f"`{option}`: unknown name {name!r}{hint} Registered: {', '.join(sorted(table))}."
    )


def check_config(cfg: Config, *, head: bool = True) -> None:
    """Raise :class:`~market_nn_plus_ultra.config.ConfigError` for names or limits that fail.

    Checks ``model.architecture`` against the backbone registry and the ``features``
    section against the feature registry (with "did you mean" hints); with ``head``
    (supervised runs) also ``model.head``, ``model.horizon <= windows.horizon`` (the
    windows must hold every target step the head predicts) and the curriculum's start
    window and horizon.
    """
    _registered("model.architecture", cfg.model.architecture, BACKBONES)
    FeaturePipeline.from_config(cfg.features)  # unknown feature names and tags raise here
    if not head:
        return
    _registered("model.head", cfg.model.head, HEADS)
    if cfg.model.horizon > cfg.windows.horizon:
        raise ConfigError(
            f"model.horizon={cfg.model.horizon} exceeds windows.horizon={cfg.windows.horizon}: "
            "the windows hold fewer target steps than the head predicts — set both to the "
            f"same value (e.g. --set windows.horizon={cfg.model.horizon})"
        )
    if cfg.curriculum.enabled:
        try:
            CurriculumScheduler(cfg.curriculum, cfg.windows.window, cfg.model.horizon)
        except ValueError as err:
            raise ConfigError(str(err)) from None
