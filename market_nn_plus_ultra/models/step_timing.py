"""Timing one training step on a device: the matmul peak and the step timer.

Timers are read only after ``torch.cuda.synchronize()``: CUDA launches are asynchronous,
and a timer read without a sync measures the launch queue, not the work. On the CPU the
peak resident memory comes from the process (psutil).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import torch
from torch import Tensor, nn

__all__ = [
    "StepTiming",
    "autocast_context",
    "measure_matmul_peak",
    "resolve_device",
    "time_training_step",
]

log = logging.getLogger(__name__)

DType = Literal["bf16", "fp32"]
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when visible, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r}: use cpu, cuda (or cuda:N) or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible — use --device cpu or auto")
    return torch.device(device)


def autocast_context(device: torch.device, dtype: DType) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type for ``"bf16"``; no autocast for ``"fp32"``."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise ValueError(f"--dtype {dtype!r}: use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: str | torch.device = "auto", dtype: DType = "bf16", size: int | None = None
) -> float:
    """Achieved TFLOP/s of a large square matmul (``2·n³`` FLOPs) — the practical peak.

    ``size`` defaults to 8192 on CUDA and 1024 on CPU. bf16 runs the matmul in bfloat16
    (under autocast on CPU it would be converted back and forth, so the operands are
    cast once up front); fp32 in float32 (TF32 on CUDA only if the process allowed it).
    """
    dev = resolve_device(str(device))
    n = size or (8192 if dev.type == "cuda" else 1024)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, torch_dtype)
    b = torch.randn(n, n, generator=gen).to(dev, torch_dtype)
    for _ in range(2):  # warm-up: kernel selection, clocks
        a @ b
    _sync(dev)
    repeats, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < 0.5 or repeats < 3:  # at least half a second of work
        a @ b
        repeats += 1
        _sync(dev)
        elapsed = time.perf_counter() - start
    return 2.0 * n**3 * repeats / elapsed / 1e12


@dataclass(frozen=True)
class StepTiming:
    """Seconds per training step (mean over the timed steps) and peak memory in bytes."""

    seconds_per_step: float
    peak_memory_bytes: int
    compiled: bool
    note: str = ""


class _CpuPeak:
    """Peak resident memory above a baseline, for CPU runs.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark
    ``VmHWM``, so the peak is exact; elsewhere the RSS is sampled after every step.
    """

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.exact = False
        with contextlib.suppress(OSError, AttributeError):
            # hand freed heap back to the OS first, so reused pages do not hide growth
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = self._hwm() is not None
        self.baseline = self.process.memory_info().rss
        self.sampled = self.baseline

    @staticmethod
    def _hwm() -> int | None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def sample(self) -> None:
        self.sampled = max(self.sampled, self.process.memory_info().rss)

    def peak(self) -> int:
        top = self._hwm() if self.exact else None
        return max(0, (top if top is not None else self.sampled) - self.baseline)


def _fused_adamw(params: Iterator[nn.Parameter], lr: float, device: torch.device):
    """AdamW with the fused (one kernel for all parameters) update where supported."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. a device type without the fused kernel
        log.info("fused AdamW unavailable on %s; using the foreach implementation", device)
        return torch.optim.AdamW(params, lr=lr, foreach=True)


def time_training_step(
    build: Callable[[], nn.Module],
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    device: torch.device,
    dtype: DType = "bf16",
    compile: bool = False,
    steps: int = 10,
    warmup: int = 3,
    lr: float = 1e-4,
) -> StepTiming:
    """Time ``steps`` training steps of the model ``build()`` returns, after ``warmup`` ones.

    ``loss_fn(model, x, y)`` returns the scalar loss; ``inputs``/``targets`` are one
    batch (moved to ``device`` once, so host transfers are not timed). The model is
    built inside the measurement, so the peak memory covers weights, gradients, AdamW
    state and activations (CUDA: ``max_memory_allocated``; CPU: peak RSS above the
    baseline). A ``torch.compile`` that fails falls back to eager with a note.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    cpu_peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        cpu_peak = _CpuPeak()
    model = build().to(device).train()
    x, y = inputs.to(device), targets.to(device)
    optimiser = _fused_adamw(model.parameters(), lr, device)
    runner: nn.Module = model
    note = ""
    if compile:
        runner = torch.compile(model)

    def step() -> None:
        with autocast_context(device, dtype):
            loss = loss_fn(runner, x, y)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    if compile:
        try:  # compilation happens on the first call; a missing toolchain shows up here
            step()
        except Exception as err:  # any compiler failure: report it and run eager
            note = f"torch.compile failed ({type(err).__name__}: {err}); ran eager"
            log.warning(note)
            runner, compile = model, False
            optimiser.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
        if cpu_peak is not None:
            cpu_peak.sample()
    _sync(device)  # the queued GPU work must finish before the clock is read
    seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
    else:
        peak = cpu_peak.peak()
    return StepTiming(seconds, peak, compile, note)
