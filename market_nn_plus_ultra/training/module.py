"""The supervised LightningModule: any backbone + head, the composite trading loss, AdamW.

    module = TradingModule(cfg.model, cfg.training, n_features=dm.n_features)
    out = module(batch["x"])                 # HeadOutput: position (B,), forecast (B, H)

Objective per batch: ``CompositeTradingLoss`` of ``model.loss`` (the head's supervised
loss weighted by ``head_weight`` plus the PnL/risk terms with positive weights) plus the
backbone's auxiliary loss (MoE load balancing, already weighted). Optimiser: AdamW
(fused on CUDA), no weight decay on biases and norms, linear warm-up then cosine decay
to ``min_lr_ratio`` of the peak, stepped every optimiser step. Validation and test
epochs log the loss and the trading metrics of :mod:`.metrics`, scored on the *simple*
return t → t+1 of each window (the batch's ``realised``), whatever ``windows.target`` the
model learns (a log-return target is a training choice, not what a position earns).
Checkpoints carry the
RNG states, so a resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from ..config import ModelConfig, TrainingConfig, config_to_dict
from ..models import HeadOutput, TradingModel, build_model
from ..models.heads import advance_annealing, anneal_per_optimizer_step
from ..models.losses import CompositeTradingLoss
from .metrics import split_metrics

__all__ = ["TradingModule", "warmup_cosine"]


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """Learning-rate multiplier: ``step/warmup`` while warming up, then cosine to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TradingModule(L.LightningModule):
    """Backbone + head from ``model``, trained with the ``training`` section's optimiser.

    ``periods_per_year`` annualises the validation Sharpe (252 for daily bars). The
    hyper-parameters (both config sections as plain dicts, ``n_features``) are saved in
    every checkpoint, so ``TradingModule.load_from_checkpoint(path)`` rebuilds the model.
    """

    def __init__(
        self,
        model: ModelConfig | dict[str, Any],
        training: TrainingConfig | dict[str, Any],
        n_features: int,
        periods_per_year: float = 252.0,
    ) -> None:
        super().__init__()
        model_cfg = ModelConfig.model_validate(
            config_to_dict(model) if isinstance(model, ModelConfig) else model
        )
        train_cfg = TrainingConfig.model_validate(
            config_to_dict(training) if isinstance(training, TrainingConfig) else training
        )
        self.save_hyperparameters(
            {
                "model": config_to_dict(model_cfg),
                "training": config_to_dict(train_cfg),
                "n_features": int(n_features),
                "periods_per_year": float(periods_per_year),
            }
        )
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.periods_per_year = float(periods_per_year)
        self.model: TradingModel = build_model(model_cfg, int(n_features))
        if model_cfg.compile:
            self.model.compile()  # in place: state-dict keys stay those of the plain model
        self.loss_fn = CompositeTradingLoss.from_config(model_cfg.loss)
        # the Dirichlet KL weight counts optimiser steps (on_before_optimizer_step), not
        # micro-batches: with accumulate_grad_batches=k a loss call is 1/k of a step
        anneal_per_optimizer_step(self.model)
        # set by the curriculum: training scores only the first loss_horizon target steps
        self.loss_horizon: int | None = None
        self._collected: dict[str, list[dict[str, Tensor]]] = {"val": [], "test": []}

    # ----------------------------------------------------------------------------------
    # Forward and loss
    # ----------------------------------------------------------------------------------

    def forward(
        self, x: Tensor, market_state: dict[str, Tensor] | None = None, positions: str = "last"
    ) -> HeadOutput:
        """``x (B, W, F)`` → :class:`HeadOutput` (``position (B,)``, ``forecast (B, H)``);
        ``positions="all"``: every step (``position (B, W)``, ``forecast (B, W, H)``)."""
        return self.model(x, market_state, positions)

    def _inputs(
        self, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor] | None, Tensor]:
        """Model inputs, targets, market state and weights of a batch.

        Window batches: multi-symbol items ``(B, S, W, F)`` are flattened to ``(B·S, W,
        F)``; targets ``(N, H)``, ``weight (N,)``. Sequence batches (``rows`` present, from
        :class:`~market_nn_plus_ultra.windows.SequenceDataset`): ``x (B, L, F)``, targets
        ``(B, L, H)`` and ``weight (B, L)``, one per position. The weight is 1 where every
        target is known (and, for sequences, the position is scored), else 0: rows are
        weighted, not dropped — boolean indexing would sync with the host and change the
        batch shape (a recompile under ``torch.compile``) every time a target is missing.
        """
        x, y, y_mask = batch["x"], batch["y"], batch["y_mask"]
        regime, vol = batch.get("regime"), batch.get("volatility")
        if x.ndim == 4:
            x, y, y_mask = x.flatten(0, 1), y.flatten(0, 1), y_mask.flatten(0, 1)  # (B·S, ...)
            regime = regime.flatten(0, 1) if regime is not None else None
            vol = vol.flatten(0, 1) if vol is not None else None
        h = self.model_cfg.horizon
        if y.shape[-1] < h:
            raise ValueError(
                f"model.horizon={h} but the batches hold {y.shape[-1]} target steps — set "
                f"windows.horizon to at least {h}"
            )
        known = y_mask[..., :h]  # (N, H) or (B, L, H)
        weight = known.all(dim=-1).to(x.dtype)  # rows (positions) with every target known
        y = torch.where(known, y[..., :h], torch.zeros((), dtype=y.dtype, device=y.device))
        state = None
        if self.model_cfg.market_state_embedding:
            state = {}
            if regime is not None:
                if regime.ndim == 1:  # a window's end-row label: known at t, seen by every step
                    regime = regime[:, None].expand(-1, x.shape[1])  # (N, W)
                state["regime"] = regime.clamp_min(0)
            if vol is not None:
                state["volatility"] = vol  # (N, W) or (B, L): the raw realised volatility
            state = state or None
        return x, y, state, weight

    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], HeadOutput]:
        x, y, state, weight = self._inputs(batch)
        sequence = "rows" in batch
        out = self.model(x, state, "all" if sequence else "last")
        if sequence:  # every position is a sample: (B, L, ...) -> (B·L, ...)
            out, y, weight = out.flatten(), y.flatten(0, 1), weight.flatten()
        scored, y_scored = out, y
        if self.training and self.loss_horizon is not None and self.loss_horizon < y.shape[-1]:
            h, q = self.loss_horizon, out.quantiles  # later steps are masked, not trained on
            scored = replace(
                out, forecast=out.forecast[:, :h], quantiles=q if q is None else q[:, :h]
            )
            y_scored = y[:, :h]
        head_loss = self.model.head.loss(scored, y_scored, weight)
        result = self.loss_fn(out.position, y, head_loss=head_loss, weight=weight)
        aux = self.model.aux_loss
        terms = dict(result.terms)
        terms["aux"] = aux.detach()
        return result.total + aux, terms, out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, terms, _ = self._step(batch)
        n = batch["x"].shape[0]
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train_{name}", value, batch_size=n)
        return loss

    # ----------------------------------------------------------------------------------
    # Evaluation
    # ----------------------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        loss, _, out = self._step(batch)
        self.log(f"{stage}_loss", loss, batch_size=batch["x"].shape[0], sync_dist=True)
        if batch["x"].ndim == 3:  # one symbol per item: the targets the metrics score
            h = self.model_cfg.horizon
            # the simple return t → t+1 (the datasets' `realised`); a hand-built batch
            # without it is taken to hold simple-return targets
            realised = batch.get("realised", batch["y"][..., 0])
            t, symbol = batch["t_index"], batch["symbol_index"]
            if "rows" in batch:  # sequences: every scored position, flattened like the loss
                t, realised = batch["rows"].flatten(), realised.flatten()
                symbol = symbol[:, None].expand_as(batch["rows"]).flatten()
                keep = batch["y_mask"][..., :h].all(dim=-1).flatten()
            else:
                keep = batch["y_mask"][:, :h].all(dim=-1)
            # eval only: this copy to the host syncs anyway
            self._collected[stage].append(
                {
                    "t": t[keep].detach().cpu(),
                    "s": symbol[keep].detach().cpu(),
                    "forecast": out.forecast[keep, 0].detach().float().cpu(),
                    "position": out.position[keep].detach().float().cpu(),
                    "realised": realised[keep].detach().float().cpu(),
                }
            )
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def collected(self, stage: str) -> dict[str, np.ndarray]:
        """The windows scored in the last ``stage`` epoch (``t``, ``s``, forecast, …) as arrays."""
        parts = self._collected[stage]
        keys = ("t", "s", "forecast", "position", "realised")
        if not parts:
            return {k: np.empty(0) for k in keys}
        return {k: torch.cat([p[k] for p in parts]).numpy() for k in keys}

    def _log_metrics(self, stage: str) -> None:
        c = self.collected(stage)
        metrics = split_metrics(
            c["t"],
            c["s"],
            c["forecast"],
            c["position"],
            c["realised"],
            ic_mode=self.train_cfg.ic_mode,
            cost_bps=self.train_cfg.cost_bps,
            periods_per_year=self.periods_per_year,
        )
        for name in ("ic", "directional_accuracy", "sharpe"):
            value = metrics[name]
            # NaN (e.g. constant forecasts early on) would poison "best"; log the worst case
            self.log(f"{stage}_{name}", 0.0 if math.isnan(value) else value, prog_bar=name == "ic")

    def on_validation_epoch_start(self) -> None:
        self._collected["val"] = []

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._collected["test"] = []

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # ----------------------------------------------------------------------------------
    # Optimiser and checkpoints
    # ----------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.train_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]  # matrices decay; biases and norms do not
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = bool(params) and params[0].is_cuda
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=fused or None)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, cfg.warmup_steps, total, cfg.min_lr_ratio),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        advance_annealing(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # tensors, strings and ints only: the checkpoint stays loadable with weights_only
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
