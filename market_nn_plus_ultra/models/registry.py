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

from market_nn_plus_ultra.config import SEQUENCE_ARCHITECTURES, ModelConfig
from market_nn_plus_ultra.models.layers import CausalSelfAttention, DiagonalSSM, MoEFeedForward

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
    builder = _lookup(BACKBONES, "model.architecture", cfg.architecture)
    if cfg.receptive_field is not None and cfg.architecture not in SEQUENCE_ARCHITECTURES:
        raise ValueError(
            f"model.receptive_field is set but model.architecture={cfg.architecture} reads an "
            f"unbounded look-back — use one of {', '.join(SEQUENCE_ARCHITECTURES)}, or leave "
            "model.receptive_field unset (training.supervision=last)"
        )
    return builder(cfg, n_features)


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

    def forward(
        self, x: Tensor, market_state: dict[str, Tensor] | None = None, positions: str = "last"
    ) -> Any:
        """``positions="last"``: the head reads each sequence's last step; ``"all"``: every
        step (outputs ``(B, T, ...)``)."""
        h = self.backbone(x, market_state)  # (B, T, D)
        return self.head(h) if positions == "last" else self.head(h, positions)

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


def _matmul_weights(module: nn.Module) -> int:
    """Weights of ``module`` itself (not its children) that one row multiplies once.

    ``nn.Linear`` / ``nn.Conv1d`` weights and the LSTM's input and recurrent weights;
    for an MoE layer only the ``top_k`` experts a token is routed to (its router is a
    child ``nn.Linear``); otherwise 3-D parameters, the package's grouped-linear layout
    ``(groups, d_in, d_out)`` applied to every row (the TFT's per-variable GRNs).
    Biases, norm scales, embedding tables, null tokens and the SSM's kernel parameters
    (used once per sequence, not per row) do no matmul work and are not counted.
    """
    if isinstance(module, DiagonalSSM):  # its (H, N, 2) output weights build the kernel
        return 0
    if isinstance(module, nn.Linear | nn.Conv1d):
        return module.weight.numel()
    if isinstance(module, nn.LSTM):
        return sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight_"))
    if isinstance(module, MoEFeedForward):
        return (module.w12.numel() + module.w3.numel()) * module.top_k // module.num_experts
    # a learned (1, 1, D) token (omni_mixture's null key) is 3-D too but no matrix
    # weights a module folds into others (``folded_weights``) do no matmul per row
    folded = getattr(module, "folded_weights", ())
    grouped = (
        p for n, p in module.named_parameters(recurse=False) if p.dim() == 3 and n not in folded
    )
    return sum(p.numel() for p in grouped if min(p.shape[1:]) > 1)


def _forward_flops(
    model: nn.Module, tokens: int, rows: dict[str, int], cross_pairs: int = 0
) -> int:
    """Forward matmul FLOPs of ``model`` over ``tokens`` rows per sequence.

    Every module's matmul weights cost ``2 · weights · rows``, where ``rows`` maps a
    submodule name to the rows it sees (its descendants inherit it; the default is
    ``tokens``). A :class:`CausalSelfAttention` over ``n`` rows adds ``4 · d · n²`` (scores
    and mixing over the full square: the kernels do not skip the masked half), and
    ``cross_pairs`` other query-key pairs add ``4 · d`` each (``d`` = ``model.d_model``).
    """
    flops = 4 * int(model.d_model) * cross_pairs
    for name, module in model.named_modules():
        prefix = max(
            (p for p in rows if name == p or name.startswith(p + ".")), key=len, default=None
        )
        n = tokens if prefix is None else rows[prefix]
        flops += 2 * _matmul_weights(module) * n
        if isinstance(module, CausalSelfAttention):
            flops += 4 * module.proj.in_features * n * n
    return flops


