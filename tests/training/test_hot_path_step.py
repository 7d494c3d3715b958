"""The training step weighs rows instead of dropping them, and anneals per optimiser step.

The reference is the old step, written out here: drop the rows with an unknown target
(boolean indexing) and score the rest. The new step must give the same loss, with no
host sync inside it.
"""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig, TrainingConfig
from market_nn_plus_ultra.training.module import TradingModule

H, W, N_FEATURES = 3, 12, 4
RISK = {"pnl_weight": 0.3, "sharpe_weight": 0.2, "sortino_weight": 0.1, "drawdown_weight": 0.2}


@contextlib.contextmanager
def _no_host_sync():
    def refuse(*_args, **_kwargs):
        raise AssertionError("host sync in the training step")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("tolist", "item", "__bool__"):
            mp.setattr(torch.Tensor, name, refuse)
        yield


def _module(head: str, architecture: str = "hybrid_transformer", **loss) -> TradingModule:
    cfg = ModelConfig(
        architecture=architecture,
        head=head,
        d_model=16,
        n_heads=2,
        depth=1,
        horizon=H,
        dropout=0.0,
        loss={**RISK, "cvar_weight": 0.1, **loss},
    )
    return TradingModule(cfg, TrainingConfig(), n_features=N_FEATURES).eval()


def _batch(n: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y_mask = torch.ones(n, H, dtype=torch.bool)
    y_mask[2, 1:] = False  # late targets unknown (the end of a series)
    y_mask[7] = False
    y = torch.randn(n, H, generator=g) * 0.01
    y = torch.where(y_mask, y, torch.full_like(y, float("nan")))  # unknown = NaN: must not leak
    return {"x": torch.randn(n, W, N_FEATURES, generator=g), "y": y, "y_mask": y_mask}


def _old_loss(module: TradingModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    keep = batch["y_mask"].all(dim=-1)
    x, y = batch["x"][keep], batch["y"][keep]
    out = module.model(x)
    head_loss = module.model.head.loss(out, y)
    return module.loss_fn(out.position, y, head_loss=head_loss).total + module.model.aux_loss


@pytest.mark.parametrize("head", ["regression", "action", "quantile", "quantile_dirichlet"])
def test_weighted_step_equals_dropping_rows(head):
    torch.manual_seed(0)
    module = _module(head)
    batch = _batch()
    with torch.no_grad():
        with _no_host_sync():
            new, terms, out = module._step(batch)
        old = _old_loss(module, batch)
    assert out.position.shape == (10,)  # every row went through: static shapes
    assert torch.isfinite(new)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    assert set(terms) >= {"head", "pnl", "sharpe", "sortino", "drawdown", "cvar", "aux"}


def test_weighted_step_equals_dropping_rows_with_moe_and_huber():
    torch.manual_seed(1)
    module = _module("dirichlet", "moe_transformer", regression="huber")
    batch = _batch(12)
    with torch.no_grad():
        new, terms, _ = module._step(batch)
        new_aux = module.model.aux_loss
        old = _old_loss(module, batch)
        old_aux = module.model.aux_loss
    # the load-balancing term sees every routed token (rows without targets have valid
    # inputs), so only the supervised and risk part must match
    torch.testing.assert_close(new - new_aux, old - old_aux, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["aux"], new_aux)


def test_sequence_mode_drawdown_and_sharpe_equal_the_kept_bars():
    """A time-ordered batch whose last rows lack targets: the tail is weighted out."""
    torch.manual_seed(2)
    module = _module("regression", pnl_mode="sequence", cvar_weight=0.0)
    batch = _batch(10)
    batch["y_mask"][7] = True  # only the tail (rows 8, 9) unknown, as at a series end
    batch["y_mask"][2] = True
    batch["y_mask"][8:] = False
    batch["y"] = torch.where(batch["y_mask"], batch["y"].nan_to_num(0.01), float("nan"))
    with torch.no_grad():
        new, _, _ = module._step(batch)
        old = _old_loss(module, batch)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)


def test_dirichlet_kl_anneals_per_optimiser_step_with_accumulation():
    module = _module("dirichlet").train()
    batches = [_batch(8) for _ in range(4)]
    for b in batches:
        b["y"] = b["y"].nan_to_num(0.0)
    trainer = L.Trainer(
        max_epochs=1,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, loader)
    # 4 micro-batches, 2 per optimiser step → 2 steps (it read 4 on the old code)
    assert int(module.model.head.dirichlet.step) == 2 == trainer.global_step
