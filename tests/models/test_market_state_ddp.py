"""``market_state_embedding`` under 2-rank DistributedDataParallel (gloo, CPU).

Only the regime is fed; before the fix the volatility MLP got no gradient, and DDP
(without ``find_unused_parameters``) raised at the second step.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.registry import build_backbone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(
            d_model=16, n_heads=2, depth=1, market_state_embedding=True, num_regimes=3
        )
        model = torch.nn.parallel.DistributedDataParallel(build_backbone(cfg, 4))
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        for step in range(3):  # the old code failed at step 2
            x = torch.randn(2, 8, 4)
            state = {"regime": torch.full((2, 8), step % 3)}
            opt.zero_grad()
            model(x, state).square().mean().backward()
            opt.step()
    finally:
        dist.destroy_process_group()


def test_market_state_embedding_trains_under_two_rank_ddp():
    mp.spawn(_worker, args=(_free_port(),), nprocs=2, join=True)
