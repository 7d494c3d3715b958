"""Loss functions: supervised head losses and differentiable risk terms (tensors only).

Two families:

* **Supervised** — :func:`regression_loss` (MSE / Huber), :func:`classification_loss`
  (cross-entropy over down/flat/up, labels from :func:`direction_labels`),
  :func:`pinball_loss` (quantiles) and :func:`evidential_loss` (Dirichlet, Sensoy et al.
  2018, "Evidential Deep Learning to Quantify Classification Uncertainty").
* **Risk** — :func:`sharpe_ratio`, :func:`sortino_ratio`, :func:`max_drawdown` and
  :func:`cvar` on a returns tensor ``[..., T]``. They return the same value (and sign) as
  ``evaluation.metrics`` up to ``eps``, but are differentiable and never NaN/inf: every
  denominator carries ``eps`` inside the square root, so flat (all-zero) or constant
  returns give finite values *and* finite gradients.

:class:`CompositeTradingLoss` mixes a head's loss with the risk terms of the PnL the
head's positions earn; see its docstring for how a batch becomes a PnL stream.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.config import LossConfig
from market_nn_plus_ultra.simulation.pnl import horizon_pnl, pnl_stream

__all__ = [
    "LOSS_TERMS",
    "CompositeTradingLoss",
    "TradingLossResult",
    "classification_loss",
    "cvar",
    "direction_labels",
    "dirichlet_kl_uniform",
    "evidential_loss",
    "max_drawdown",
    "pinball_loss",
    "regression_loss",
    "sharpe_ratio",
    "sortino_ratio",
]

# --------------------------------------------------------------------------------------
# Supervised losses
# --------------------------------------------------------------------------------------


def _weighted_mean(values: Tensor, weight: Tensor | None, dim: int = -1) -> Tensor:
    """Mean of ``values`` along ``dim`` weighted by ``weight`` (broadcastable; 0/1 weights
    give the mean over the kept entries). Shapes stay static and nothing syncs with the
    host, unlike boolean indexing. All-zero weights give 0, not NaN."""
    if weight is None:
        return values.mean(dim)
    w = weight.to(values.dtype).expand_as(values)
    return (values * w).sum(dim) / w.sum(dim).clamp_min(torch.finfo(values.dtype).tiny)


def _row_mean(per_element: Tensor, weight: Tensor | None) -> Tensor:
    """Scalar mean of ``per_element [B, ...]``: over the trailing dims, then over rows
    weighted by ``weight [B]`` (the plain mean over every element without one)."""
    if weight is None:
        return per_element.mean()
    return _weighted_mean(per_element.reshape(per_element.shape[0], -1).mean(-1), weight, 0)


def regression_loss(
    pred: Tensor,
    target: Tensor,
    kind: Literal["mse", "huber"] = "mse",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """Mean squared error or Huber loss (``delta`` in the units of ``pred``); scalar.

    ``weight [B]`` (optional) weighs the rows of ``pred [B, ...]``: 0/1 weights equal the
    loss of the rows kept, without boolean indexing.
    """
    if kind == "mse":
        return _row_mean(F.mse_loss(pred, target, reduction="none"), weight)
    if kind == "huber":
        return _row_mean(F.huber_loss(pred, target, reduction="none", delta=delta), weight)
    raise ValueError(f"regression_loss: kind must be 'mse' or 'huber', got {kind!r}")


def direction_labels(returns: Tensor, flat_band: float = 0.0) -> Tensor:
    """Class of each return: 0 = down (< −band), 1 = flat (|r| ≤ band), 2 = up (> band)."""
    if flat_band < 0:
        raise ValueError(f"direction_labels: flat_band must be >= 0, got {flat_band}")
    labels = torch.ones_like(returns, dtype=torch.long)
    labels = torch.where(returns > flat_band, 2, labels)
    return torch.where(returns < -flat_band, 0, labels)


def classification_loss(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, weight: Tensor | None = None
) -> Tensor:
    """Cross-entropy of ``logits[B, C]`` against integer ``labels[B]`` (rows weighted by
    the optional ``weight [B]``); scalar."""
    ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="none")
    return _row_mean(ce, weight)


def pinball_loss(
    quantiles: Tensor, target: Tensor, levels: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Mean pinball (quantile) loss.

    ``quantiles[..., Q]`` are predictions at probability ``levels[Q]``; ``target[...]``
    is the realised value. Per element: ``max(τ·(y − q), (τ − 1)·(y − q))``. The
    optional ``weight [B]`` weighs the rows (first dim).
    """
    err = target.unsqueeze(-1) - quantiles  # (..., Q)
    tau = levels.to(dtype=quantiles.dtype, device=quantiles.device)
    return _row_mean(torch.maximum(tau * err, (tau - 1.0) * err), weight)


