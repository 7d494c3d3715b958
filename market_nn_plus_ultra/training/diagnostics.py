"""Training diagnostics: gradient noise, spikes, throughput and calibration drift.

    cb = TrainingDiagnosticsCallback(cfg.diagnostics, out / "diagnostics.parquet",
                                     quantile_levels=cfg.model.quantiles,
                                     flat_band=cfg.model.flat_band)
    train(cfg, callbacks=[cb])          # train() adds it itself when diagnostics.enabled

Every ``diagnostics.interval`` optimiser steps a ``kind="step"`` row records the loss, the
global gradient norm (before clipping), the gradient noise scale and samples/s; each
validation epoch a ``kind="validation"`` row records the calibration of the
probabilistic heads. Rows go to ``diagnostics.parquet`` beside the checkpoints (rewritten
atomically at each epoch end); crossing a threshold logs a WARNING with structured
``extra={"fields": {...}}``.

Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training", app. A). On a recorded step the step's batch is split into two halves of
``b`` windows and the gradient of each half is taken (one extra forward/backward over
the batch, outside the optimiser's gradients, RNG and buffers restored). With
``|G_b|²`` the mean squared norm of the half gradients and ``|G_B|²`` that of their
mean (``B = 2b``), since ``E|G_b|² = |G|² + tr(Σ)/b``::

    |G|²  ≈ (B|G_B|² − b|G_b|²) / (B − b)        tr(Σ) ≈ (|G_b|² − |G_B|²) / (1/b − 1/B)
    B_simple = EMA(tr(Σ)) / EMA(|G|²)            (windows; NaN while EMA(|G|²) ≤ 0)

``noise_ratio = B_simple / (batch windows × accumulation)``: above
``noise_threshold`` the gradient is noise-dominated (a larger batch or lower rate helps).
Skipped (NaN) under FSDP, whose sharded parameters cannot be differentiated outside it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from .._io import atomic_path
from ..config import DiagnosticsConfig
from ..models.losses import direction_labels
from .module import TradingModule

__all__ = [
    "TrainingDiagnosticsCallback",
    "expected_calibration_error",
    "noise_scale_terms",
    "quantile_coverage",
]

log = logging.getLogger(__name__)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE of class probabilities ``probs [N, C]`` against integer ``labels [N]``.

    Confidence = the largest probability; equal-width bins on (0, 1];
    ``ECE = Σ_b |b|/N · |accuracy_b − mean confidence_b|`` (Guo et al. 2017). NaN if N = 0.
    """
    if len(probs) == 0:
        return math.nan
    conf = probs.max(axis=1)
    hit = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, hit, n_bins) - np.bincount(bins, conf, n_bins)  # Σ(acc − conf)
    return float(np.abs(gap).sum() / len(probs)) if count.sum() else math.nan


def quantile_coverage(
    quantiles: np.ndarray, realised: np.ndarray, levels: Sequence[float]
) -> dict[str, float]:
    """Empirical coverage of quantile forecasts ``[N, H, Q]`` by realised returns ``[N, H]``.

    ``q{level}``: share of realised returns at or below the level's quantile (nominal =
    the level); ``band{p}``: share inside ``[q_τ, q_{1−τ}]`` for symmetric level pairs
    (nominal ``p = 1 − 2τ``, in percent); ``error``: mean ``|coverage − level|`` over levels.
    """
    below = realised[..., None] <= quantiles  # (N, H, Q)
    out: dict[str, float] = {}
    errors = []
    for i, level in enumerate(levels):
        share = float(below[..., i].mean()) if below.size else math.nan
        out[f"q{round(level * 100):02d}"] = share
        errors.append(abs(share - level))
        j = next((k for k, lv in enumerate(levels) if math.isclose(lv, 1 - level)), None)
        if j is not None and level < 0.5:
            inside = (realised >= quantiles[..., i]) & (realised <= quantiles[..., j])
            out[f"band{round((1 - 2 * level) * 100):02d}"] = float(inside.mean())
    out["error"] = float(np.mean(errors)) if errors else math.nan
    return out


