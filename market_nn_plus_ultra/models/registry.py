"""Backbone and head registries and the composed :class:`TradingModel`.

A backbone module declares itself once with ``@register_backbone("name")`` on a builder
``fn(cfg: ModelConfig, n_features) -> nn.Module`` (the module maps ``(B, T, F)`` to
``(B, T, d_model)``); a head with ``@register_head("name")`` on
``fn(cfg: ModelConfig, d_model) -> nn.Module``. ``config.model.architecture`` and
``config.model.head`` name entries of these plain dicts; no import strings in YAML.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.layers import MoEFeedForward

__all__ = [
    "BACKBONES",
    "HEADS",
    "BackboneBuilder",
    "HeadBuilder",
    "TradingModel",
    "build_backbone",
    "build_head",
    "build_model",
    "count_parameters",
    "estimate_flops",
    "register_backbone",
    "register_head",
]

BackboneBuilder = Callable[[ModelConfig, int], nn.Module]
HeadBuilder = Callable[[ModelConfig, int], nn.Module]

BACKBONES: dict[str, BackboneBuilder] = {}
HEADS: dict[str, HeadBuilder] = {}


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[Any], Any]:
    def decorator(fn: Any) -> Any:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is registered twice — pick another name")
        table[name] = fn
        return fn

    return decorator


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register ``fn(cfg, n_features) -> backbone`` as ``model.architecture=name``."""
    return _register(BACKBONES, "backbone", name)


def register_head(name: str) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator: register ``fn(cfg, d_model) -> head`` as ``model.head=name``."""
    return _register(HEADS, "head", name)


def _ensure_registered() -> None:
    """Import the modules whose decorators fill the registries (idempotent)."""
    import market_nn_plus_ultra.models  # noqa: F401  (its __init__ imports every backbone/head)


def _lookup(table: dict[str, Any], option: str, name: str) -> Any:
    _ensure_registered()
    if name not in table:
        guess = difflib.get_close_matches(name, list(table), n=1)
        hint = f" — did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(
            f"{option}: unknown name {name!r}{hint} Available: {', '.join(sorted(table))}."
        )
    return table[name]


def build_backbone(cfg: ModelConfig, n_features: int) -> nn.Module:
    """The backbone ``cfg.architecture`` for inputs with ``n_features`` channels."""
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features} — is the feature set empty?")
    return _lookup(BACKBONES, "model.architecture", cfg.architecture)(cfg, n_features)


def build_head(cfg: ModelConfig, d_model: int) -> nn.Module:
    """The head ``cfg.head`` reading a ``(B, T, d_model)`` hidden sequence."""
    return _lookup(HEADS, "model.head", cfg.head)(cfg, d_model)


class TradingModel(nn.Module):
    """Backbone + head: ``forward(x (B, T, F), market_state) -> head output``.

    The head receives the backbone's whole hidden sequence ``(B, T, d_model)``.
    ``aux_loss`` is the backbone's auxiliary loss (MoE load balancing, already weighted)
    or zero; add it to the training objective.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor, market_state: dict[str, Tensor] | None = None) -> Any:
        return self.head(self.backbone(x, market_state))

    @property
    def aux_loss(self) -> Tensor:
        aux = getattr(self.backbone, "aux_loss", None)
        if aux is None:
            return torch.zeros((), device=next(self.parameters()).device)
        return aux


def build_model(cfg: ModelConfig, n_features: int) -> TradingModel:
    """Backbone + head from ``cfg`` (the ``model`` section), for ``n_features`` inputs."""
    backbone = build_backbone(cfg, n_features)
    return TradingModel(backbone, build_head(cfg, int(backbone.d_model)))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _active_parameters(model: nn.Module, cfg: ModelConfig) -> int:
    """Parameters a token actually passes through: MoE layers count top_k of their experts."""
    total = count_parameters(model)
    for module in model.modules():
        if isinstance(module, MoEFeedForward):
            per_expert = (module.w12.numel() + module.w3.numel()) // module.num_experts
            total -= per_expert * (module.num_experts - module.top_k)
    return total


def _multi_scale_flops(model: nn.Module, cfg: ModelConfig, tokens: int) -> float:
    """:func:`estimate_flops` for ``multi_scale``: each coarse encoder's parameters see
    ``T // k`` tokens, its attention ``(T // k)²`` pairs, and each fusion ``T · (1 + T // k)``
    (query × coarse keys plus the null key)."""
    coarse = [count_parameters(encoder) for encoder in model.coarse]
    steps = [tokens // k for k in cfg.scales[1:]]
    fine = count_parameters(model) - sum(coarse)  # embedding, fine blocks, fusions, norm
    params = fine * tokens + sum(p * n for p, n in zip(coarse, steps, strict=True))
    pairs = cfg.depth * tokens * tokens + sum(
        cfg.scale_depth * n * n + tokens * (1 + n) for n in steps
    )
    return float(6 * params + 12 * cfg.d_model * pairs)


def estimate_flops(cfg: ModelConfig, n_features: int, seq_len: int) -> float:
    """Training FLOPs per sample (one window of ``seq_len`` steps), forward + backward.

    ``6 · N · T + 12 · depth · T · d_model · T`` with ``N`` the backbone parameters a
    token uses (all of them except MoE experts it is not routed to; the head is
    negligible), ``T`` the number of tokens (``ceil(seq_len / patch_size)``), and the
    second term the attention scores and mixing counted without the causal saving
    (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B). ``state_space`` has
    no attention term: its FFT convolutions cost O(T log T) per channel, small beside
    the parameter term, so its cost per step stays flat as T grows.
    """
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_backbone(cfg, n_features)
    except (NotImplementedError, RuntimeError):
        model = build_backbone(cfg, n_features)
    tokens = -(-seq_len // cfg.patch_size)
    if cfg.architecture == "multi_scale":
        return _multi_scale_flops(model, cfg, tokens)
    attention_layers = 0 if cfg.architecture == "state_space" else cfg.depth
    return float(
        6 * _active_parameters(model, cfg) * tokens
        + 12 * attention_layers * tokens * cfg.d_model * tokens
    )