def dirichlet_kl_uniform(alpha: Tensor) -> Tensor:
    """``KL(Dir(alpha) ‖ Dir(1, …, 1))`` per row of ``alpha[B, K]`` → ``[B]`` (nats)."""
    k = alpha.shape[-1]
    total = alpha.sum(-1)
    return (
        torch.lgamma(total)
        - torch.lgamma(torch.tensor(float(k), dtype=alpha.dtype, device=alpha.device))
        - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(total).unsqueeze(-1))).sum(-1)
    )


def evidential_loss(
    alpha: Tensor,
    labels: Tensor,
    kl_weight: float | Tensor = 0.0,
    weight: Tensor | None = None,
) -> Tensor:
    """Evidential classification loss of Sensoy et al. (2018), eq. 5 plus the KL term.

    ``alpha[B, K]`` are Dirichlet concentrations (> 0), ``labels[B]`` integer classes.
    The data term is the expected squared error under the Dirichlet,
    ``Σ_j (y_j − p_j)² + p_j (1 − p_j) / (S + 1)`` with ``p = alpha / S``; the
    regulariser ``KL(Dir(α̃) ‖ Dir(1))`` with the true class's evidence removed
    (``α̃ = y + (1 − y) α``) shrinks misleading evidence; ``kl_weight`` is the annealing
    coefficient λ_t = min(1, t / anneal_steps). Returns the batch mean (weighted by the
    optional ``weight [B]``).
    """
    y = F.one_hot(labels, alpha.shape[-1]).to(alpha.dtype)
    strength = alpha.sum(-1, keepdim=True)  # (B, 1)
    p = alpha / strength
    data = ((y - p) ** 2 + p * (1.0 - p) / (strength + 1.0)).sum(-1)
    alpha_tilde = y + (1.0 - y) * alpha
    return _row_mean(data + kl_weight * dirichlet_kl_uniform(alpha_tilde), weight)


# --------------------------------------------------------------------------------------
# Differentiable risk measures on returns [..., T]
# --------------------------------------------------------------------------------------


def _check_length(returns: Tensor, dim: int, need: int, name: str) -> None:
    if returns.ndim == 0 or returns.shape[dim] < need:
        raise ValueError(
            f"{name}: needs at least {need} returns along dim {dim}, got shape "
            f"{tuple(returns.shape)} — use a longer PnL stream (batch or horizon)"
        )


def sharpe_ratio(
    returns: Tensor,
    dim: int = -1,
    periods_per_year: float = 1.0,
    eps: float = 1e-8,
    weight: Tensor | None = None,
) -> Tensor:
    """``mean / sqrt(var_ddof1 + eps) · sqrt(periods_per_year)`` along ``dim``.

    Per-period (``periods_per_year = 1``) by default; annualising only rescales it. With
    0/1 ``weight`` (broadcastable to ``returns``) only the weighted entries count:
    ``var = Σ w (r − m)² / (Σ w − 1)``.
    """
    _check_length(returns, dim, 2, "sharpe_ratio")
    if weight is None:
        mean = returns.mean(dim)
        var = returns.var(dim, correction=1)
    else:
        w = weight.to(returns.dtype).expand_as(returns)
        n = w.sum(dim)
        mean = (returns * w).sum(dim) / n.clamp_min(1.0)
        dev = (returns - mean.unsqueeze(dim)).square()
        var = (dev * w).sum(dim) / (n - 1.0).clamp_min(1.0)
    return mean / torch.sqrt(var + eps) * periods_per_year**0.5


def sortino_ratio(
    returns: Tensor,
    dim: int = -1,
    periods_per_year: float = 1.0,
    eps: float = 1e-8,
    weight: Tensor | None = None,
) -> Tensor:
    """``mean / sqrt(mean(min(r, 0)²) + eps) · sqrt(periods_per_year)`` along ``dim``.

    The downside deviation is empyrical's (mean over all periods, target 0).
    """
    _check_length(returns, dim, 2, "sortino_ratio")
    downside_sq = _weighted_mean(torch.clamp(returns, max=0.0).square(), weight, dim)
    mean = _weighted_mean(returns, weight, dim)
    return mean / torch.sqrt(downside_sq + eps) * periods_per_year**0.5


