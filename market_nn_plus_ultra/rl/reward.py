"""Reward shaping: risk terms added to each bar's net portfolio return, batched over envs.

``reward = scale · (net + Σ weight_k · term_k)`` where every term is switched and weighted
in ``reinforcement.reward`` (docs/rl.md):

- **differential Sharpe** (Moody, Wu, Liao & Saffell 1998): the first-order effect of
  this bar's return on an exponentially weighted Sharpe ratio,
  ``D_t = (B ΔA − ½ A ΔB) / (B − A²)^{3/2}`` with ``A``, ``B`` the moving first and
  second moments before the bar, ``ΔA = r − A``, ``ΔB = r² − B``;
- **differential Sortino** (the differential downside deviation ratio, Moody & Saffell
  2001): ``(r − ½A) / DD`` for a gain, ``(DD² (r − ½A) − ½ A r²) / DD³`` for a loss,
  ``DD²`` the moving mean of ``min(r, 0)²``;
- **drawdown** penalty ``1 − equity / peak``;
- **CVaR** penalty: the mean loss of the worst ``alpha`` share of the episode's last
  ``window`` net returns (this bar's included), when it is a loss;
- **entropic risk**: ``U(r) − r`` with the exponential utility ``U(r) = (1 − e^{−λ r})/λ``
  (weight 1 turns the net return into its utility; ``U(r) ≈ r − λ r²/2``);
- **turnover** penalty: the bar's mean ``|fill|``.

The moving moments start at 0 each episode and are bias-corrected like Adam's
(``m / (1 − (1 − η)^n)`` after ``n`` bars), so the first bars are read against the
moments of the returns seen, not against zeros; a term is 0 while its variance (or
downside deviation) is still 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config.reinforcement import RewardConfig

__all__ = [
    "REWARD_TERMS",
    "RewardShaper",
    "cvar_penalty",
    "differential_sharpe",
    "differential_sortino",
    "drawdown_penalty",
    "entropic_term",
]

#: Shaping terms in the order ``info["reward_terms"]`` lists them.
REWARD_TERMS = (
    "differential_sharpe",
    "differential_sortino",
    "drawdown",
    "cvar",
    "entropic",
    "turnover",
)
_EPS = 1e-12  # a variance (squared downside deviation) at or below this reads as unknown


def differential_sharpe(r: Tensor, mean: Tensor, second: Tensor) -> Tensor:
    """``D_t`` of return ``r`` given the moments ``A = mean``, ``B = second`` before it (any shape)."""
    var = second - mean * mean
    num = second * (r - mean) - 0.5 * mean * (r * r - second)
    ok = var > _EPS
    return torch.where(ok, num / var.clamp(min=_EPS).pow(1.5), 0.0)


def differential_sortino(r: Tensor, mean: Tensor, downside2: Tensor) -> Tensor:
    """Differential downside deviation ratio of ``r`` given ``A = mean``, ``DD² = downside2``."""
    dd2 = downside2.clamp(min=_EPS)
    dd = dd2.sqrt()
    gain = (r - 0.5 * mean) / dd
    loss = (dd2 * (r - 0.5 * mean) - 0.5 * mean * r * r) / (dd2 * dd)
    return torch.where(downside2 > _EPS, torch.where(r > 0, gain, loss), 0.0)


def drawdown_penalty(equity: Tensor, peak: Tensor) -> Tensor:
    """``1 − equity / peak`` (0 at a new high)."""
    return 1.0 - equity / peak


def cvar_penalty(recent: Tensor, count: Tensor, alpha: float) -> Tensor:
    """Expected loss in the worst ``alpha`` tail of ``recent [N, K]`` returns, floored at 0.

    Only the first ``min(count, K)`` entries of a row are returns (a ring, order free);
    the tail is the ``ceil(alpha · n)`` lowest of the ``n`` known returns.
    """
    K = recent.shape[1]
    n = count.clamp(max=K)  # (N,)
    slot = torch.arange(K, device=recent.device)
    known = slot < n.unsqueeze(1)  # (N, K)
    ordered = torch.where(known, recent, float("inf")).sort(dim=1).values  # lowest first
    k = torch.ceil(alpha * n.to(recent.dtype)).clamp(min=1)  # (N,) tail size
    tail = slot < k.unsqueeze(1)
    loss = -torch.where(tail & known, ordered, 0.0).sum(dim=1) / k
    return torch.where(n > 0, loss.clamp(min=0.0), 0.0)


def entropic_term(r: Tensor, risk_aversion: float) -> Tensor:
    """``U(r) − r`` with ``U(r) = (1 − exp(−λ r)) / λ`` (≤ 0, ≈ −λ r² / 2 for small r)."""
    return -torch.expm1(-risk_aversion * r) / risk_aversion - r


@dataclass
class _Moments:
    """Per-env moving moments of the net return (EMA sums and their bias-correction)."""

    mean: Tensor  # (N,) EMA of r
    second: Tensor  # (N,) EMA of r²
    downside2: Tensor  # (N,) EMA of min(r, 0)²
    decay: Tensor  # (N,) (1 − η)^n: what the EMAs still lack of their full weight


class RewardShaper:
    """Shape a batch of bars' net returns ``[N]`` into rewards, keeping per-env state.

    ``shaper(net, turnover, equity)`` returns ``(reward [N], terms)`` — ``terms`` maps each
    enabled term of :data:`REWARD_TERMS` to its unweighted value ``[N]``. ``equity`` is
    the portfolio equity after the bar (1 at the episode start). ``reset(done)`` starts
    the episodes of envs ``done`` afresh.
    """

    def __init__(self, cfg: RewardConfig, num_envs: int, device: torch.device) -> None:
        self.cfg = cfg
        kw = {"dtype": torch.float32, "device": device}
        self._sharpe_eta = cfg.differential_sharpe.eta
        self._sortino_eta = cfg.differential_sortino.eta
        self.sharpe = self._moments(num_envs, kw)
        self.sortino = self._moments(num_envs, kw)
        self.peak = torch.ones(num_envs, **kw)
        self.recent = torch.zeros(num_envs, cfg.cvar.window, **kw)
        self.count = torch.zeros(num_envs, dtype=torch.long, device=device)

    @staticmethod
    def _moments(n: int, kw: dict) -> _Moments:
        return _Moments(
            torch.zeros(n, **kw), torch.zeros(n, **kw), torch.zeros(n, **kw), torch.ones(n, **kw)
        )

    def reset(self, done: Tensor) -> None:
        """Clear the state of envs ``done`` (bool ``[N]``) for their next episode."""
        for m in (self.sharpe, self.sortino):
            for name in ("mean", "second", "downside2"):
                getattr(m, name).masked_fill_(done, 0.0)
            m.decay.masked_fill_(done, 1.0)
        self.peak.masked_fill_(done, 1.0)
        self.count.masked_fill_(done, 0)

    @staticmethod
    def _advance(m: _Moments, r: Tensor, eta: float) -> tuple[Tensor, Tensor, Tensor]:
        """The bias-corrected moments before ``r``, then fold ``r`` into the EMAs."""
        full = (1.0 - m.decay).clamp(min=_EPS)  # 0 before the first bar: moments unknown
        before = (m.mean / full, m.second / full, m.downside2 / full)
        m.mean.mul_(1 - eta).add_(eta * r)
        m.second.mul_(1 - eta).add_(eta * r * r)
        m.downside2.mul_(1 - eta).add_(eta * r.clamp(max=0.0).square())
        m.decay.mul_(1 - eta)
        return before

    def __call__(
        self, net: Tensor, turnover: Tensor, equity: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        terms: dict[str, Tensor] = {}
        reward = net
        if cfg.differential_sharpe.enabled:
            mean, second, _ = self._advance(self.sharpe, net, self._sharpe_eta)
            c = cfg.differential_sharpe.clip
            terms["differential_sharpe"] = differential_sharpe(net, mean, second).clamp(-c, c)
            reward = reward + cfg.differential_sharpe.weight * terms["differential_sharpe"]
        if cfg.differential_sortino.enabled:
            mean, _, downside2 = self._advance(self.sortino, net, self._sortino_eta)
            c = cfg.differential_sortino.clip
            term = differential_sortino(net, mean, downside2).clamp(-c, c)
            terms["differential_sortino"] = term
            reward = reward + cfg.differential_sortino.weight * term
        if cfg.drawdown.enabled:
            self.peak = torch.maximum(self.peak, equity)
            terms["drawdown"] = drawdown_penalty(equity, self.peak)
            reward = reward - cfg.drawdown.weight * terms["drawdown"]
        if cfg.cvar.enabled:
            slot = (self.count % self.recent.shape[1]).unsqueeze(1)
            self.recent.scatter_(1, slot, net.unsqueeze(1).to(self.recent.dtype))
            self.count += 1
            terms["cvar"] = cvar_penalty(self.recent, self.count, cfg.cvar.alpha)
            reward = reward - cfg.cvar.weight * terms["cvar"]
        if cfg.entropic.enabled:
            terms["entropic"] = entropic_term(net, cfg.entropic.risk_aversion)
            reward = reward + cfg.entropic.weight * terms["entropic"]
        if cfg.turnover.enabled:
            terms["turnover"] = turnover
            reward = reward - cfg.turnover.weight * turnover
        if cfg.scale != 1.0:
            reward = reward * cfg.scale
        return reward, terms
