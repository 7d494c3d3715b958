"""One model of ``benchmarks/peers.py`` trained and tested in its own process.

    python benchmarks/peers_runners.py --model pf_tft --data DIR --out result.json

``DIR`` holds what ``peers.py`` wrote: ``data.parquet`` (one row per series and bar:
``series``, ``time_idx`` (the union-calendar row), ``timestamp``, ``close``, ``ret`` and the
input columns) and ``meta.json`` (the inputs, the split rows and the budget). Each runner
hands the frame to its library's own loader, trains for the same number of optimiser
steps of the same batch size (or until the wall-clock cap), then forecasts every test
window; the 1-step forecasts go to ``pred-<model>.parquet`` (``series``, ``t``, ``forecast``:
the return from bar t to t+1). A fresh process per model keeps the peak RSS its own.

The clock starts when the frame is handed over (dataset and loader building count) and
the training clock stops at Lightning's ``on_train_end``; the window between steps counts
toward the step after it, so the training-loop rate includes each batch's loading.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import torch

ENCODER = 128  # bars of context every model reads
HORIZON = 5  # forward returns predicted per window
BATCH = 256  # training windows (sequences, for every-position supervision) per step
HIDDEN = 64  # hidden size of every model
HEADS = 4  # attention heads of every model
LEARNING_RATE = 1e-3  # pytorch-forecasting's and neuralforecast's TFT default
CLIP = 1.0  # gradient-norm clip (our default), applied to every model
EVAL_BATCH = 1024  # windows per inference batch
MODELS = ("pf_tft", "nf_tft", "nf_patchtst", "ours_tft", "ours_hybrid")


@dataclass
class RunResult:
    """What one model measured (``peers.py`` scores the predictions itself)."""

    model: str
    label: str
    parameters: int = 0
    steps: int = 0
    samples: int = 0  # training samples seen (windows; ours with supervision=all: sequences)
    targets: int = 0  # target windows supervised (a sequence scores many positions)
    setup_s: float = 0.0  # frame handed over → first training step starts
    train_s: float = 0.0  # first training step starts → on_train_end
    loop_samples_per_s: float = 0.0  # after the warm-up steps, loading included
    loop_targets_per_s: float = 0.0
    predict_s: float = 0.0
    predicted: int = 0
    rss_base_mib: float = 0.0  # after imports and reading the frame
    rss_peak_mib: float = 0.0  # high-water mark up to the end of training
    rss_peak_predict_mib: float = 0.0  # high-water mark up to the end of inference
    gpu_peak_mib: float = 0.0  # torch.cuda.max_memory_allocated up to the end of training
    capped: bool = False  # stopped by the wall-clock cap before the step budget
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        return self.setup_s + self.train_s


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


Counter = Callable[[Any], tuple[int, int]]  # a training batch → (samples, target windows)


class Clock:
    """What the training loop measured; filled by the callback of :func:`timer_callback`."""

    def __init__(self, start: float, meta: dict[str, Any], count: Counter) -> None:
        self.start, self.max_seconds, self.warmup = start, meta["max_seconds"], meta["warmup_steps"]
        self.count = count
        self.steps = self.samples = self.targets = self.parameters = 0
        self.warm_samples = self.warm_targets = 0
        self.capped = False
        self.t_begin = self.t_warm = self.t_end = float("nan")
        self.first_y_shape: tuple[int, ...] | None = None
        self.rss_peak = self.gpu_peak = 0.0


def timer_callback(base: type, clock: Clock) -> Any:
    """A Lightning callback of class ``base`` (``lightning`` or ``pytorch_lightning``) that
    times the training loop into ``clock``, counts steps, samples, target windows and
    parameters, reads the first batch's target shape and stops training once
    ``clock.max_seconds`` have passed since ``clock.start``. The clock is reached through
    the closure, not an attribute, so a library that deep-copies its callbacks
    (neuralforecast does) still fills this one."""

    class Timer(base):  # type: ignore[misc, valid-type]
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            clock.parameters = sum(p.numel() for p in pl_module.parameters())
            clock.t_begin = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            samples, targets = clock.count(batch)
            clock.steps, clock.samples = clock.steps + 1, clock.samples + samples
            clock.targets += targets
            now = time.perf_counter()
            if clock.steps == clock.warmup:
                clock.t_warm, clock.warm_samples, clock.warm_targets = (
                    now,
                    clock.samples,
                    clock.targets,
                )
            if clock.first_y_shape is None and isinstance(batch, dict) and "y" in batch:
                clock.first_y_shape = tuple(batch["y"].shape)
            if clock.max_seconds and now - clock.start > clock.max_seconds:
                clock.capped = trainer.should_stop = True

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            clock.t_end = time.perf_counter()
            clock.rss_peak = _max_rss_mib()
            if torch.cuda.is_available():
                clock.gpu_peak = torch.cuda.max_memory_allocated() / 2**20

    return Timer()


def _clock(base: type, meta: dict[str, Any], count: Counter) -> tuple[Clock, Any]:
    """A clock started now, and the callback of class ``base`` that fills it."""
    clock = Clock(time.perf_counter(), meta, count)
    return clock, timer_callback(base, clock)


def _finish(result: RunResult, clock: Clock) -> None:
    """Copy the clock's measurements into ``result``."""
    result.steps, result.parameters, result.capped = clock.steps, clock.parameters, clock.capped
    result.samples, result.targets = clock.samples, clock.targets
    result.setup_s = clock.t_begin - clock.start
    result.train_s = clock.t_end - clock.t_begin
    if clock.steps > clock.warmup:
        seconds = clock.t_end - clock.t_warm
        result.loop_samples_per_s = (clock.samples - clock.warm_samples) / seconds
        result.loop_targets_per_s = (clock.targets - clock.warm_targets) / seconds
    result.rss_peak_mib, result.gpu_peak_mib = clock.rss_peak, clock.gpu_peak