def max_drawdown(returns: Tensor, dim: int = -1) -> Tensor:
    """Largest peak-to-trough loss of compounded wealth along ``dim``, as a fraction ≤ 0.

    Wealth starts at 1 before the first period (so the peak is ≥ 1 and never divides by
    zero); the sign is empyrical's (−0.25 = a 25% drawdown). The gradient flows through
    the trough and its running peak.
    """
    _check_length(returns, dim, 1, "max_drawdown")
    r = returns.movedim(dim, -1)
    wealth = torch.cumprod(1.0 + r, dim=-1)  # (..., T)
    peak = torch.cummax(wealth, dim=-1).values.clamp(min=1.0)
    return (wealth / peak - 1.0).amin(-1).clamp(max=0.0)


def cvar(
    returns: Tensor, alpha: float = 0.05, dim: int = -1, weight: Tensor | None = None
) -> Tensor:
    """Expected shortfall: mean of the worst ``alpha`` share of returns (negative = loss).

    The worst ``int((T − 1)·alpha) + 1`` values are averaged, the convention of
    ``evaluation.metrics.cvar``. With a 0/1 ``weight`` (same shape as ``returns``) T
    counts the kept entries only; ``k`` stays a tensor, so nothing syncs with the host.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"cvar: alpha must lie in (0, 1), e.g. 0.05, got {alpha}")
    _check_length(returns, dim, 1, "cvar")
    if weight is None:
        n = returns.shape[dim]
        k = int((n - 1) * alpha) + 1
        worst = torch.topk(returns, k, dim=dim, largest=False).values
        return worst.mean(dim)
    keep = weight.expand_as(returns) > 0
    r = returns.movedim(dim, -1)
    keep = keep.movedim(dim, -1)
    ranked = torch.where(keep, r, torch.full_like(r, float("inf"))).sort(dim=-1).values
    n = keep.sum(-1, keepdim=True)  # (..., 1) kept entries
    k = (((n - 1).clamp_min(0).double() * alpha).floor() + 1).to(n.dtype)  # (..., 1)
    take = torch.arange(r.shape[-1], device=r.device) < k  # (..., T) the k worst
    worst = torch.where(take, ranked, torch.zeros_like(ranked))  # no inf·0
    return worst.sum(-1) / k.squeeze(-1).to(r.dtype)


# --------------------------------------------------------------------------------------
# Composite loss
# --------------------------------------------------------------------------------------

#: The weight keys :class:`CompositeTradingLoss` accepts.
LOSS_TERMS = ("head", "pnl", "sharpe", "sortino", "drawdown", "cvar")


@dataclass
class TradingLossResult:
    """``total`` (scalar, differentiable), ``terms`` (detached per-term values), ``net``."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    net: Tensor | None = None


