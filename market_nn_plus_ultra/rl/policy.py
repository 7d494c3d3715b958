"""The actor-critic policy: a registry backbone read per symbol, an actor and a critic head.

Each symbol's window ``(W, F)`` goes through the backbone (``(B, T, F) -> (B, T, D)``);
its last hidden step, layer-normalised, is the symbol's state ``z``. The actor and the
critic each add the symbol's portfolio features (position, log equity, unrealised PnL)
inside a small MLP: ``u = GELU(fc1(z) + port(p))``. The actor maps ``u`` (plus a linear
``skip(z)``) to one Gaussian mean per symbol (continuous: the target is ``tanh`` of a
sample, a tanh-squashed Gaussian with one learned log-std) or to short/flat/long logits
(discrete); the critic averages ``u`` over symbols (order-free) and reads one value per
environment. The joint action's log-probability and entropy are sums over symbols.

Warm starts: :func:`load_supervised` copies a ``plus-ultra train`` checkpoint's backbone
exactly and, where shapes allow, its head (the forecast MLP into the continuous actor so
that ``tanh(mean)`` starts equal to the supervised position, the class logits into the
discrete actor); :func:`load_pretrained_backbone` copies a pretraining backbone. Files are
read with ``torch.load(weights_only=True)`` only: a pickle that would run code is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import build_backbone

__all__ = [
    "ActorCritic",
    "PolicyOutput",
    "WarmStartError",
    "WarmStartSummary",
    "load_pretrained_backbone",
    "load_supervised",
    "read_supervised",
]

ActionMode = Literal["continuous", "discrete"]
_LOG_2PI = math.log(2.0 * math.pi)
_BACKBONE_FORMAT = "plus_ultra_backbone"  # the file training.warm_start.save_backbone writes
_COMPILED = "_orig_mod."
_CHECKPOINTS = ("best.ckpt", "last.ckpt")


class WarmStartError(ValueError):
    """A checkpoint to warm-start the policy from is missing, unsafe or does not fit."""


@dataclass
class PolicyOutput:
    """One forward pass: ``mean (N, S)`` (continuous) or ``logits (N, S, 3)`` (discrete),
    ``log_std (1,)`` (continuous) and ``value (N,)``."""

    value: Tensor
    mean: Tensor | None = None
    log_std: Tensor | None = None
    logits: Tensor | None = None


class _Branch(nn.Module):
    """``u = GELU(fc1(z) + port(p))``; the portfolio path starts at zero."""

    def __init__(self, d_model: int, n_portfolio: int, n_out: int, skip: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_model)
        self.port = nn.Linear(n_portfolio, d_model, bias=False)
        self.fc2 = nn.Linear(d_model, n_out)
        self.skip = nn.Linear(d_model, n_out, bias=False) if skip else None
        nn.init.zeros_(self.port.weight)

    def hidden(self, z: Tensor, p: Tensor) -> Tensor:
        return F.gelu(self.fc1(z) + self.port(p))  # (N, S, D)


class ActorCritic(nn.Module):
    """Backbone + actor + critic for ``obs`` dicts of the trading env (see module doc).

    ``action_mode``: ``"continuous"`` (mean per symbol, squashed by ``tanh``) or
    ``"discrete"`` (short/flat/long logits). ``market_state``: pass the observation's
    ``regime``/``volatility`` to the backbone (a backbone built with
    ``model.market_state_embedding``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        action_mode: ActionMode = "continuous",
        *,
        init_log_std: float = -0.5,
        n_portfolio: int = 3,
        market_state: bool = False,
        receptive_field: int | None = None,
    ) -> None:
        super().__init__()
        if action_mode not in ("continuous", "discrete"):
            raise ValueError(
                f"action_mode={action_mode!r}: use 'continuous' (target in [-1, 1]) or "
                "'discrete' (short/flat/long)"
            )
        d = int(backbone.d_model)
        self.backbone, self.action_mode, self.market_state = backbone, action_mode, market_state
        self.receptive_field = receptive_field  # the backbone's bounded look-back, if any
        self.norm = nn.LayerNorm(d)
        n_out = 1 if action_mode == "continuous" else 3
        self.actor = _Branch(d, n_portfolio, n_out, skip=True)
        self.critic = _Branch(d, n_portfolio, 1, skip=False)
        # near-zero first actions and values: per-bar net returns are ~1e-3, so a value
        # of O(1) at the start (CleanRL's critic gain 1) would only have to be unlearnt
        nn.init.orthogonal_(self.actor.fc2.weight, gain=0.01)
        nn.init.zeros_(self.actor.fc2.bias)
        nn.init.zeros_(self.actor.skip.weight)
        nn.init.orthogonal_(self.critic.fc2.weight, gain=0.01)
        nn.init.zeros_(self.critic.fc2.bias)
        self.log_std = nn.Parameter(torch.full((1,), float(init_log_std)))
        if action_mode == "discrete":
            self.log_std.requires_grad_(False)  # unused: no gradient, no optimiser state
        self.backbone_frozen = False

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        n_features: int,
        action_mode: ActionMode = "continuous",
        *,
        init_log_std: float = -0.5,
    ) -> ActorCritic:
        """A fresh policy whose backbone is ``cfg.architecture`` for ``n_features`` inputs."""
        backbone = build_backbone(cfg, n_features)
        return cls(
            backbone,
            action_mode,
            init_log_std=init_log_std,
            market_state=cfg.market_state_embedding,
            receptive_field=cfg.receptive_field,
        )

    # ----------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) training the backbone; a frozen one runs without autograd."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone_frozen = frozen

    def _market_state(self, obs: Mapping[str, Tensor], steps: int) -> dict[str, Tensor] | None:
        if not self.market_state:
            return None
        state = {}
        for key in ("regime", "volatility"):
            if key in obs:  # known at t; every step of the window sees the end row's label
                value = obs[key].reshape(-1)  # (N·S,)
                state[key] = (value.clamp_min(0) if key == "regime" else value)[:, None]
                state[key] = state[key].expand(-1, steps)  # (N·S, W)
        return state or None

    def encode(self, obs: Mapping[str, Tensor]) -> Tensor:
        """``obs["window"] (N, S, W, F)`` → per-symbol states ``z (N, S, D)``:
        ``self.norm(self.backbone_state(obs))``."""
        return self.norm(self.backbone_state(obs))

    def backbone_state(self, obs: Mapping[str, Tensor]) -> Tensor:
        """The backbone's last hidden step before the layer norm, ``(N, S, D)``; no autograd
        while the backbone is frozen (the norm, which trains then, comes after it)."""
        window = obs["window"]
        if window.ndim != 4:
            raise ValueError(
                f"obs['window'] must be (num_envs, n_symbols, window, n_features), got "
                f"{tuple(window.shape)}"
            )
        n, s, w, f = window.shape
        x = window.reshape(n * s, w, f)  # (N·S, W, F)
        state = self._market_state(obs, w)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            h = self.backbone(x, state)  # (N·S, T', D)
        return h[:, -1].reshape(n, s, -1)  # (N, S, D)

    def sequence_states(self, rows: Tensor, steps: int) -> Tensor:
        """:meth:`backbone_state` of every step of ``n`` envs' rollouts in one backbone pass
        per env: ``rows (n, S, W + T − 1, F)``, each env's windows joined (the window of step
        t is rows ``t .. t + W − 1``) → ``(T, n, S, D)``. Exact only for a backbone whose
        look-back (``receptive_field``) is at most ``W`` and a policy without market state."""
        if self.receptive_field is None or self.market_state:
            raise ValueError(
                "sequence_states needs a backbone with a bounded look-back and no market state: "
                "build the policy with model.receptive_field (training.supervision=all) and "
                "model.market_state_embedding off"
            )
        n, s, length, f = rows.shape
        if length - steps + 1 < self.receptive_field:
            raise ValueError(
                f"windows of {length - steps + 1} rows are shorter than the backbone's "
                f"receptive_field={self.receptive_field} — use windows.window >= "
                "model.receptive_field"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            h = self.backbone(rows.reshape(n * s, length, f), None)  # (n·S, L, D)
        h = h[:, length - steps :]  # position W − 1 + t ends the window of step t
        return h.reshape(n, s, steps, -1).permute(2, 0, 1, 3)  # (T, n, S, D)

    @staticmethod
    def portfolio_features(portfolio: Tensor) -> Tensor:
        """``(N, S, 3)`` position, equity, unrealised PnL → position, log equity, PnL."""
        equity = portfolio[..., 1:2].clamp_min(1e-6).log()
        return torch.cat([portfolio[..., :1], equity, portfolio[..., 2:]], dim=-1)

    def forward(self, obs: Mapping[str, Tensor]) -> PolicyOutput:
        return self.heads(self.encode(obs), obs["portfolio"])

    def heads(self, z: Tensor, portfolio: Tensor) -> PolicyOutput:
        """The actor and the critic on per-symbol states ``z (N, S, D)`` (from
        :meth:`encode`) and the ``(N, S, 3)`` portfolio observation."""
        p = self.portfolio_features(portfolio.to(z.dtype))  # (N, S, 3)
        u = self.actor.hidden(z, p)
        out = self.actor.fc2(u) + self.actor.skip(z)  # (N, S, 1 | 3)
        pooled = self.critic.hidden(z, p).mean(dim=1)  # (N, D)
        value = self.critic.fc2(pooled).squeeze(-1).float()  # (N,)
        if self.action_mode == "continuous":
            return PolicyOutput(value=value, mean=out.squeeze(-1).float(), log_std=self.log_std)
        return PolicyOutput(value=value, logits=out.float())

    def value(self, obs: Mapping[str, Tensor]) -> Tensor:
        """The critic's value ``(N,)`` of each environment's state."""
        return self.forward(obs).value

    # ----------------------------------------------------------------------------------
    # The action distribution
    # ----------------------------------------------------------------------------------

    def sample(
        self, out: PolicyOutput, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(raw, action)``: the stored sample and the env's action, both ``(N, S)``.

        Continuous: ``raw`` is the pre-squash Gaussian sample, ``action = tanh(raw)``;
        discrete: both are the class index 0/1/2 (short/flat/long, Gumbel-max sampling).
        """
        if out.mean is not None:
            noise = torch.randn(out.mean.shape, generator=generator, device=out.mean.device)
            raw = out.mean + out.log_std.exp() * noise
            return raw, torch.tanh(raw)
        u = torch.rand(out.logits.shape, generator=generator, device=out.logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        raw = (out.logits + gumbel).argmax(dim=-1)  # (N, S)
        return raw, raw

    @staticmethod
    def mode(out: PolicyOutput) -> Tensor:
        """The deterministic action ``(N, S)``: ``tanh(mean)`` or the most likely class."""
        return torch.tanh(out.mean) if out.mean is not None else out.logits.argmax(dim=-1)

    @staticmethod
    def log_prob_entropy(out: PolicyOutput, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Joint ``log π(raw)`` and entropy, each ``(N,)`` (sums over symbols).

        Continuous: of the pre-squash Gaussian. The tanh Jacobian ``−Σ log(1 − tanh²)``
        depends on the sample only, so it cancels in PPO's ratio and AWR's gradient.
        """
        if out.mean is not None:
            log_std = out.log_std.expand_as(out.mean)
            z = (raw - out.mean) * torch.exp(-log_std)
            log_prob = (-0.5 * z.square() - log_std - 0.5 * _LOG_2PI).sum(dim=-1)
            entropy = (0.5 + 0.5 * _LOG_2PI + log_std).sum(dim=-1)
            return log_prob, entropy
        log_p = out.logits.log_softmax(dim=-1)  # (N, S, 3)
        log_prob = log_p.gather(-1, raw.long()[..., None]).squeeze(-1).sum(dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=(-1, -2))
        return log_prob, entropy


# --------------------------------------------------------------------------------------
# Warm starts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmStartSummary:
    """What a warm start copied: ``copied`` policy tensors, ``skipped`` head tensors (why)."""

    path: Path
    source: Literal["supervised", "backbone"]
    backbone_tensors: int
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"warm start from {self.path}: {self.backbone_tensors} backbone tensors, "
            f"{len(self.copied)} head tensors copied, {len(self.skipped)} skipped"
        )


def _read(path: Path, what: str) -> Mapping[str, Any]:
    if not path.is_file():
        raise WarmStartError(f"{what} {path} does not exist — pass the file (or run folder)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refusals and damaged files raise several types
        raise WarmStartError(
            f"{what} {path}: not loadable as plain tensors ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}) — only checkpoints written by "
            "plus-ultra (tensors, numbers, strings, lists, dicts) are read; nothing from the "
            "file was run"
        ) from None
    if not isinstance(raw, Mapping):
        raise WarmStartError(f"{what} {path}: expected a mapping, got {type(raw).__name__}")
    return raw


def _resolve_run(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in _CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise WarmStartError(
            f"--checkpoint {path}: no best.ckpt or last.ckpt in this folder — pass the run "
            "folder of `plus-ultra train` or one of its .ckpt files"
        )
    return path


def read_supervised(path: str | Path) -> tuple[ModelConfig, int, dict[str, Tensor], Path]:
    """``(model section, n_features, state dict, file)`` of a ``plus-ultra train`` run.

    ``path``: the run folder (best.ckpt, else last.ckpt) or a ``.ckpt``. The state dict's
    keys are the trading model's (``backbone.*``, ``head.*``).
    """
    file = _resolve_run(path)
    ckpt = _read(file, "--checkpoint")
    hp, state = ckpt.get("hyper_parameters") or {}, ckpt.get("state_dict")
    if "model" not in hp or "n_features" not in hp or not isinstance(state, Mapping):
        raise WarmStartError(
            f"--checkpoint {file}: not a `plus-ultra train` checkpoint (no model "
            "hyper-parameters or weights) — a pretraining backbone goes to "
            "--warm-start-checkpoint"
        )
    cfg = ModelConfig.model_validate({**hp["model"], "compile": False})
    weights = {
        k[len("model.") :].replace(_COMPILED, ""): v
        for k, v in state.items()
        if k.startswith("model.")
    }
    return cfg, int(hp["n_features"]), weights, file


def _copy_backbone(policy: ActorCritic, loaded: Mapping[str, Tensor], path: Path) -> int:
    """Copy every backbone tensor, or raise naming what does not fit."""
    own = {k.replace(_COMPILED, ""): v for k, v in policy.backbone.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(loaded)), sorted(set(loaded) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(loaded[k].shape)}, policy {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(loaded))
        if loaded[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys[:6])}{' …' if len(keys) > 6 else ''}"
            for label, keys in (
                ("missing in checkpoint", missing),
                ("unexpected in checkpoint", unexpected),
                ("shape mismatches", shapes),
            )
            if keys
        ]
        raise WarmStartError(
            f"{path}: the backbone does not fit the policy:\n  "
            + "\n  ".join(problems)
            + "\nFix: build the policy from the checkpoint's model section and feature set "
            "(`read_supervised`, or the config.yaml beside a backbone file)"
        )
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(loaded[key].to(value.dtype))
    return len(own)


def _head_sources(policy: ActorCritic, head: Mapping[str, Tensor], cfg: ModelConfig) -> list:
    """``(policy key, head key, rows)`` pairs to try; rows slices the head tensor."""
    pairs: list[tuple[str, str, slice | None]] = [
        ("norm.weight", "norm.weight", None),
        ("norm.bias", "norm.bias", None),
    ]
    mlp, row = None, 0
    if "out.0.weight" in head:  # regression head: forecast MLP, row 0 = first horizon
        mlp = "out"
    elif "regress.0.weight" in head:  # action / dirichlet heads' forecast branch
        mlp = "regress"
    elif "quantile.out.0.weight" in head:  # quantile heads: the anchor quantile of step 0
        mlp = "quantile.out"
        levels = list(cfg.quantiles)
        row = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
    if mlp is not None:
        for part in ("weight", "bias"):
            pairs.append((f"critic.fc1.{part}", f"{mlp}.0.{part}", None))
            if policy.action_mode == "continuous":
                pairs.append((f"actor.fc1.{part}", f"{mlp}.0.{part}", None))
                pairs.append((f"actor.fc2.{part}", f"{mlp}.2.{part}", slice(row, row + 1)))
    if policy.action_mode == "discrete":  # down/flat/up logits are short/flat/long
        logits = "dirichlet.evidence" if "dirichlet.evidence.weight" in head else "classify"
        pairs.append(("actor.skip.weight", f"{logits}.weight", None))
        pairs.append(("actor.fc2.bias", f"{logits}.bias", None))
    return pairs


def load_supervised(policy: ActorCritic, path: str | Path) -> WarmStartSummary:
    """Warm-start ``policy`` from a ``plus-ultra train`` run (folder or ``.ckpt``), in place.

    The backbone is copied exactly (any mismatch raises :class:`WarmStartError`); head
    tensors are copied where their shapes allow and the rest are listed as skipped.
    When the discrete actor takes the class logits (``skip`` ← weight, ``fc2`` ← bias, the
    MLP's weight zeroed), its initial probabilities equal the action head's.
    """
    cfg, _, weights, file = read_supervised(path)
    backbone = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
    n_backbone = _copy_backbone(policy, backbone, file)
    head = {k[len("head.") :]: v for k, v in weights.items() if k.startswith("head.")}
    own = policy.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for key, source, rows in _head_sources(policy, head, cfg):
            value = head.get(source)
            value = value[rows] if value is not None and rows is not None else value
            if value is None or value.shape != own[key].shape:
                why = "absent" if value is None else f"{tuple(value.shape)}"
                skipped.append(f"{key} <- head.{source} ({why}; policy {tuple(own[key].shape)})")
                continue
            own[key].copy_(value.to(own[key].dtype))
            copied.append(key)
        if "actor.skip.weight" in copied:  # the logits start as the head's: W·z + b
            policy.actor.fc2.weight.zero_()
    return WarmStartSummary(file, "supervised", n_backbone, copied, skipped)


def load_pretrained_backbone(policy: ActorCritic, path: str | Path) -> WarmStartSummary:
    """Copy a pretraining backbone (``backbone.pt`` or the pretraining ``.ckpt``) into
    ``policy.backbone``, exactly; anything that does not fit raises :class:`WarmStartError`."""
    path = Path(path)
    raw = _read(path, "--warm-start-checkpoint")
    if raw.get("format") == _BACKBONE_FORMAT:
        loaded = raw.get("backbone_state_dict") or {}
    elif isinstance(raw.get("state_dict"), Mapping):
        prefix = "backbone."
        loaded = {
            k[len(prefix) :].replace(_COMPILED, ""): v
            for k, v in raw["state_dict"].items()
            if k.startswith(prefix)
        }
    else:
        loaded = {}
    if not loaded:
        raise WarmStartError(
            f"--warm-start-checkpoint {path}: no backbone weights (neither a backbone.pt nor a "
            "pretraining .ckpt with `backbone.` entries) — pass what `plus-ultra pretrain` "
            "wrote; a supervised run goes to --checkpoint"
        )
    return WarmStartSummary(path, "backbone", _copy_backbone(policy, loaded, path))
