"""``pretrain(cfg)``: self-supervised backbone pretraining from the database to ``backbone.pt``.

    result = pretrain(load_config("configs/pretrain_desktop.yaml"))
    model = build_model(cfg.model, result.n_features)
    load_backbone(model.backbone, result.backbone_path)   # warm start

The windows come from :class:`~.data.MarketDataModule` (the same features, tensors and
purged splits as supervised training), batched by ``pretraining.batch_size``. Only the
training split's windows are learned from; the validation split gives ``val_loss``. The
objective is scored before and after on the same fixed validation windows and random
draws, so ``loss_before``/``loss_after`` compare like with like.

Writes under ``pretraining.checkpoint_dir``: ``config.yaml`` (resolved), ``last.ckpt``
(Lightning, resumable), ``backbone.pt`` (:func:`~.warm_start.save_backbone`),
``metrics.json`` and ``logs/metrics.csv``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from market_nn_plus_ultra._io import atomic_write
from market_nn_plus_ultra.config import Config, save_config, training_model
from market_nn_plus_ultra.training.checks import check_config
from market_nn_plus_ultra.training.contrastive import ContrastiveModule
from market_nn_plus_ultra.training.data import MarketDataModule
from market_nn_plus_ultra.training.masked import MaskedTimeSeriesModule, PretrainingModule
from market_nn_plus_ultra.training.trainer import build_trainer
from market_nn_plus_ultra.training.warm_start import save_backbone

__all__ = [
    "OBJECTIVES",
    "PretrainResult",
    "build_pretraining_module",
    "evaluate_objective",
    "pretrain",
]

log = logging.getLogger(__name__)

OBJECTIVES: dict[str, type[PretrainingModule]] = {
    "masked": MaskedTimeSeriesModule,
    "contrastive": ContrastiveModule,
}
_EVAL_BATCHES = 4  # fixed validation batches scored before and after pretraining


@dataclass(frozen=True)
class PretrainResult:
    """Where pretraining wrote and how the objective moved (on fixed validation windows)."""

    objective: str
    checkpoint_dir: Path
    last_checkpoint: Path
    backbone_path: Path
    config_path: Path
    metrics_path: Path
    n_features: int
    feature_columns: list[str]
    n_train_windows: int
    steps: int
    epochs: int
    loss_before: float
    loss_after: float
    seconds: float


def build_pretraining_module(
    cfg: Config, n_features: int, feature_columns: list[str] | None = None
) -> PretrainingModule:
    """The LightningModule for ``cfg.pretraining.objective`` around ``build_backbone(cfg.model)``."""
    module_cls = OBJECTIVES[cfg.pretraining.objective]
    return module_cls(training_model(cfg), cfg.pretraining, n_features, feature_columns)


def _data_config(cfg: Config) -> Config:
    """``cfg`` with the loader settings taken from the ``pretraining`` section.

    The objectives score every step of a window already, so pretraining reads windows
    of ``windows.window`` rows whatever ``training.supervision`` is; the backbone keeps
    ``model.receptive_field``, so it is the same function the supervised run trains at
    every position (a position reads the same rows in both).
    """
    p = cfg.pretraining
    training = cfg.training.model_copy(
        update={
            "batch_size": p.batch_size,
            "eval_batch_size": p.batch_size,
            "num_workers": p.num_workers,
            "supervision": "last",
        }
    )
    return cfg.model_copy(update={"training": training})


def _eval_device(cfg: Config) -> torch.device:
    """The device the before/after scoring runs on: the accelerator training uses."""
    accelerator = cfg.pretraining.accelerator
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("mps", "auto") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _eval_batches(dm: MarketDataModule, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Up to ``_EVAL_BATCHES`` batches spread evenly over the validation split (train if empty)."""
    dataset = dm.datasets["val"] if len(dm.datasets["val"]) else dm.datasets["train"]
    n = min(len(dataset), _EVAL_BATCHES * batch_size)
    picks = np.unique(np.linspace(0, len(dataset) - 1, n).round().astype(np.int64))
    return [dataset.batch(chunk) for chunk in np.array_split(picks, -(-len(picks) // batch_size))]


def evaluate_objective(
    module: PretrainingModule,
    batches: list[dict[str, torch.Tensor]],
    seed: int,
    device: torch.device | str | None = None,
) -> float:
    """Mean objective over ``batches`` in eval mode with random draws fixed by ``seed``.

    Runs on ``device`` (default: where the module is) and leaves the module there.
    """
    was_training = module.training
    module.eval()
    if device is not None:
        module.to(device)
    device = next(module.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    with torch.no_grad():
        for batch in batches:
            moved = {k: v.to(device) for k, v in batch.items()}
            losses.append(float(module.compute_loss(moved, generator=generator)))
    module.train(was_training)
    return float(np.mean(losses))


def pretrain(cfg: Config) -> PretrainResult:
    """Pretrain ``build_backbone(cfg.model)`` with ``cfg.pretraining`` on the database's windows.

    Returns a :class:`PretrainResult` with the paths written under
    ``cfg.pretraining.checkpoint_dir`` and the objective before/after on fixed
    validation windows.
    """
    check_config(cfg, head=False)  # backbone and feature names, before any data is read
    started = time.perf_counter()
    p = cfg.pretraining
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = MarketDataModule(_data_config(cfg))
    dm.setup()
    out = Path(p.checkpoint_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = save_config(cfg, out / "config.yaml")
    columns = dm.feature_columns
    module = build_pretraining_module(cfg, dm.n_features, columns)
    eval_batches = _eval_batches(dm, p.batch_size)
    device = _eval_device(cfg)
    loss_before = evaluate_objective(module, eval_batches, cfg.seed, device)
    log.info("pretraining %s on %d training windows", p.objective, len(dm.datasets["train"]))

    trainer = build_trainer(
        p,
        out,
        loggers=[CSVLogger(out, name="logs", version="")],  # logs/metrics.csv
        validate=len(dm.datasets["val"]) > 0,
    )  # no ModelCheckpoint: last.ckpt is written once, atomically, after fit
    trainer.fit(module, datamodule=dm)

    last = out / "last.ckpt"
    trainer.save_checkpoint(last)  # every rank calls it; rank 0 writes, atomically
    backbone_path = out / "backbone.pt"
    if trainer.is_global_zero:  # under DDP every rank runs this function; one writes
        save_backbone(backbone_path, module.backbone, cfg.model, columns)
    loss_after = evaluate_objective(module, eval_batches, cfg.seed, device)
    module.cpu()
    metrics_path = out / "metrics.json"
    result = PretrainResult(
        objective=p.objective,
        checkpoint_dir=out,
        last_checkpoint=last,
        backbone_path=backbone_path,
        config_path=config_path,
        metrics_path=metrics_path,
        n_features=dm.n_features,
        feature_columns=columns,
        n_train_windows=len(dm.datasets["train"]),
        steps=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        loss_before=loss_before,
        loss_after=loss_after,
        seconds=time.perf_counter() - started,
    )
    if trainer.is_global_zero:
        atomic_write(metrics_path, json.dumps(asdict(result), indent=2, default=str))
    return result
