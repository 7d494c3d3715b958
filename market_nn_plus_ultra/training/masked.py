"""Masked time-series modelling: reconstruct masked steps of a window from the rest.

Each window ``x (B, T, F)`` gets a random mask over time (single steps, or runs of
``mask_patch_len`` steps, each with probability ``mask_prob``); masked steps are replaced
by a mask token (0, or the window's mean of each feature) and a linear head on the
backbone's hidden sequence reconstructs them. The loss is the MSE over masked, valid
steps only, so the model cannot score by copying its input (BERT, Devlin et al. 2019;
PatchTST, Nie et al. 2023). The backbone is causal, so a masked step is predicted from
the steps before it.

:class:`PretrainingModule` is the shared base of the self-supervised modules: the
backbone, AdamW with warm-up + cosine decay, and the backbone metadata written into
every Lightning checkpoint so :func:`~.warm_start.load_backbone` can read ``last.ckpt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig, PretrainingConfig
from market_nn_plus_ultra.models import build_backbone
from market_nn_plus_ultra.training.warm_start import (
    BACKBONE_FORMAT,
    BACKBONE_FORMAT_VERSION,
    CKPT_META_KEY,
)

__all__ = [
    "MaskedTimeSeriesModule",
    "PretrainingModule",
    "apply_mask_token",
    "masked_reconstruction_loss",
    "sample_time_mask",
    "window_batch",
]


def window_batch(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``x (B, T, F)`` and valid-step mask ``(B, T)`` of a window batch.

    Multi-symbol items (``x (B, S, T, F)``) are flattened to ``B·S`` windows; a batch
    without ``mask`` counts every step as valid.
    """
    x = batch["x"]
    valid = batch.get("mask")
    if valid is None:
        valid = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    if x.dim() == 4:
        x = x.reshape(-1, *x.shape[-2:])  # (B·S, T, F)
        valid = valid.reshape(-1, valid.shape[-1])  # (B·S, T)
    return x.float(), valid.bool()


def sample_time_mask(
    batch: int,
    steps: int,
    prob: float,
    patch_len: int = 1,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Bool ``(batch, steps)``: True where a step is masked.

    ``patch_len == 1`` masks each step independently with probability ``prob``;
    otherwise runs of ``patch_len`` steps (aligned so the last run ends at the last step,
    like the backbone's patches) are masked together.
    """
    n_patches = -(-steps // patch_len)
    draw = torch.rand(batch, n_patches, device=device, generator=generator) < prob
    if patch_len == 1:
        return draw
    pad = n_patches * patch_len - steps
    return draw.repeat_interleave(patch_len, dim=1)[:, pad:]  # (batch, steps)


def apply_mask_token(x: Tensor, masked: Tensor, valid: Tensor, fill: str) -> Tensor:
    """``x (B, T, F)`` with masked steps replaced by 0 (``fill="zero"``) or the mean of
    each feature over the window's valid, unmasked steps (``fill="mean"``)."""
    if fill == "zero":
        token = torch.zeros_like(x[:, :1])  # (B, 1, F)
    else:
        keep = (valid & ~masked).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        token = (x * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.where(masked.unsqueeze(-1), token, x)


def masked_reconstruction_loss(prediction: Tensor, target: Tensor, positions: Tensor) -> Tensor:
    """Mean squared error over the steps where ``positions (B, T)`` is True.

    ``prediction``/``target``: ``(B, T, F)``. Every feature of a counted step weighs
    the same; other steps contribute nothing (zero loss when no step counts).
    """
    weight = positions.unsqueeze(-1).to(prediction.dtype)  # (B, T, 1)
    denominator = weight.sum() * prediction.shape[-1]
    return ((prediction - target) ** 2 * weight).sum() / denominator.clamp_min(1.0)


class PretrainingModule(L.LightningModule):
    """A backbone trained by a self-supervised objective (subclasses define ``compute_loss``)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        pretrain_cfg: PretrainingConfig,
        n_features: int,
        feature_columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg, self.pretrain_cfg = model_cfg, pretrain_cfg
        self.n_features = n_features
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "model": model_cfg.model_dump(mode="json"),
                "pretraining": pretrain_cfg.model_dump(mode="json"),
                "n_features": n_features,
                "feature_columns": self.feature_columns,
            }
        )
        self.backbone = build_backbone(model_cfg, n_features)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """The objective on one batch of windows (``generator`` fixes the random draws)."""
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss")

    def _aux(self) -> Tensor | float:
        aux = getattr(self.backbone, "aux_loss", None)
        return aux if aux is not None else 0.0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.compute_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss + self._aux()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.compute_loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def configure_optimizers(self):  # Lightning reads the optimizer + scheduler dict
        cfg = self.pretrain_cfg
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},  # norms and biases: no shrinkage
            ],
            lr=cfg.learning_rate,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(cfg.warmup_steps, max(0, total - 1))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine to 10 %

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def backbone_metadata(self) -> dict[str, object]:
        """The backbone file's metadata (everything except the weights)."""
        return {
            "format": BACKBONE_FORMAT,
            "format_version": BACKBONE_FORMAT_VERSION,
            "architecture": self.model_cfg.architecture,
            "model_config": self.model_cfg.model_dump(mode="json"),
            "n_features": self.n_features,
            "feature_columns": self.feature_columns,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, object]) -> None:
        checkpoint[CKPT_META_KEY] = self.backbone_metadata()


class MaskedTimeSeriesModule(PretrainingModule):
    """Backbone + linear reconstruction head trained to fill in masked steps.

    ``forward(x (B, T, F), masked (B, T), valid (B, T)) -> reconstruction (B, T, F)``.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        pretrain_cfg: PretrainingConfig,
        n_features: int,
        feature_columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(model_cfg, pretrain_cfg, n_features, feature_columns)
        self.reconstruction = nn.Linear(int(self.backbone.d_model), n_features)

    def forward(self, x: Tensor, masked: Tensor, valid: Tensor) -> Tensor:
        tokens = apply_mask_token(x, masked, valid, self.pretrain_cfg.mask_value)
        return self.reconstruction(self.backbone(tokens))  # (B, T, D) -> (B, T, F)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """MSE of the reconstruction on masked, valid steps of ``batch["x"]``."""
        x, valid = window_batch(batch)
        cfg = self.pretrain_cfg
        patch = cfg.mask_patch_len if cfg.mask_mode == "patch" else 1
        masked = sample_time_mask(
            x.shape[0], x.shape[1], cfg.mask_prob, patch, device=x.device, generator=generator
        )
        masked &= valid
        if not masked.any():  # a tiny batch can draw no mask: mask its last valid step
            last = valid.long().cumsum(dim=1).argmax(dim=1)  # (B,) index of last valid step
            masked[torch.arange(x.shape[0], device=x.device), last] = valid.any(dim=1)
        return masked_reconstruction_loss(self(x, masked, valid), x, masked)