def noise_scale_terms(
    small_sq: float, big_sq: float, b_small: float, b_big: float
) -> tuple[float, float]:
    """``(|G|², tr(Σ))`` from mean squared gradient norms at batch sizes ``b_small < b_big``."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


def _sq_norm(grads: Sequence[Tensor | None]) -> Tensor:
    parts = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(parts).sum() if parts else torch.zeros(())


class TrainingDiagnosticsCallback(Callback):
    """Records the diagnostics of the module docstring into ``path`` (see docs/diagnostics.md).

    ``quantile_levels``: the quantile heads' levels (``model.quantiles``); ``flat_band``:
    the down/flat/up band that labels realised directions (``model.flat_band``). ``rows``
    holds every record written so far.
    """

    def __init__(
        self,
        cfg: DiagnosticsConfig,
        path: str | Path,
        *,
        quantile_levels: Sequence[float] = (0.05, 0.5, 0.95),
        flat_band: float = 0.0,
    ) -> None:
        self.cfg, self.path = cfg, Path(path)
        self.levels, self.flat_band = list(quantile_levels), float(flat_band)
        self.rows: list[dict[str, Any]] = []
        self._history = {
            "loss": deque(maxlen=cfg.spike_window),
            "grad_norm": deque(maxlen=cfg.spike_window),
        }
        self._ema = {"g2": 0.0, "trace": 0.0}
        self._noise_high = False
        self._batch: dict[str, Tensor] | None = None
        self._pending: dict[str, Any] | None = None
        self._val: dict[str, list[np.ndarray]] = {}
        self._hook: Any = None
        self._first: dict[str, float] = {}
        self._t0 = self._mark = 0.0
        self._samples = self._val_seconds = 0.0
        self._timing = {"data": 0.0, "compute": 0.0, "n": 0, "start": 0.0, "end": None}

    # ----------------------------------------------------------------------------------
    # Training steps
    # ----------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._mark = time.perf_counter()
        if trainer.global_step > 0 and self.path.exists() and not self.rows:
            # a resumed run continues the file: keep the records up to the checkpoint
            prior = pd.read_parquet(self.path)
            kept = prior[prior["step"] <= trainer.global_step]
            self.rows = [{k: v for k, v in r.items() if v == v} for r in kept.to_dict("records")]

    def state_dict(self) -> dict[str, Any]:
        """Noise-scale EMAs and spike history, saved in checkpoints for resumed runs."""
        history = {k: list(v) for k, v in self._history.items()}
        return {"ema": dict(self._ema), "history": history, "noise_high": self._noise_high}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._ema.update(state_dict.get("ema", {}))
        for name, values in state_dict.get("history", {}).items():
            self._history[name].extend(values)
        self._noise_high = bool(state_dict.get("noise_high", False))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._timing["end"] = None  # the first fetch of an epoch opens the iterator

    def _now(self, pl_module: L.LightningModule) -> float:
        if self.cfg.profile and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # kernels run async: wait to time them
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch if isinstance(batch, dict) else None
        if self.cfg.profile:
            now = self._now(pl_module)
            if self._timing["end"] is not None:
                self._timing["data"] += now - self._timing["end"]
            self._timing["start"] = now

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step % self.cfg.interval:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        pending: dict[str, Any] = {"grad_norm": float(_sq_norm(grads).sqrt())}
        pending.update(self._noise_scale(trainer, pl_module))
        self._pending = pending

    def _noise_scale(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        nan = {"grad_noise_scale": math.nan, "noise_ratio": math.nan}
        batch = self._batch
        fsdp = "fsdp" in type(trainer.strategy).__name__.lower()
        if batch is None or fsdp or not isinstance(pl_module, TradingModule):
            return nan
        b = batch["x"].shape[0] // 2
        if b < 1:
            return nan
        halves = [{k: v[i * b : (i + 1) * b] for k, v in batch.items()} for i in (0, 1)]
        params = [p for p in pl_module.parameters() if p.requires_grad]
        buffers = {k: v.clone() for k, v in pl_module.named_buffers()}  # e.g. anneal counters
        devices = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        grads = []
        with torch.random.fork_rng(devices=devices), trainer.precision_plugin.forward_context():
            for half in halves:
                loss = pl_module._step(half)[0]
                grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        with torch.no_grad():
            for k, v in pl_module.named_buffers():
                v.copy_(buffers[k])
            small = float((_sq_norm(grads[0]) + _sq_norm(grads[1])) / 2)
            mean = [
                None if a is None or c is None else (a + c) / 2
                for a, c in zip(grads[0], grads[1], strict=True)
            ]
            big = float(_sq_norm(mean))
        n = _targets(halves[0])  # samples per half: windows, or a sequence's scored positions
        g2, trace = noise_scale_terms(small, big, n, 2 * n)
        ema, beta = self._ema, self.cfg.noise_ema
        ema["g2"] = beta * ema["g2"] + (1 - beta) * g2
        ema["trace"] = beta * ema["trace"] + (1 - beta) * trace
        # no bias correction: it scales both EMAs alike and cancels in their ratio
        scale = ema["trace"] / ema["g2"] if ema["g2"] > 0 else math.nan
        per_step = _targets(batch) * trainer.accumulate_grad_batches
        return {"grad_noise_scale": scale, "noise_ratio": scale / per_step}

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._samples += _targets(batch) if isinstance(batch, dict) else 0
        if self.cfg.profile:
            now = self._now(pl_module)
            self._timing["compute"] += now - self._timing["start"]
            self._timing["n"] += 1
            self._timing["end"] = now
        if self._pending is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        row = {
            "kind": "step",
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "elapsed_s": time.perf_counter() - self._t0,
            "loss": float(loss) if loss is not None else math.nan,
            **self._pending,
        }
        self._pending = None
        now = time.perf_counter()
        seconds = now - self._mark - self._val_seconds  # training time only
        row["samples_per_s"] = self._samples / seconds if seconds > 0 else math.nan
        self._mark, self._samples, self._val_seconds = now, 0.0, 0.0
        if self.cfg.profile and self._timing["n"]:
            t = self._timing
            row["data_time_s"], row["compute_time_s"] = t["data"] / t["n"], t["compute"] / t["n"]
            row["data_fraction"] = t["data"] / max(t["data"] + t["compute"], 1e-12)
            t["data"], t["compute"], t["n"] = 0.0, 0.0, 0
        self._check_step(row)
        self.rows.append(row)

    def _check_step(self, row: dict[str, Any]) -> None:
        k = self.cfg.error_threshold
        for name in ("loss", "grad_norm"):
            value, past = row[name], self._history[name]
            median = float(np.median(past)) if len(past) >= 3 else math.nan
            spike = not math.isfinite(value) or (math.isfinite(median) and value > k * median)
            row[f"{name}_spike"] = bool(spike)
            if spike:
                what = (
                    f"{value} (non-finite: training diverged)"
                    if not math.isfinite(value)
                    else f"{value:.4g} vs rolling median {median:.4g}"
                )
                self._warn(
                    f"{name} spike at step {row['step']}: {what} (diagnostics.error_threshold="
                    f"{k:g}×) — lower training.learning_rate or set training.gradient_clip",
                    event=f"{name}_spike",
                    step=row["step"],
                    value=value,
                    median=median,
                    threshold=k,
                )
            if math.isfinite(value):
                past.append(value)
        ratio = row["noise_ratio"]
        high = math.isfinite(ratio) and ratio > self.cfg.noise_threshold
        # warn on crossing, not on every record: a noisy regime can last the whole run
        crossed, self._noise_high = high and not self._noise_high, high
        if crossed:
            self._warn(
                f"gradient noise scale {row['grad_noise_scale']:.4g} windows is {ratio:.3g}× "
                f"the batch at step {row['step']} (diagnostics.noise_threshold="
                f"{self.cfg.noise_threshold:g}) — the gradient is noise-dominated: raise "
                "training.batch_size / accumulate_grad_batches or lower the learning rate",
                event="grad_noise_high",
                step=row["step"],
                noise_scale=row["grad_noise_scale"],
                ratio=ratio,
                threshold=self.cfg.noise_threshold,
            )

    def _warn(self, message: str, **fields: Any) -> None:
        log.warning(message, extra={"fields": fields})

    # ----------------------------------------------------------------------------------
    # Validation: calibration of the probabilistic heads
    # ----------------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()
        self._val = {"probs": [], "quantiles": [], "realised": []}
        self._captured: list[Any] = []
        head = getattr(getattr(pl_module, "model", None), "head", None)
        if isinstance(head, torch.nn.Module) and not trainer.sanity_checking:
            self._hook = head.register_forward_hook(lambda m, i, o: self._captured.append(o))

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._hook is None or not self._captured:
            return
        out, self._captured = self._captured[-1], []
        if out.forecast.ndim == 3:  # every position of sequences: (B, L, ...) -> (B·L, ...)
            out = out.flatten()
        y, ym = batch["y"], batch["y_mask"]
        if y.ndim == 3:  # multi-symbol items or sequences, flattened as the module does
            y, ym = y.flatten(0, 1), ym.flatten(0, 1)
        if len(y) != len(out.forecast):
            return
        h = out.forecast.shape[1]
        keep = ym[:, :h].all(dim=-1)  # the rows the module scored
        y, out = y[keep][:, :h], out.select(keep)
        self._val["realised"].append(y.detach().float().cpu().numpy())
        if out.probs is not None:
            self._val["probs"].append(out.probs.detach().float().cpu().numpy())
        if out.quantiles is not None:
            self._val["quantiles"].append(out.quantiles.detach().float().cpu().numpy())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._val_seconds += time.perf_counter() - getattr(self, "_val_start", time.perf_counter())
        if trainer.sanity_checking or not self._val.get("realised"):
            return
        realised = np.concatenate(self._val["realised"])  # (N, H)
        row: dict[str, Any] = {
            "kind": "validation",
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "elapsed_s": time.perf_counter() - self._t0,
        }
        if self._val["probs"]:
            probs = np.concatenate(self._val["probs"])
            labels = direction_labels(torch.from_numpy(realised[:, 0]), self.flat_band).numpy()
            row["ece"] = expected_calibration_error(probs, labels, self.cfg.calibration_bins)
        if self._val["quantiles"]:
            cover = quantile_coverage(np.concatenate(self._val["quantiles"]), realised, self.levels)
            row["quantile_coverage_error"] = cover.pop("error")
            row.update({f"coverage_{k}": v for k, v in cover.items()})
        for name in ("ece", "quantile_coverage_error"):
            if name in row:
                first = self._first.setdefault(name, row[name])
                row[f"{name}_drift"] = row[name] - first  # change since the first epoch
                self._check_bias(name, row)
        self.rows.append(row)
        self._write(trainer)

    def _check_bias(self, name: str, row: dict[str, Any]) -> None:
        value, limit = row[name], self.cfg.bias_threshold
        if math.isfinite(value) and value > limit:
            self._warn(
                f"calibration: {name} {value:.3f} > diagnostics.bias_threshold={limit:g} at "
                f"epoch {row['epoch']} — the head's probabilities/quantiles are miscalibrated "
                "(train longer, add label smoothing, or recalibrate before sizing on them)",
                event="calibration_drift",
                metric=name,
                epoch=row["epoch"],
                value=value,
                threshold=limit,
            )

    # ----------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        with atomic_path(self.path) as tmp:  # readers never see a half-written file
            pd.DataFrame(self.rows).to_parquet(tmp, index=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._write(trainer)  # keep what was measured up to a crash


def _targets(batch: dict[str, Any]) -> int:
    """Training samples in a batch: its windows, or the scored positions of sequences."""
    if "rows" in batch:
        return int(batch["y_mask"][..., 0].sum())
    return int(batch["x"].shape[0])
