"""Backbone checkpoints: the format pretraining writes and supervised training warm-starts from.

A backbone file (``backbone.pt``, written by :func:`save_backbone`) is a ``torch.save``
mapping::

    {"format": "plus_ultra_backbone", "format_version": 1,
     "architecture": "hybrid_transformer", "model_config": {...resolved model section...},
     "n_features": 42, "feature_columns": ["log_return_1", ...],
     "backbone_state_dict": {"embed.proj.weight": Tensor, ...}}

:func:`load_backbone` copies every weight into a freshly built backbone and refuses,
with a message naming the missing/unexpected keys, the shape mismatches and the config
fields behind them, anything that would leave weights silently untouched. It also reads
a Lightning ``.ckpt`` written by pretraining (the ``backbone.`` entries of its
``state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from market_nn_plus_ultra._io import atomic_path
from market_nn_plus_ultra.config import ModelConfig

__all__ = [
    "BACKBONE_FORMAT",
    "BACKBONE_FORMAT_VERSION",
    "WarmStartError",
    "WarmStartReport",
    "load_backbone",
    "read_backbone_checkpoint",
    "save_backbone",
]

BACKBONE_FORMAT = "plus_ultra_backbone"
BACKBONE_FORMAT_VERSION = 1
# Key under which pretraining modules store the backbone metadata inside a Lightning .ckpt.
CKPT_META_KEY = "plus_ultra_backbone"
_PREFIX = "backbone."
_COMPILED = "_orig_mod."  # torch.compile wraps modules and prefixes their keys
# Model fields that change the backbone's parameters (the rest only change the head/loss).
_SHAPE_FIELDS = (
    "architecture",
    "d_model",
    "depth",
    "n_heads",
    "ff_mult",
    "patch_size",
    "dilations",
    "conv_kernel",
    "ssm_state_dim",
    "coarse_factor",
    "cross_every",
    "num_experts",
    "market_state_embedding",
    "num_regimes",
    "tft_hidden",
    "tft_lstm_layers",
    "tft_variable_width",
    "norm",
)
_LIST_LIMIT = 8  # keys listed in an error before "… and N more"


class WarmStartError(ValueError):
    """A backbone checkpoint does not fit the model; the message names what differs and the fix."""


@dataclass(frozen=True)
class WarmStartReport:
    """What :func:`load_backbone` copied.

    ``n_tensors``/``n_values``: state-dict entries and scalar values loaded; ``missing``
    and ``unexpected`` are non-empty only with ``strict=False``.
    """

    path: Path
    source: str  # "backbone" (backbone.pt) or "lightning" (.ckpt)
    architecture: str | None
    n_tensors: int
    n_values: int
    feature_columns: list[str] | None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs: how much was loaded from where."""
        extra = ""
        if self.missing or self.unexpected:
            extra = f" ({len(self.missing)} missing, {len(self.unexpected)} unexpected skipped)"
        return (
            f"warm start: {self.n_tensors} backbone tensors ({self.n_values:,} values) "
            f"from {self.path}{extra}"
        )


def _plain_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict on CPU, detached, without torch.compile prefixes."""
    return {
        key.replace(_COMPILED, ""): value.detach().cpu().clone()
        for key, value in module.state_dict().items()
    }


def save_backbone(
    path: str | Path, backbone: nn.Module, cfg: ModelConfig, feature_columns: Sequence[str]
) -> Path:
    """Write ``backbone``'s weights and the metadata to rebuild it, atomically; returns the path.

    ``cfg`` is the resolved ``model`` section the backbone was built from and
    ``feature_columns`` the input channels in order (``n_features = len(feature_columns)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": BACKBONE_FORMAT,
        "format_version": BACKBONE_FORMAT_VERSION,
        "architecture": cfg.architecture,
        "model_config": cfg.model_dump(mode="json"),
        "n_features": len(feature_columns),
        "feature_columns": [str(c) for c in feature_columns],
        "backbone_state_dict": _plain_state(backbone),
    }
    with atomic_path(path) as tmp:  # a reader never sees a half-written file
        torch.save(payload, tmp)
    return path


def _load_file(path: Path) -> Mapping[str, Any]:
    if not path.exists():
        raise WarmStartError(
            f"backbone checkpoint {path} does not exist — pass the backbone.pt or last.ckpt "
            "that `plus-ultra pretrain` wrote (it prints their paths)"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unpickling error types
        raise WarmStartError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: {err}) — "
            "pass a backbone.pt or .ckpt written by `plus-ultra pretrain`"
        ) from None
    if not isinstance(raw, Mapping):
        raise WarmStartError(f"{path}: expected a checkpoint mapping, got {type(raw).__name__}")
    return raw