class CompositeTradingLoss(nn.Module):
    """Head loss plus weighted risk penalties on the PnL the positions earn.

    ``total = w_head·head_loss − w_pnl·mean(net) − w_sharpe·Sharpe − w_sortino·Sortino
    − w_drawdown·MaxDD − w_cvar·CVaR`` (MaxDD and CVaR are ≤ 0 in the usual sign, so
    these terms penalise losses). Weights of 0 skip a term.

    How a batch becomes a PnL stream (``mode``):

    * ``"horizon"`` (default; fits shuffled window batches): each sample's position is
      entered at its bar's close and held over its forward returns t+1..t+H, giving
      ``net[B, H]`` (:func:`~market_nn_plus_ultra.simulation.pnl.horizon_pnl`). Sharpe,
      Sortino and CVaR pool all ``B·H`` bar returns; the drawdown is taken along each
      sample's horizon and averaged. Entry costs are charged from ``initial_position``
      (flat by default, i.e. every sample pays to enter).
    * ``"sequence"`` (batches ordered in time for one symbol, or ``[S, T]`` blocks):
      ``position[..., T]`` is a trading sequence and the first-horizon returns
      ``targets[..., T, 0]`` its per-bar returns; costs charge each change of position
      and every risk term runs along T.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        mode: Literal["horizon", "sequence"] = "horizon",
        cost_bps: float = 0.0,
        slippage_bps: float = 0.0,
        holding_bps: float = 0.0,
        smoothing: float = 1e-4,
        cvar_alpha: float = 0.05,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        for key, value in weights.items():
            if key not in LOSS_TERMS:
                guess = difflib.get_close_matches(key, LOSS_TERMS, n=1)
                hint = f" — did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(
                    f"CompositeTradingLoss: unknown loss term {key!r}{hint} "
                    f"Known terms: {', '.join(LOSS_TERMS)}."
                )
            if value < 0:
                raise ValueError(
                    f"CompositeTradingLoss: weight of {key!r} must be >= 0, got {value}"
                )
        if mode not in ("horizon", "sequence"):
            raise ValueError(
                f"CompositeTradingLoss: mode must be 'horizon' or 'sequence', got {mode!r}"
            )
        self.weights = {k: float(v) for k, v in weights.items() if v}
        if not self.weights:
            raise ValueError(
                "CompositeTradingLoss: every weight is 0 — give at least one of "
                f"{', '.join(LOSS_TERMS)} a positive weight"
            )
        self.mode = mode
        self.cost_bps, self.slippage_bps, self.holding_bps = cost_bps, slippage_bps, holding_bps
        self.smoothing, self.cvar_alpha, self.eps = smoothing, cvar_alpha, eps

    @classmethod
    def from_config(cls, cfg: LossConfig) -> CompositeTradingLoss:
        """The loss described by the ``model.loss`` section."""
        weights = {term: getattr(cfg, f"{term}_weight") for term in LOSS_TERMS}
        return cls(
            weights,
            mode=cfg.pnl_mode,
            cost_bps=cfg.cost_bps,
            slippage_bps=cfg.slippage_bps,
            holding_bps=cfg.holding_bps,
            smoothing=cfg.smoothing,
            cvar_alpha=cfg.cvar_alpha,
            eps=cfg.eps,
        )

    def net_returns(
        self, position: Tensor, targets: Tensor, initial_position: Tensor | float | None = None
    ) -> Tensor:
        """The PnL stream of ``position`` over ``targets`` under ``mode`` (see class doc)."""
        charges = (self.cost_bps, self.slippage_bps, self.holding_bps)
        if self.mode == "horizon":
            return horizon_pnl(position, targets, *charges, initial_position, self.smoothing)
        returns = targets[..., 0] if targets.ndim == position.ndim + 1 else targets
        return pnl_stream(position, returns, *charges, initial_position, self.smoothing)

    def forward(
        self,
        position: Tensor,
        targets: Tensor,
        head_loss: Tensor | None = None,
        initial_position: Tensor | float | None = None,
        weight: Tensor | None = None,
    ) -> TradingLossResult:
        """Combine ``head_loss`` (scalar) with the risk terms of ``position[B]`` on
        ``targets[B, H]``.

        ``weight`` (optional 0/1 ``[B]``, or ``[..., T]`` in sequence mode) keeps only the
        weighted samples in every risk term — the value of the loss on the kept rows,
        with static shapes and no host sync. In sequence mode a row weighted 0 still
        holds its position, so the cost of moving in and out of it stays counted.
        """
        w = self.weights
        if "head" in w and head_loss is None:
            raise ValueError(
                "CompositeTradingLoss: the 'head' weight is set but no head_loss was given — "
                "pass head.loss(output, targets) or set the head weight to 0"
            )
        terms: dict[str, Tensor] = {}
        if "head" in w:
            terms["head"] = head_loss
        risk = [k for k in ("pnl", "sharpe", "sortino", "drawdown", "cvar") if k in w]
        net = self.net_returns(position, targets, initial_position) if risk else None
        if net is not None:
            pooled = net.reshape(-1) if self.mode == "horizon" else net
            pw = None  # the weight of each pooled return
            if weight is not None and self.mode == "horizon":
                pw = weight[:, None].expand_as(net).reshape(-1)  # (B·H,)
            elif weight is not None:
                pw = weight.expand_as(net)
            if "pnl" in w:
                terms["pnl"] = -_weighted_mean(pooled, pw).mean()
            if "sharpe" in w:
                terms["sharpe"] = -sharpe_ratio(pooled, eps=self.eps, weight=pw).mean()
            if "sortino" in w:
                terms["sortino"] = -sortino_ratio(pooled, eps=self.eps, weight=pw).mean()
            if "drawdown" in w:
                if self.mode == "horizon":  # per sample along its horizon, then averaged
                    dd = _weighted_mean(max_drawdown(net), weight, 0)
                else:  # a zero return leaves wealth unchanged: the kept bars' drawdown
                    dd = max_drawdown(net if pw is None else net * pw).mean()
                terms["drawdown"] = -dd
            if "cvar" in w:
                terms["cvar"] = -cvar(pooled, self.cvar_alpha, weight=pw).mean()
        total = sum(w[k] * v for k, v in terms.items())
        return TradingLossResult(
            total=total, terms={k: v.detach() for k, v in terms.items()}, net=net
        )
