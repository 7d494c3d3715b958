"""The mixture-of-experts feed-forward: top-k routed SwiGLU experts, no dropped tokens.

:class:`MoEFeedForward` maps ``(B, T, D) -> (B, T, D)`` per token (so it is causal and
batch-independent); :mod:`~market_nn_plus_ultra.models.layers` re-exports it with the
other building blocks. The sparse path runs the experts as grouped matmuls; the
fallback (no ``F.grouped_mm``, or fp16/fp32 on CUDA) runs every expert on every token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from market_nn_plus_ultra.models.embedding import Dropout

__all__ = ["MoEFeedForward", "ffn_hidden"]


def ffn_hidden(d_model: int, ff_mult: int) -> int:
    """SwiGLU width: 2/3 of ``ff_mult·d`` (same parameters as a GELU MLP), a multiple of 8."""
    return max(8, 8 * math.ceil(2 * ff_mult * d_model / 3 / 8))


class MoEFeedForward(nn.Module):
    """Mixture of SwiGLU experts with top-k routing and no dropped tokens.

    Each token goes to its ``top_k`` most probable experts, weighted by their
    renormalised router probabilities. Assignments are sorted by expert and run through
    one grouped matmul (where grouped matmuls are unavailable, every expert runs on every
    token as one batched matmul and the unselected outputs get weight 0), so no token is
    ever dropped, nothing syncs with the host and the layer stays per-token: causal and
    batch-independent.
    After each forward ``aux_loss`` holds ``load_balance_weight · E · Σ_e f_e P_e``
    (Switch Transformer, Fedus et al. 2021; 1·weight when perfectly balanced), where
    ``f_e`` is the share of assignments and ``P_e`` the mean router probability of expert e.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int = 8,
        top_k: int = 2,
        ff_mult: int = 4,
        router_dropout: float = 0.0,
        dropout: float = 0.0,
        load_balance_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k ({top_k}) must lie in 1..num_experts ({num_experts})")
        self.num_experts, self.top_k, self.weight = num_experts, top_k, load_balance_weight
        hidden = ffn_hidden(d_model, ff_mult)
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.router_drop = Dropout(router_dropout)
        self.w12 = nn.Parameter(torch.randn(num_experts, d_model, 2 * hidden) / d_model**0.5)
        self.w3 = nn.Parameter(torch.randn(num_experts, hidden, d_model) / hidden**0.5)
        self.drop = Dropout(dropout)
        self.aux_loss: Tensor = torch.zeros(())

    def route(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Route ``tokens (N, D)`` → gates ``(N, k)``, experts ``(N, k)``, probs ``(N, E)``."""
        probs = self.router(self.router_drop(tokens)).float().softmax(dim=-1)  # (N, E)
        top_p, experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        return top_p / top_p.sum(dim=-1, keepdim=True), experts, probs

    def _grouped(self, tokens: Tensor, gates: Tensor, experts: Tensor, counts: Tensor) -> Tensor:
        """Sparse path: assignments sorted by expert through two grouped matmuls, ``(N, D)``.

        The group ends ``offs`` stay on the device, so nothing syncs with the host.
        """
        dtype = tokens.dtype
        if tokens.is_cuda and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        # `.to` is a no-op when the dtype already matches: no per-forward copy in fp32
        w12, w3 = self.w12.to(dtype), self.w3.to(dtype)
        flat = experts.reshape(-1)  # (N·k,) expert of each assignment
        order = flat.argsort(stable=True)  # assignments grouped by expert
        source = order // self.top_k  # (N·k,) token of each sorted assignment
        offs = counts.cumsum(0).to(torch.int32)  # end row of each expert's group
        xs = tokens[source].to(dtype)  # (N·k, D)
        a, b = F.grouped_mm(xs, w12, offs=offs).chunk(2, dim=-1)  # (N·k, h)
        h = F.grouped_mm((F.silu(a) * b).contiguous(), w3, offs=offs)  # (N·k, D)
        h = h * gates.reshape(-1)[order, None]
        return torch.zeros_like(tokens, dtype=h.dtype).index_add(0, source, h)  # (N, D)

    def _dense(self, tokens: Tensor, gates: Tensor, experts: Tensor) -> Tensor:
        """Fallback without grouped matmuls: every expert on every token, batched.

        ``E/k`` times the sparse FLOPs, but static shapes and no host sync (the old split
        by ``counts.tolist()`` stalled the GPU every forward). Non-selected experts get a
        combine weight of exactly 0, so the output equals the sparse one. Under autocast
        ``torch.matmul`` casts (and caches) the expert weights itself.
        """
        combine = torch.zeros(
            tokens.shape[0], self.num_experts, dtype=gates.dtype, device=tokens.device
        ).scatter(1, experts, gates)  # (N, E) gate of each selected expert, else 0
        a, b = torch.matmul(tokens.unsqueeze(0), self.w12).chunk(2, dim=-1)  # (E, N, h)
        h = torch.matmul(F.silu(a) * b, self.w3)  # (E, N, D)
        return torch.einsum("end,ne->nd", h, combine.to(h.dtype))  # (N, D)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        tokens = x.reshape(B * T, D)  # (N, D)
        gates, experts, probs = self.route(tokens)
        flat = experts.reshape(-1)  # (N·k,) expert of each assignment
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=x.device)
        counts = counts.index_add(0, flat, torch.ones_like(flat))  # (E,)
        autocast_bf16 = x.is_cuda and torch.is_autocast_enabled("cuda")
        autocast_bf16 = autocast_bf16 and torch.get_autocast_dtype("cuda") == torch.bfloat16
        grouped = hasattr(F, "grouped_mm") and D % 8 == 0
        if grouped and (not x.is_cuda or x.dtype == torch.bfloat16 or autocast_bf16):
            out = self._grouped(tokens, gates, experts, counts)
        else:
            out = self._dense(tokens, gates, experts)
        share = counts.float() / flat.numel()  # f_e
        self.aux_loss = self.weight * self.num_experts * (share * probs.mean(0)).sum()
        return self.drop(out.to(x.dtype).view(B, T, D))  # (B, T, D)
