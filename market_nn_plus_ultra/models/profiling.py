"""Speed and memory of one training step: samples/s, achieved TFLOP/s, peak memory, MFU.

A step is what training does: forward, loss, backward and a fused AdamW update, under
bf16 autocast on CUDA (``torch.autocast(device_type="cuda", dtype=torch.bfloat16)``;
master weights and optimiser state stay float32), optionally through ``torch.compile``
and with activation checkpointing when ``model.activation_checkpointing`` is on.
Attention runs through PyTorch's ``scaled_dot_product_attention`` as the layers call
it, so on a GPU the flash / memory-efficient kernels are the ones PyTorch picks.

Timers are read only after ``torch.cuda.synchronize()``: CUDA launches are asynchronous,
and a timer read without a sync measures the launch queue, not the work. Model FLOPs
utilisation (MFU, Chowdhery et al. 2022) is achieved model FLOP/s over a peak — given,
or measured with :func:`measure_matmul_peak` on the same device and dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models.registry import build_model, count_parameters, estimate_flops
from market_nn_plus_ultra.models.step_timing import (
    DType,
    StepTiming,
    autocast_context,
    measure_matmul_peak,
    resolve_device,
    time_training_step,
)

__all__ = [
    "ProfileResult",
    "StepTiming",
    "autocast_context",
    "measure_matmul_peak",
    "model_loss",
    "profile_backbone",
    "profile_model",
    "resolve_device",
    "summarise",
    "time_training_step",
    "with_peak",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileResult:
    """Figures of one profiled configuration (units in the field names)."""

    architecture: str
    device: str
    dtype: str
    compiled: bool
    activation_checkpointing: bool
    batch_size: int
    seq_len: int
    n_features: int
    parameters: int
    flops_per_sample: float
    seconds_per_step: float
    samples_per_s: float
    achieved_tflops: float
    peak_memory_mb: float
    peak_tflops: float | None = None
    mfu: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_peak(result: ProfileResult, peak_tflops: float) -> ProfileResult:
    """``result`` with its MFU against ``peak_tflops`` (e.g. from :func:`measure_matmul_peak`)."""
    if peak_tflops <= 0:
        raise ValueError(f"--peak-tflops must be > 0, got {peak_tflops}")
    return replace(result, peak_tflops=peak_tflops, mfu=result.achieved_tflops / peak_tflops)


def model_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Loss of a :class:`TradingModel` (or its compiled wrapper) on ``x (B, T, F)``,
    ``y (B, H)``: the head's own loss plus the backbone's auxiliary (MoE) loss."""
    inner = getattr(model, "_orig_mod", model)  # a compiled wrapper keeps the module here
    output = model(x)
    return inner.head.loss(output, y) + inner.aux_loss


def summarise(
    name: str,
    timing: StepTiming,
    *,
    parameters: int,
    flops_per_sample: float,
    batch_size: int,
    seq_len: int,
    n_features: int,
    device: torch.device,
    dtype: DType,
    activation_checkpointing: bool = False,
    peak_tflops: float | None = None,
) -> ProfileResult:
    """Turn a :class:`StepTiming` into throughput, TFLOP/s and MFU figures."""
    samples_per_s = batch_size / timing.seconds_per_step
    achieved = flops_per_sample * samples_per_s / 1e12
    return ProfileResult(
        architecture=name,
        device=str(device),
        dtype=dtype,
        compiled=timing.compiled,
        activation_checkpointing=activation_checkpointing,
        batch_size=batch_size,
        seq_len=seq_len,
        n_features=n_features,
        parameters=parameters,
        flops_per_sample=flops_per_sample,
        seconds_per_step=timing.seconds_per_step,
        samples_per_s=samples_per_s,
        achieved_tflops=achieved,
        peak_memory_mb=timing.peak_memory_bytes / 1024**2,
        peak_tflops=peak_tflops,
        mfu=achieved / peak_tflops if peak_tflops else None,
        note=timing.note,
    )


def profile_backbone(
    cfg: ModelConfig,
    *,
    seq_len: int,
    batch_size: int,
    n_features: int = 64,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    dtype: DType | Literal["auto"] = "auto",
    compile: bool | None = None,
    peak_tflops: float | None = None,
    seed: int = 0,
) -> ProfileResult:
    """Profile one training step of ``build_model(cfg)`` on random ``(B, T, F)`` windows.

    ``dtype="auto"`` is bf16 on CUDA and fp32 on CPU; ``compile=None`` follows
    ``cfg.compile``; activation checkpointing follows ``cfg.activation_checkpointing``.
    FLOPs per sample come from :func:`~market_nn_plus_ultra.models.registry.estimate_flops`;
    MFU is reported when ``peak_tflops`` is given.
    """
    if seq_len < 1 or batch_size < 1 or n_features < 1:
        raise ValueError(
            f"--seq-len, --batch-size and --features must be >= 1, "
            f"got {seq_len}, {batch_size}, {n_features}"
        )
    dev = resolve_device(device)
    precision: DType = ("bf16" if dev.type == "cuda" else "fp32") if dtype == "auto" else dtype
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, seq_len, n_features, generator=gen)  # (B, T, F)
    y = 0.01 * torch.randn(batch_size, cfg.horizon, generator=gen)  # (B, H) returns

    built: list[nn.Module] = []

    def build() -> nn.Module:
        torch.manual_seed(seed)
        built.append(build_model(cfg, n_features))
        return built[-1]

    timing = time_training_step(
        build,
        model_loss,
        x,
        y,
        device=dev,
        dtype=precision,
        compile=cfg.compile if compile is None else compile,
        steps=steps,
        warmup=warmup,
    )
    return summarise(
        cfg.architecture,
        timing,
        parameters=count_parameters(built[-1]),
        flops_per_sample=estimate_flops(cfg, n_features, seq_len),
        batch_size=batch_size,
        seq_len=seq_len,
        n_features=n_features,
        device=dev,
        dtype=precision,
        activation_checkpointing=cfg.activation_checkpointing,
        peak_tflops=peak_tflops,
    )


def profile_model(
    cfg: ModelConfig,
    *,
    seq_len: int,
    batch_size: int,
    n_features: int = 64,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool | None = None,
    peak_tflops: float | None = None,
    measure_peak: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> ProfileResult:
    """What ``plus-ultra bench profile`` runs: :func:`profile_backbone`, then the MFU.

    MFU is against ``peak_tflops`` when given, else (``measure_peak``) against
    :func:`measure_matmul_peak` on the same device and dtype, else not reported.
    ``dtype``: ``bf16``, ``fp32`` or ``auto`` (anything else is refused, naming --dtype).
    ``on_stage(message)`` is told what starts (profiling, measuring the peak).
    """
    if dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--dtype {dtype!r}: use bf16, fp32 or auto")
    tell = on_stage or (lambda message: None)
    tell(
        f"profiling {cfg.architecture}: {steps} steps of {batch_size} × {seq_len} × "
        f"{n_features} after {warmup} warm-up steps …"
    )
    result = profile_backbone(
        cfg,
        seq_len=seq_len,
        batch_size=batch_size,
        n_features=n_features,
        steps=steps,
        warmup=warmup,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        compile=compile,
        peak_tflops=peak_tflops,
    )
    if result.peak_tflops is None and measure_peak:
        tell(f"measuring the {result.dtype} matmul peak on {result.device} …")
        peak = measure_matmul_peak(result.device, result.dtype)  # type: ignore[arg-type]
        result = with_peak(result, peak)
    return result
