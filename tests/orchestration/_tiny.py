"""The overrides of the orchestration tests' model: a few hundred parameters, one short
epoch on CPU, no diagnostics or tracking (each test adds its own evaluation settings)."""

from __future__ import annotations

TINY_MODEL = (
    "data.cache=false",
    "data.alternative_data=[]",
    "model.d_model=16",
    "model.depth=1",
    "model.n_heads=2",
    "model.ff_mult=2",
    "model.dropout=0.0",
    "model.dilations=[1]",
    "windows.window=8",
    "windows.horizon=2",
    "model.horizon=2",
    "training.batch_size=32",
    "training.max_epochs=1",
    "training.limit_train_batches=2",
    "training.num_workers=0",
    "training.warmup_steps=0",
    "training.accelerator=cpu",
    "diagnostics.enabled=false",
    "tracking.tensorboard=false",
)