def _trainer_kwargs(timer: Any, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "accelerator": meta["accelerator"],
        "devices": 1,
        "precision": "32-true",
        "max_steps": meta["steps"],
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "gradient_clip_val": CLIP,
        "callbacks": [timer],
    }


# --------------------------------------------------------------------------------------
# pytorch-forecasting
# --------------------------------------------------------------------------------------


def _pf_count(batch: tuple[dict[str, torch.Tensor], Any]) -> tuple[int, int]:
    n = int(batch[0]["encoder_cont"].shape[0])  # (x, (y, weight)): one target window each
    return n, n


def run_pf_tft(frame: pd.DataFrame, meta: dict[str, Any], result: RunResult) -> pd.DataFrame:
    """pytorch-forecasting's TemporalFusionTransformer on its TimeSeriesDataSet loader."""
    import lightning.pytorch as pl
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
    from pytorch_forecasting.metrics import RMSE

    inputs, width = meta["inputs"], meta["variable_width"]
    train_last, test_first, test_last = meta["train_last"], meta["test_first"], meta["test_last"]
    clock, timer = _clock(pl.Callback, meta, _pf_count)
    train = frame[frame.time_idx <= train_last + HORIZON]
    dataset = TimeSeriesDataSet(
        train,
        time_idx="time_idx",
        target="ret",
        group_ids=["series"],
        min_encoder_length=ENCODER,
        max_encoder_length=ENCODER,
        min_prediction_length=HORIZON,
        max_prediction_length=HORIZON,
        time_varying_unknown_reals=inputs,  # `ret`, the target, is one of them
        add_relative_time_idx=True,  # the decoder's one known input (the library's recipe)
        allow_missing_timesteps=meta["gaps"],
    )
    loader = dataset.to_dataloader(train=True, batch_size=BATCH, num_workers=0)
    model = TemporalFusionTransformer.from_dataset(
        dataset,
        hidden_size=HIDDEN,
        attention_head_size=HEADS,
        hidden_continuous_size=width,
        lstm_layers=1,
        dropout=0.1,
        loss=RMSE(),
        learning_rate=LEARNING_RATE,
        log_interval=-1,
    )
    trainer = pl.Trainer(
        **_trainer_kwargs(timer, meta), limit_val_batches=0, num_sanity_val_steps=0
    )
    trainer.fit(model, train_dataloaders=loader)
    _finish(result, clock)
    result.settings = {"hidden_continuous_size": width, "target_normalizer": "auto (encoder)"}

    began = time.perf_counter()
    test = frame[
        (frame.time_idx >= test_first - ENCODER + 1) & (frame.time_idx <= test_last + HORIZON)
    ]
    test_set = TimeSeriesDataSet.from_dataset(
        dataset, test, stop_randomization=True, min_prediction_idx=test_first + 1
    )
    out = model.predict(
        test_set.to_dataloader(train=False, batch_size=EVAL_BATCH, num_workers=0),
        return_index=True,
        trainer_kwargs={
            "accelerator": meta["accelerator"],
            "logger": False,
            "enable_progress_bar": False,
        },
    )
    result.predict_s = time.perf_counter() - began
    forecast = out.output[:, 0].float().numpy()  # the first decoder step: t → t+1
    index = out.index  # time_idx = the first predicted bar (t + 1)
    return pd.DataFrame(
        {"series": index["series"].astype(str), "t": index["time_idx"] - 1, "forecast": forecast}
    )


