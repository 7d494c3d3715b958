"""Training layer: the DataModule, supervised and self-supervised modules, ``train()``.

dm = MarketDataModule(cfg)          # database → purged train/val/test windows
result = train(cfg)                 # fit, checkpoint, evaluate on the test split
pre = pretrain(cfg)                 # masked or contrastive backbone pretraining
train(cfg, pretrain_checkpoint=pre.backbone_path)   # warm start (see docs/training.md)
"""

from .contrastive import ContrastiveModule, augment_view, hierarchical_contrastive_loss, info_nce
from .curriculum import CurriculumCallback, CurriculumDataset, CurriculumScheduler
from .data import MarketDataModule, ResumableBatchSampler
from .diagnostics import (
    TrainingDiagnosticsCallback,
    expected_calibration_error,
    noise_scale_terms,
    quantile_coverage,
)
from .landscape import LandscapeResult, filter_normalised_direction, loss_landscape
from .masked import (
    MaskedTimeSeriesModule,
    PretrainingModule,
    apply_mask_token,
    masked_reconstruction_loss,
    sample_time_mask,
    window_batch,
)
from .metrics import cross_section_ic, split_metrics
from .module import TradingModule, warmup_cosine
from .pretrain import (
    OBJECTIVES,
    PretrainResult,
    build_pretraining_module,
    evaluate_objective,
    pretrain,
)
from .tracking import TrackingError, build_loggers
from .train import CheckpointError, TrainResult, resolve_precision, train
from .trainer import build_trainer
from .warm_start import (
    BACKBONE_FORMAT,
    BACKBONE_FORMAT_VERSION,
    WarmStartError,
    WarmStartReport,
    load_backbone,
    read_backbone_checkpoint,
    save_backbone,
)

__all__ = [
    "BACKBONE_FORMAT",
    "BACKBONE_FORMAT_VERSION",
    "OBJECTIVES",
    "CheckpointError",
    "ContrastiveModule",
    "CurriculumCallback",
    "CurriculumDataset",
    "CurriculumScheduler",
    "LandscapeResult",
    "MarketDataModule",
    "MaskedTimeSeriesModule",
    "PretrainResult",
    "PretrainingModule",
    "ResumableBatchSampler",
    "TrackingError",
    "TradingModule",
    "TrainResult",
    "TrainingDiagnosticsCallback",
    "WarmStartError",
    "WarmStartReport",
    "apply_mask_token",
    "augment_view",
    "build_loggers",
    "build_pretraining_module",
    "build_trainer",
    "cross_section_ic",
    "evaluate_objective",
    "expected_calibration_error",
    "filter_normalised_direction",
    "hierarchical_contrastive_loss",
    "info_nce",
    "load_backbone",
    "loss_landscape",
    "masked_reconstruction_loss",
    "noise_scale_terms",
    "pretrain",
    "quantile_coverage",
    "read_backbone_checkpoint",
    "resolve_precision",
    "sample_time_mask",
    "save_backbone",
    "split_metrics",
    "train",
    "warmup_cosine",
    "window_batch",
]
