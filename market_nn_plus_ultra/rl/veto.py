"""The maths of vetoed actions in the off-policy update (docs/feedback.md, "Veto maths").

A replayed transition carries, per symbol, whether its action is known (logged for that
symbol) and whether an analyst vetoed it. The AWR term imitates only the known,
unvetoed actions (:func:`symbol_log_prob` is ``log π(a_s|s)`` per symbol, the terms
:meth:`~.policy.ActorCritic.log_prob_entropy` sums). With
``reinforcement.ppo.off_policy.veto=penalise`` an unlikelihood term (Welleck et al. 2019,
arXiv:1908.04319) pushes probability away from each vetoed action:

    L_veto = veto_penalty · mean_b Σ_s veto_bs · −log(1 − P_bs)

``P`` is the probability of the vetoed action's event under the current policy:

- discrete: the vetoed class's probability; ``−log(1 − p) = logsumexp(all logits) −
  logsumexp(the other two)``, exact and with gradients bounded by 1 per logit;
- continuous (``a = tanh(u)``, ``u ~ N(μ, σ)``): a vetoed long or short is the vetoed
  *side*, ``P = Φ(side · μ / σ)``, so ``−log(1 − P) = −log Φ(−side · μ / σ)``
  (``log_ndtr``: finite everywhere, gradient growing at most linearly in the margin); a
  vetoed flat position (``|a| < FLAT_BAND``) is the band ``|tanh u| < FLAT_BAND``.

σ enters without gradient: a veto moves the policy's action (its mean or logits), not its
exploration noise. Each term falls to 0 as the policy leaves the vetoed event, so the
penalty stops pushing once the vetoed action has become unlikely.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .policy import PolicyOutput

__all__ = ["FLAT_BAND", "symbol_log_prob", "veto_unlikelihood"]

#: A vetoed continuous position with |position| below this is a vetoed "stay flat".
FLAT_BAND = 0.05
_LOG_2PI = math.log(2.0 * math.pi)
_FLAT_U = math.atanh(FLAT_BAND)


def symbol_log_prob(out: PolicyOutput, raw: Tensor) -> Tensor:
    """``log π(raw_s | s)`` per symbol ``(B, S)`` (continuous: of the pre-squash Gaussian)."""
    if out.mean is not None:
        log_std = out.log_std.expand_as(out.mean)
        z = (raw - out.mean) * torch.exp(-log_std)
        return -0.5 * z.square() - log_std - 0.5 * _LOG_2PI
    log_p = out.logits.log_softmax(dim=-1)  # (B, S, 3)
    return log_p.gather(-1, raw.long()[..., None]).squeeze(-1)


def _unlikely_class(logits: Tensor, raw: Tensor) -> Tensor:
    """``−log(1 − softmax(logits)[raw])`` per symbol ``(B, S)``."""
    vetoed = torch.nn.functional.one_hot(raw.long(), logits.shape[-1]).bool()  # (B, S, 3)
    others = logits.masked_fill(vetoed, float("-inf"))
    return torch.logsumexp(logits, dim=-1) - torch.logsumexp(others, dim=-1)


def _unlikely_side(mean: Tensor, log_std: Tensor, raw: Tensor) -> Tensor:
    """``−log(1 − P(vetoed event))`` per symbol for the tanh-Gaussian ``(B, S)``."""
    std = torch.exp(log_std.detach()).expand_as(mean)
    side = torch.sign(raw)
    away = -torch.special.log_ndtr(-side * mean / std)  # a vetoed long or short
    lo = torch.special.ndtr((-_FLAT_U - mean) / std)
    hi = torch.special.ndtr((_FLAT_U - mean) / std)
    band = -torch.log((1.0 - (hi - lo)).clamp(min=1e-6))  # a vetoed flat position
    return torch.where(raw.abs() < _FLAT_U, band, away)


def veto_unlikelihood(out: PolicyOutput, raw: Tensor, veto: Tensor) -> Tensor:
    """``mean_b Σ_s veto_bs · −log(1 − P_bs)``: a scalar, 0 without vetoes in the batch.

    ``raw`` are the stored actions (pre-squash positions, or classes 0/1/2), ``veto``
    ``(B, S)`` bool.
    """
    if out.mean is not None:
        terms = _unlikely_side(out.mean, out.log_std, raw)
    else:
        terms = _unlikely_class(out.logits, raw)
    return torch.where(veto, terms, torch.zeros_like(terms)).sum(dim=-1).mean()