def _omni_mixture_rows(model: nn.Module, cfg: ModelConfig, tokens: int) -> tuple[dict, int]:
    """Each cross-scale block pools a coarse token at all ``T`` steps, then runs its coarse
    attention and feed-forward over the ``c`` residue classes of ``n = ceil(T / c)``
    tokens (``c · n`` rows, the tail padded) and attends from every step to its class:
    ``c · n²`` coarse pairs and ``c · (1 + n)²`` cross pairs (the null key and a dummy
    query per class). Its key/value projection sees the ``T`` coarse tokens and the null."""
    from market_nn_plus_ultra.models.omni_mixture import CrossScaleBlock  # imports this module

    c = cfg.coarse_factor
    n = -(-tokens // c)
    rows: dict[str, int] = {}
    cross = 0
    for name, module in model.named_modules():
        if isinstance(module, CrossScaleBlock):
            attn = f"{name}.coarse_attn"
            rows |= {attn: 0, f"{attn}.qkv": c * n, f"{attn}.proj": c * n}
            rows |= {f"{name}.coarse_ffn": c * n, f"{name}.kv": tokens + 1}
            cross += c * n * n + c * (1 + n) ** 2
    return rows, cross


def _multi_scale_rows(model: nn.Module, cfg: ModelConfig, tokens: int) -> tuple[dict, int]:
    """Each scale ``k`` encodes a coarse token at every step as ``k`` residue classes of
    ``n = ceil(T / k)`` tokens (``k · n`` rows, the tail padded; ``k · n²`` pairs per
    attention layer); its fusion projects the ``T`` coarse tokens and attends from every
    step to its class: ``k · (1 + n)²`` pairs (the null key and a dummy query per class)."""
    rows: dict[str, int] = {}
    cross = 0
    for i, k in enumerate(cfg.scales[1:]):
        n = -(-tokens // k)
        rows[f"coarse.{i}"] = k * n
        for j in range(cfg.scale_depth):
            attn = f"coarse.{i}.{j}.attn"
            rows |= {attn: 0, f"{attn}.qkv": k * n, f"{attn}.proj": k * n}
        cross += k * (cfg.scale_depth * n * n + (1 + n) ** 2)
    return rows, cross


def _temporal_fusion_rows(model: nn.Module, cfg: ModelConfig, tokens: int) -> tuple[dict, int]:
    """One interpretable attention layer of width ``tft_hidden`` over all ``T²`` pairs.

    The selection weights' GRN reads the F embedded inputs ``(F · v)`` through ``fc2`` and
    its skip; the embedding is affine in the F scalars and is folded into both, so each
    runs as an ``F``-input matmul: its ``F · v`` input weights cost ``1 / v`` of a row each.
    """
    grn = model.select.weight_grn
    v = grn.fc2.in_features // model.select.n_features  # the per-variable width
    rows = {f"select.weight_grn.{part}": tokens / v for part in ("fc2", "skip")}
    return rows, tokens * tokens


# backbones whose submodules do not all see every token, or with attention other than
# CausalSelfAttention; every other backbone is counted by the default rule
_ROWS: dict[str, Callable[[nn.Module, ModelConfig, int], tuple[dict, int]]] = {
    "multi_scale": _multi_scale_rows,
    "omni_mixture": _omni_mixture_rows,
    "temporal_fusion": _temporal_fusion_rows,
}


def estimate_flops(cfg: ModelConfig, n_features: int, seq_len: int) -> float:
    """Training FLOPs per sample (one window of ``seq_len`` steps), forward + backward.

    ``3 ×`` the forward matmul FLOPs (the backward pass does two matmuls per forward one,
    Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B). Forward:
    ``2 · W · n`` per module for its matmul weights ``W`` (linear, conv, LSTM, grouped
    and routed-expert weights, see :func:`_matmul_weights`) over the ``n`` rows it sees,
    plus ``4 · d · n_q · n_k`` per attention layer (scores and mixing over the full
    square, without the causal saving). ``n`` is ``T = ceil(seq_len / patch_size)`` tokens
    except inside coarse paths (``multi_scale``, ``omni_mixture``: ``c · ceil(T / c)``
    padded rows with ``c · n²`` coarse and ``c · (1 + n)²`` cross pairs, ``n = ceil(T / c)``). ``temporal_fusion`` has one attention layer of width
    ``tft_hidden``; ``state_space`` none. Elementwise work (norms, activations, gates,
    softmax) and the SSM's FFT convolutions (O(T log T) per channel: under 1% at
    ``d_model`` 512 and T in the hundreds) are not counted, and an MoE layer counts its
    ``top_k`` routed experts even where the dense fallback runs all of them — the model-FLOPs convention of MFU, and what
    ``torch.utils.flop_counter.FlopCounterMode`` measures (``tests/models/test_flops.py``
    checks every registered backbone against it). A backbone without an entry in
    ``_ROWS`` is counted with every module over all ``T`` tokens.
    """
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_backbone(cfg, n_features)
    except (NotImplementedError, RuntimeError):
        model = build_backbone(cfg, n_features)
    tokens = -(-seq_len // cfg.patch_size)
    rows_of = _ROWS.get(cfg.architecture)
    rows, cross = ({}, 0) if rows_of is None else rows_of(model, cfg, tokens)
    return float(3 * _forward_flops(model, tokens, rows, cross))
