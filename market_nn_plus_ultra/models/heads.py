"""Output heads: the backbone's hidden steps → positions, forecasts, distributions.

A head reads the backbone's ``(B, T, D)`` output: by default its last step ``h[:, -1]``
(the bar whose close the decision is taken at), with ``positions="all"`` every step
(every-position supervision and one-pass inference: outputs gain a ``T`` axis after
``B``), and returns a :class:`HeadOutput`. ``position`` is the
target exposure in [-1, 1] held from this bar's close to the next; ``forecast[:, k]``
the expected simple return of bar t+k+1 (k = 0 .. H−1), the same per-bar returns the
targets hold. Internally heads predict in units of ``model.return_scale`` (a typical
bar return, 1% by default) so the network's outputs and losses are O(1) whatever the
data's frequency; outputs are rescaled to plain returns.

Each head has ``loss(output, targets[B, H], weight=None) -> scalar``, its own supervised
loss; the optional 0/1 ``weight [B]`` scores only the rows it keeps (static shapes, no
host sync — the training step's way to skip windows whose targets are unknown).
Direction labels (down/flat/up) come from the first-horizon return with the flat band
``model.flat_band``. Risk terms on the positions' PnL are added by
:class:`~market_nn_plus_ultra.models.losses.CompositeTradingLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.losses import (
    classification_loss,
    direction_labels,
    evidential_loss,
    pinball_loss,
    regression_loss,
)
from market_nn_plus_ultra.models.registry import register_head

__all__ = [
    "ActionHead",
    "DirichletHead",
    "HeadOutput",
    "QuantileDirichletHead",
    "QuantileHead",
    "RegressionHead",
    "advance_annealing",
    "anneal_per_optimizer_step",
    "non_crossing_quantiles",
]


@dataclass
class HeadOutput:
    """What a head predicts for each sample of the batch.

    ``position (B,)`` in [-1, 1]; ``forecast (B, H)`` expected simple returns of bars
    t+1..t+H; optional ``probs (B, 3)`` down/flat/up probabilities (sum to 1),
    ``quantiles (B, H, Q)`` non-decreasing along Q, ``concentration (B, 3)`` Dirichlet
    parameters (> 0) and ``logits (B, 3)``. With ``positions="all"`` every field has
    ``(B, T)`` in place of ``(B,)``; :meth:`flatten` merges them into one axis.
    """

    position: Tensor
    forecast: Tensor
    probs: Tensor | None = None
    quantiles: Tensor | None = None
    concentration: Tensor | None = None
    logits: Tensor | None = None

    def flatten(self) -> HeadOutput:
        """Per-position outputs ``(B, T, ...)`` as ``(B·T, ...)`` (views, no copy)."""
        return HeadOutput(
            **{
                name: None if value is None else value.flatten(0, 1)
                for name, value in vars(self).items()
            }
        )

    def select(self, index: Tensor | slice) -> HeadOutput:
        """The rows ``index`` of the leading axis of every field."""
        return HeadOutput(
            **{name: None if v is None else v[index] for name, v in vars(self).items()}
        )


def non_crossing_quantiles(raw: Tensor, levels: list[float]) -> Tensor:
    """Monotone quantiles from unconstrained ``raw (..., Q)``.

    The level nearest 0.5 is the anchor (the median when 0.5 is a level); levels above it
    add cumulative ``softplus`` offsets, levels below subtract them, so the output is
    non-decreasing along Q by construction, for any input.
    """
    anchor = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
    center = raw[..., anchor : anchor + 1]  # (..., 1)
    up = center + torch.cumsum(F.softplus(raw[..., anchor + 1 :]), dim=-1)  # (..., Q_up)
    below = F.softplus(raw[..., :anchor]).flip(-1)  # offsets walking down from the anchor
    down = (center - torch.cumsum(below, dim=-1)).flip(-1)  # (..., Q_down), increasing
    return torch.cat([down, center, up], dim=-1)  # (..., Q)


class _Head(nn.Module):
    """Shared plumbing: the last-step read-out, units, labels and target checks."""

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__()
        self.d_model, self.horizon = d_model, cfg.horizon
        self.return_scale, self.flat_band = cfg.return_scale, cfg.flat_band
        self.loss_cfg = cfg.loss
        self.norm = nn.LayerNorm(d_model)

    def last_step(self, h: Tensor, positions: str = "last") -> Tensor:
        """``(B, T, D)`` → normalised last step ``(B, D)``, or every step (``"all"``)."""
        if h.ndim != 3 or h.shape[-1] != self.d_model:
            raise ValueError(
                f"{type(self).__name__}: expected the backbone output (B, T, {self.d_model}), "
                f"got {tuple(h.shape)}"
            )
        if positions == "all":
            return self.norm(h)  # (B, T, D)
        if positions != "last":
            raise ValueError(f"positions={positions!r}: use 'last' or 'all'")
        return self.norm(h[:, -1])  # (B, D)

    def check_targets(self, output: HeadOutput, targets: Tensor) -> Tensor:
        """Targets as ``(B, H)`` in return_scale units, or a ValueError naming the fix."""
        if targets.shape != output.forecast.shape:
            raise ValueError(
                f"{type(self).__name__}.loss: targets {tuple(targets.shape)} must match the "
                f"forecast {tuple(output.forecast.shape)} (batch, model.horizon={self.horizon}) "
                "— build targets with the same horizon as model.horizon"
            )
        return targets / self.return_scale

    def forecast_loss(
        self, forecast: Tensor, scaled_targets: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        cfg = self.loss_cfg
        return regression_loss(
            forecast / self.return_scale, scaled_targets, cfg.regression, cfg.huber_delta, weight
        )

    def labels(self, targets: Tensor) -> Tensor:
        """Down/flat/up class (0/1/2) of the first-horizon return, ``(B,)``."""
        return direction_labels(targets[..., 0], self.flat_band)


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out))


class _PositionFromForecast(nn.Module):
    """``tanh(first forecast in return_scale units)`` or a learned ``tanh(w·z)``.

    The learned position only receives gradients from the PnL/risk terms of
    :class:`~market_nn_plus_ultra.models.losses.CompositeTradingLoss`; with
    ``model.position_mode=learned`` give one of them a positive weight.
    """

    def __init__(self, d_model: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.proj = nn.Linear(d_model, 1) if mode == "learned" else None

    def forward(self, z: Tensor, scaled_forecast: Tensor) -> Tensor:
        if self.proj is None:
            return torch.tanh(scaled_forecast[..., 0])  # (B,) or (B, T)
        return torch.tanh(self.proj(z).squeeze(-1))  # (B,) or (B, T)


@register_head("regression")
class RegressionHead(_Head):
    """Multi-horizon return regression (MSE or Huber); position from the first forecast."""

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__(cfg, d_model)
        self.out = _mlp(d_model, self.horizon)
        self.position = _PositionFromForecast(d_model, cfg.position_mode)

    def forward(self, h: Tensor, positions: str = "last") -> HeadOutput:
        z = self.last_step(h, positions)
        scaled = self.out(z)  # (B, H) in return_scale units
        return HeadOutput(position=self.position(z, scaled), forecast=scaled * self.return_scale)

    def loss(self, output: HeadOutput, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        return self.forecast_loss(output.forecast, self.check_targets(output, targets), weight)


@register_head("action")
class ActionHead(_Head):
    """Sell/hold/buy logits (cross-entropy on down/flat/up labels); position = p_up − p_down.

    A small regression branch supplies the forecast and adds its loss to the CE.
    """

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__(cfg, d_model)
        self.classify = nn.Linear(d_model, 3)
        self.regress = _mlp(d_model, self.horizon)

    def forward(self, h: Tensor, positions: str = "last") -> HeadOutput:
        z = self.last_step(h, positions)
        logits = self.classify(z)  # (B, 3): down, flat, up
        probs = logits.softmax(dim=-1)
        return HeadOutput(
            position=probs[..., 2] - probs[..., 0],
            forecast=self.regress(z) * self.return_scale,
            probs=probs,
            logits=logits,
        )

    def loss(self, output: HeadOutput, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        scaled = self.check_targets(output, targets)
        labels, smoothing = self.labels(targets), self.loss_cfg.label_smoothing
        ce = classification_loss(output.logits, labels, smoothing, weight)
        return ce + self.forecast_loss(output.forecast, scaled, weight)


class _QuantileBlock(nn.Module):
    """``z (B, D)`` → non-crossing quantiles ``(B, H, Q)`` in return_scale units."""

    def __init__(self, d_model: int, horizon: int, levels: list[float]) -> None:
        super().__init__()
        self.horizon, self.levels = horizon, list(levels)
        self.register_buffer("tau", torch.tensor(levels), persistent=False)
        self.anchor = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
        self.out = _mlp(d_model, horizon * len(levels))

    def forward(self, z: Tensor) -> Tensor:
        raw = self.out(z).unflatten(-1, (self.horizon, len(self.levels)))  # (..., H, Q)
        return non_crossing_quantiles(raw, self.levels)


@register_head("quantile")
class QuantileHead(_Head):
    """Non-crossing quantiles per horizon (pinball loss); forecast = the anchor quantile.

    The anchor is the level nearest 0.5 (the median with the default levels), so the
    forecast is a median, robust to the fat tails of returns.
    """

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__(cfg, d_model)
        self.quantile = _QuantileBlock(d_model, self.horizon, cfg.quantiles)
        self.position = _PositionFromForecast(d_model, cfg.position_mode)

    def forward(self, h: Tensor, positions: str = "last") -> HeadOutput:
        z = self.last_step(h, positions)
        q = self.quantile(z)  # (B, H, Q)
        center = q[..., self.quantile.anchor]  # (B, H)
        return HeadOutput(
            position=self.position(z, center),
            forecast=center * self.return_scale,
            quantiles=q * self.return_scale,
        )

    def loss(self, output: HeadOutput, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        scaled = self.check_targets(output, targets)
        return pinball_loss(output.quantiles / self.return_scale, scaled, self.quantile.tau, weight)


class _DirichletBlock(nn.Module):
    """``z (B, D)`` → concentrations ``alpha = 1 + softplus(evidence) (B, 3)`` and the
    annealed evidential loss. The KL weight is ``min(1, step / anneal_steps)``; the
    counter is saved with the checkpoint. Standalone it advances once per training-mode
    loss call; a trainer with gradient accumulation calls :func:`anneal_per_optimizer_step`
    once and then :func:`advance_annealing` after each optimiser step, so λ counts
    optimiser steps, not micro-batches."""

    def __init__(self, d_model: int, anneal_steps: int) -> None:
        super().__init__()
        self.evidence = nn.Linear(d_model, 3)
        self.anneal_steps = anneal_steps
        self.advance_on_loss = True
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor) -> Tensor:
        return 1.0 + F.softplus(self.evidence(z))  # (B, 3), every alpha >= 1

    @property
    def kl_weight(self) -> Tensor:
        # a tensor, not .item(): reading the counter must not sync the GPU every step
        return (self.step.float() / self.anneal_steps).clamp(max=1.0)

    def loss(self, alpha: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        value = evidential_loss(alpha, labels, self.kl_weight, weight)
        if self.advance_on_loss and self.training and torch.is_grad_enabled():
            self.step += 1
        return value


def anneal_per_optimizer_step(model: nn.Module) -> None:
    """Make every Dirichlet KL counter in ``model`` advance only via :func:`advance_annealing`."""
    for block in model.modules():
        if isinstance(block, _DirichletBlock):
            block.advance_on_loss = False


def advance_annealing(model: nn.Module) -> None:
    """Advance every Dirichlet KL counter in ``model`` by one (call once per optimiser step)."""
    for block in model.modules():
        if isinstance(block, _DirichletBlock):
            block.step += 1  # in place on the device: no host sync


def _dirichlet_fields(alpha: Tensor) -> dict[str, Tensor]:
    probs = alpha / alpha.sum(-1, keepdim=True)  # expected class probabilities (B, 3)
    return {
        "position": probs[..., 2] - probs[..., 0],
        "probs": probs,
        "concentration": alpha,
        "logits": alpha.log(),
    }


@register_head("dirichlet")
class DirichletHead(_Head):
    """Evidential down/flat/up classifier (Sensoy et al. 2018); position = p_up − p_down.

    With little evidence the Dirichlet mean is near uniform, so the position shrinks
    towards flat on its own. A small regression branch supplies the forecast.
    """

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__(cfg, d_model)
        self.dirichlet = _DirichletBlock(d_model, cfg.loss.evidential_anneal_steps)
        self.regress = _mlp(d_model, self.horizon)

    def forward(self, h: Tensor, positions: str = "last") -> HeadOutput:
        z = self.last_step(h, positions)
        return HeadOutput(
            forecast=self.regress(z) * self.return_scale, **_dirichlet_fields(self.dirichlet(z))
        )

    def loss(self, output: HeadOutput, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        scaled = self.check_targets(output, targets)
        evidential = self.dirichlet.loss(output.concentration, self.labels(targets), weight)
        return evidential + self.forecast_loss(output.forecast, scaled, weight)


@register_head("quantile_dirichlet")
class QuantileDirichletHead(_Head):
    """Quantiles of the returns and Dirichlet direction evidence from one read-out.

    The calibration-aware option: the quantiles give the return distribution (forecast
    = anchor quantile), the Dirichlet gives how sure the direction is; position =
    p_up − p_down shrinks to flat when evidence is thin. Loss = pinball + evidential.
    """

    def __init__(self, cfg: ModelConfig, d_model: int) -> None:
        super().__init__(cfg, d_model)
        self.quantile = _QuantileBlock(d_model, self.horizon, cfg.quantiles)
        self.dirichlet = _DirichletBlock(d_model, cfg.loss.evidential_anneal_steps)

    def forward(self, h: Tensor, positions: str = "last") -> HeadOutput:
        z = self.last_step(h, positions)
        q = self.quantile(z)  # (B, H, Q)
        return HeadOutput(
            forecast=q[..., self.quantile.anchor] * self.return_scale,
            quantiles=q * self.return_scale,
            **_dirichlet_fields(self.dirichlet(z)),
        )

    def loss(self, output: HeadOutput, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        scaled = self.check_targets(output, targets)
        tau = self.quantile.tau
        pinball = pinball_loss(output.quantiles / self.return_scale, scaled, tau, weight)
        return pinball + self.dirichlet.loss(output.concentration, self.labels(targets), weight)