# --------------------------------------------------------------------------------------
# neuralforecast
# --------------------------------------------------------------------------------------


def _nf_count(batch: Any) -> tuple[int, int]:
    return BATCH, BATCH  # the batch holds whole series; each step samples BATCH windows


def run_nf(frame: pd.DataFrame, meta: dict[str, Any], result: RunResult) -> pd.DataFrame:
    """neuralforecast's TFT (every input as a historic exogenous) or PatchTST (returns only)."""
    import pytorch_lightning as pl
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MSE
    from neuralforecast.models import TFT, PatchTST

    exog = [c for c in meta["inputs"] if c != "ret"]  # `ret` is y itself
    n_series = frame["series"].nunique()
    train_last, test_first, test_last = meta["train_last"], meta["test_first"], meta["test_last"]
    clock, timer = _clock(pl.Callback, meta, _nf_count)
    common = {
        "h": HORIZON,
        "input_size": ENCODER,
        "loss": MSE(),
        "max_steps": meta["steps"],
        "learning_rate": LEARNING_RATE,
        "batch_size": n_series,  # series per step; the windows are sampled from them
        "windows_batch_size": BATCH,
        "inference_windows_batch_size": EVAL_BATCH,
        "random_seed": 0,
        **_trainer_kwargs(timer, meta),
    }
    if result.model == "nf_tft":
        model = TFT(hist_exog_list=exog, hidden_size=HIDDEN, n_head=HEADS, dropout=0.1, **common)
        result.settings = {"scaler_type": "robust (per window)", "variable_width": HIDDEN}
    else:
        model = PatchTST(
            hidden_size=HIDDEN,
            n_heads=HEADS,
            encoder_layers=2,
            linear_hidden_size=4 * HIDDEN,
            **common,
        )
        result.settings = {"inputs": "ret only (no exogenous support)", "encoder_layers": 2}
    columns = ["series", "time_idx", "ret", *(exog if result.model == "nf_tft" else [])]
    long = frame[columns].rename(columns={"series": "unique_id", "time_idx": "ds", "ret": "y"})
    nf = NeuralForecast(models=[model], freq=1)
    nf.fit(long[long.ds <= train_last + HORIZON], val_size=0)
    _finish(result, clock)

    began = time.perf_counter()
    test = long[(long.ds >= test_first - ENCODER - 8) & (long.ds <= test_last + HORIZON)]
    cv = nf.cross_validation(
        test,
        n_windows=None,
        test_size=test_last + HORIZON - test_first,  # cut-offs test_first .. test_last
        step_size=1,
        refit=False,
        use_fitted=True,
    )
    result.predict_s = time.perf_counter() - began
    name = type(model).__name__
    first = cv[cv.ds == cv.cutoff + 1]  # the 1-step forecast of each cut-off t
    return pd.DataFrame(
        {"series": first.unique_id.astype(str), "t": first.cutoff, "forecast": first[name]}
    )


# --------------------------------------------------------------------------------------
# market_nn_plus_ultra
# --------------------------------------------------------------------------------------


def _our_overrides(meta: dict[str, Any], architecture: str, out: Path) -> list[str]:
    from market_nn_plus_ultra.config import ModelConfig, TrainingConfig

    overrides = [
        f"model.architecture={architecture}",
        f"model.d_model={HIDDEN}",
        "model.depth=2",
        f"model.n_heads={HEADS}",
        "model.ff_mult=4",
        f"model.tft_hidden={HIDDEN}",
        "model.dropout=0.1",
        f"model.horizon={HORIZON}",
        "model.loss.regression=mse",
        f"windows.window={ENCODER}",
        f"windows.horizon={HORIZON}",
        "windows.normalise=train_zscore",
        "windows.val_fraction=0",
        f"windows.test_fraction={meta['test_fraction']}",
        "windows.feature_columns=[" + ",".join(meta["inputs"]) + "]",
        f"training.batch_size={BATCH}",
        f"training.eval_batch_size={EVAL_BATCH}",
        f"training.max_steps={meta['steps']}",
        "training.max_epochs=1000",
        f"training.learning_rate={LEARNING_RATE}",
        f"training.warmup_steps={max(1, meta['steps'] // 10)}",
        f"training.gradient_clip={CLIP}",
        "training.num_workers=0",
        f"training.accelerator={meta['accelerator']}",
        "training.devices=1",
        "training.precision=32-true",
        "training.progress_bar=false",
        f"training.checkpoint_dir={out}",
        "tracking.tensorboard=false",
        "data.cache=false",
    ]
    if "tft_variable_width" in ModelConfig.model_fields:
        overrides.append(f"model.tft_variable_width={meta['variable_width']}")
    sequence = "supervision" in TrainingConfig.model_fields
    if architecture == "hybrid_transformer":
        if not sequence:
            raise RuntimeError(
                "training.supervision is not a config field of this version: the "
                "hybrid_transformer run supervises every position and needs "
                "training.supervision=all (with training.min_context and "
                "training.sequence_length)"
            )
        overrides.append("training.supervision=all")
    elif sequence:
        overrides.append("training.supervision=last")
    return overrides