def read_backbone_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``backbone.pt`` or pretraining ``.ckpt`` into the backbone file's mapping.

    The result always has ``backbone_state_dict`` (keys relative to the backbone) and
    ``source``; metadata (``model_config``, ``feature_columns``, ``n_features``,
    ``architecture``) is present when the file carries it.
    """
    path = Path(path)
    raw = _load_file(path)
    if raw.get("format") == BACKBONE_FORMAT:
        version = raw.get("format_version")
        if version != BACKBONE_FORMAT_VERSION:
            raise WarmStartError(
                f"{path}: backbone format version {version}, this release reads "
                f"{BACKBONE_FORMAT_VERSION} — re-run `plus-ultra pretrain` to rewrite it"
            )
        return {**raw, "source": "backbone"}
    if "state_dict" in raw:
        state = {
            key[len(_PREFIX) :].replace(_COMPILED, ""): value
            for key, value in raw["state_dict"].items()
            if key.startswith(_PREFIX)
        }
        if not state:
            top = sorted({k.split(".", 1)[0] for k in raw["state_dict"]})
            raise WarmStartError(
                f"{path}: the Lightning checkpoint has no `backbone.` weights (its modules: "
                f"{', '.join(top) or 'none'}) — pass a checkpoint from `plus-ultra pretrain`"
            )
        meta = dict(raw.get(CKPT_META_KEY) or {})
        return {**meta, "backbone_state_dict": state, "source": "lightning"}
    raise WarmStartError(
        f"{path}: neither a backbone file (format {BACKBONE_FORMAT!r}) nor a Lightning "
        f"checkpoint (no `state_dict`; keys: {', '.join(sorted(map(str, raw))[:_LIST_LIMIT])}) "
        "— pass the backbone.pt or last.ckpt written by `plus-ultra pretrain`"
    )


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = len(keys) - _LIST_LIMIT
    return shown + (f" … and {more} more" if more > 0 else "")


def _config_diffs(
    meta: Mapping[str, Any], cfg: ModelConfig | None, backbone: nn.Module
) -> list[str]:
    """``model.<field>: checkpoint A, config B`` for every backbone-shaping field that differs."""
    saved = meta.get("model_config") or {}
    lines: list[str] = []
    if cfg is not None and saved:
        current = cfg.model_dump(mode="json")
        for name in _SHAPE_FIELDS:
            if name in saved and saved[name] != current.get(name):
                lines.append(f"model.{name}: checkpoint {saved[name]}, config {current.get(name)}")
    elif saved and hasattr(backbone, "d_model") and saved.get("d_model") != backbone.d_model:
        lines.append(f"model.d_model: checkpoint {saved.get('d_model')}, config {backbone.d_model}")
    return lines


def _feature_diff(meta: Mapping[str, Any], feature_columns: Sequence[str] | None) -> str | None:
    saved = meta.get("feature_columns")
    if feature_columns is None or saved is None or list(saved) == list(feature_columns):
        return None
    now = list(feature_columns)
    gone = [c for c in saved if c not in now]
    new = [c for c in now if c not in saved]
    if not gone and not new:
        return "feature columns: same names in a different order — keep the pretraining order"
    return (
        f"feature columns: checkpoint has {len(saved)}, the data {len(now)}"
        + (f"; missing now: {_listing(gone)}" if gone else "")
        + (f"; new now: {_listing(new)}" if new else "")
    )


def load_backbone(
    backbone: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    cfg: ModelConfig | None = None,
    feature_columns: Sequence[str] | None = None,
) -> WarmStartReport:
    """Copy every weight of a backbone checkpoint into ``backbone`` (in place).

    ``path``: a ``backbone.pt`` from :func:`save_backbone` or a pretraining Lightning
    ``.ckpt``. ``cfg``/``feature_columns`` (optional) are the current model section and
    input columns; when given, differences from the checkpoint's are named in the error.
    With ``strict=True`` any missing or unexpected key, or any shape mismatch, raises
    :class:`WarmStartError`; with ``strict=False`` matching tensors load and the rest are
    listed in the report (shape mismatches always raise: a half-fitting tensor is a bug).
    """
    path = Path(path)
    meta = read_backbone_checkpoint(path)
    loaded: Mapping[str, Tensor] = meta["backbone_state_dict"]
    own = {key.replace(_COMPILED, ""): value for key, value in backbone.state_dict().items()}
    missing = sorted(set(own) - set(loaded))
    unexpected = sorted(set(loaded) - set(own))
    shapes = [
        f"{key}: checkpoint {tuple(loaded[key].shape)}, model {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(loaded))
        if tuple(loaded[key].shape) != tuple(own[key].shape)
    ]
    features = _feature_diff(meta, feature_columns)
    if shapes or features or (strict and (missing or unexpected)):
        problems = _config_diffs(meta, cfg, backbone)
        if features:
            problems.append(features)
        if missing:
            problems.append(f"missing in checkpoint ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected in checkpoint ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
        raise WarmStartError(
            f"backbone checkpoint {path} does not fit this model:\n  "
            + "\n  ".join(problems)
            + "\nFix: build the model with the checkpoint's model section and feature set "
            "(its resolved config.yaml sits beside it), or re-run `plus-ultra pretrain` with "
            "this config."
        )
    matched = {key: loaded[key] for key in own if key in loaded}
    with torch.no_grad():
        target = {k.replace(_COMPILED, ""): v for k, v in backbone.state_dict().items()}
        for key, value in matched.items():
            target[key].copy_(value.to(dtype=target[key].dtype))
    return WarmStartReport(
        path=path,
        source=str(meta["source"]),
        architecture=meta.get("architecture"),
        n_tensors=len(matched),
        n_values=int(sum(v.numel() for v in matched.values())),
        feature_columns=list(meta["feature_columns"]) if meta.get("feature_columns") else None,
        missing=missing,
        unexpected=unexpected,
    )