def _our_count(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Items and scored target windows: ``y_mask`` is ``(B, H)`` per window, ``(B, L, H)``
    per sequence position (False where a position is not scored)."""
    return int(batch["x"].shape[0]), int(batch["y_mask"].all(dim=-1).sum())


def _supervision_note(cfg: Any, y_shape: tuple[int, ...] | None) -> str:
    """A warning when ``supervision=all`` was asked for but batches hold one target each."""
    if getattr(cfg.training, "supervision", "last") != "all":
        return ""
    if y_shape is not None and len(y_shape) == 3:  # (B, L, H): a target window per position
        return ""
    return (
        f"training.supervision=all was set but the training batches hold one target "
        f"window per sample (y {y_shape}): every-position supervision is not in effect"
    )


def run_ours(frame: pd.DataFrame, meta: dict[str, Any], result: RunResult) -> pd.DataFrame:
    """Our training path: Config → MarketDataModule → ``train`` (TradingModule, Trainer)."""
    import lightning.pytorch as pl

    from market_nn_plus_ultra.config import load_config
    from market_nn_plus_ultra.training import train
    from market_nn_plus_ultra.training.data import MarketDataModule

    architecture = "temporal_fusion" if result.model == "ours_tft" else "hybrid_transformer"
    out = Path(meta["workdir"]) / f"run-{result.model}"
    cfg = load_config(None, _our_overrides(meta, architecture, out))
    panel = frame.rename(columns={"series": "symbol"}).set_index(["timestamp", "symbol"])
    panel = panel[["close", *meta["inputs"]]]
    clock, timer = _clock(pl.Callback, meta, _our_count)
    done = train(cfg, callbacks=[timer], datamodule=MarketDataModule(cfg, panel=panel))
    _finish(result, clock)
    result.predict_s = time.perf_counter() - clock.t_end  # the test epoch (best.ckpt reload)
    result.note = _supervision_note(cfg, clock.first_y_shape)
    t = cfg.training
    result.settings = {
        "supervision": getattr(t, "supervision", "last"),
        "min_context": getattr(t, "min_context", None),
        "sequence_length": getattr(t, "sequence_length", None),
        "tft_variable_width": getattr(cfg.model, "tft_variable_width", None),
        "first_batch_y": list(clock.first_y_shape or ()),
    }
    preds = pd.read_parquet(done.test_predictions)
    rows = frame.drop_duplicates("timestamp").set_index("timestamp")["time_idx"]
    return pd.DataFrame(
        {
            "series": preds["symbol"].astype(str),
            "t": rows.reindex(pd.DatetimeIndex(preds["timestamp"])).to_numpy(),
            "forecast": preds["forecast"].to_numpy(),
        }
    )


RUNNERS = {
    "pf_tft": ("pytorch-forecasting TFT", run_pf_tft),
    "nf_tft": ("neuralforecast TFT", run_nf),
    "nf_patchtst": ("neuralforecast PatchTST", run_nf),
    "ours_tft": ("ours temporal_fusion", run_ours),
    "ours_hybrid": ("ours hybrid_transformer, every position", run_ours),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Folder peers.py wrote.")
    parser.add_argument("--out", type=Path, required=True, help="Result JSON to write.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meta = json.loads((args.data / "meta.json").read_text())
    frame = pd.read_parquet(args.data / "data.parquet")
    label, runner = RUNNERS[args.model]
    result = RunResult(args.model, label)
    result.rss_base_mib = psutil.Process().memory_info().rss / 2**20
    preds = runner(frame, meta, result)
    result.predicted = len(preds)
    result.rss_peak_predict_mib = _max_rss_mib()
    preds.to_parquet(args.data / f"pred-{args.model}.parquet", index=False)
    args.out.write_text(json.dumps(asdict(result) | {"wall_s": result.wall_s}, indent=2))


if __name__ == "__main__":
    main()
