"""Benchmark: every-position supervision and one-pass inference against the per-window path.

Two measurements, same model, same data, one run:

1. **Inference** — predictions for every bar of S symbols × N bars: the per-window path
   (one forward pass per window of W bars, each bar encoded W times) against the
   one-pass path (each symbol's history in chunks of 512 outputs with W − 1 bars of
   overlap). Both go through ``Agent.predict``'s own runners on the same windows; the
   maximum absolute difference of the positions and forecasts is printed beside the
   times.
2. **Training** — target bars per second of the training step (forward, loss, backward,
   AdamW) with ``training.supervision=last`` (one target per window) and ``all``
   (every position of a sequence with a full window behind it), batches from the real
   datasets.

The model is the desktop preset's (configs/default_desktop.yaml: hybrid_transformer,
d_model 64, depth 2) at the default window (128, configs/default.yaml) unless
``--window`` says otherwise. Random weights: speed and equality do not depend on them.

    python benchmarks/sequence.py                 # CPU, 4 symbols × 2,048 bars
    python benchmarks/sequence.py --quick         # a smoke run

Writes ``benchmarks/results/sequence.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from market_nn_plus_ultra.config import load_config, training_model
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.inference.one_pass import run_one_pass
from market_nn_plus_ultra.models import build_model
from market_nn_plus_ultra.training import MarketDataModule, TradingModule
from market_nn_plus_ultra.windows import SlidingWindowDataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _config(db: Path, window: int, supervision: str, overrides: list[str]):
    return load_config(
        ROOT / "configs" / "default_desktop.yaml",
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"windows.window={window}",
            f"training.supervision={supervision}",
            "model.dropout=0.0",
            *overrides,
        ],
    )


def _timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - began)
    return best, out


def bench_inference(db: Path, window: int, overrides: list[str], repeat: int) -> dict:
    cfg = _config(db, window, "all", overrides)
    cfg = cfg.model_copy(update={"model": training_model(cfg)})  # the bounded look-back
    dm = MarketDataModule(cfg)
    dm.setup()
    torch.manual_seed(0)
    model = build_model(cfg.model, dm.n_features).eval()
    info = {"feature_columns": dm.feature_columns, "n_features": dm.n_features, "window": window}
    agent = Agent(model, cfg, info, Path("random-weights"), torch.device("cpu"))
    windows = cfg.windows.model_copy(update={"stride": 1, "symbols_per_item": "one"})
    dataset = SlidingWindowDataset.from_config(
        dm.tensors, windows, normaliser=dm.normaliser, require_targets=False
    )
    items = np.arange(len(dataset))
    with torch.inference_mode():
        slow_s, slow = _timed(lambda: agent._run(dataset, items, 1024, None), repeat)
        fast_s, fast = _timed(lambda: run_one_pass(agent, dataset, items, 1024, None), repeat)
    diff = max(float(np.abs(fast[k] - slow[k]).max()) for k in ("position", "forecast"))
    return {
        "predictions": len(items),
        "per_window_s": slow_s,
        "one_pass_s": fast_s,
        "speedup": slow_s / fast_s,
        "max_abs_difference": diff,
    }


def bench_training(db: Path, window: int, overrides: list[str], steps: int) -> dict:
    out = {}
    for supervision in ("last", "all"):
        cfg = _config(db, window, supervision, overrides)
        dm = MarketDataModule(cfg)
        dm.setup()
        torch.manual_seed(0)
        module = TradingModule(training_model(cfg), cfg.training, dm.n_features).train()
        optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)
        ds = dm.datasets["train"]
        per_batch = dm.items_per_batch(cfg.training.batch_size)
        rng = np.random.default_rng(0)
        batches = [ds.batch(rng.choice(len(ds), per_batch)) for _ in range(steps + 2)]
        targets = 0
        began = None
        for i, batch in enumerate(batches):
            if i == 2:  # two warm-up steps
                began = time.perf_counter()
            loss, _, _ = module._step(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if i >= 2:
                targets += int(batch["y_mask"][..., 0].sum())
        seconds = time.perf_counter() - began
        out[supervision] = {
            "items_per_batch": per_batch,
            "rows_per_batch": per_batch * batches[0]["x"].shape[1],
            "target_bars_per_s": targets / seconds,
            "steps_per_s": steps / seconds,
        }
    out["speedup_per_target_bar"] = (
        out["all"]["target_bars_per_s"] / out["last"]["target_bars_per_s"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=128, help="bars per window (default 128)")
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--bars", type=int, default=2048, help="daily bars per symbol")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per mode")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "sequence.md")
    args = parser.parse_args()
    if args.quick:
        args.window, args.symbols, args.bars, args.steps = 32, 2, 600, 3
    torch.set_num_threads(args.threads)
    overrides = ["training.batch_size=64"]
    with tempfile.TemporaryDirectory() as tmp:
        db = write_fixture(
            Path(tmp) / "market.db",
            symbols=[f"S{i:02d}" for i in range(args.symbols)],
            rows=args.bars,
            freq="1D",
            alt_features=0,
        )
        inference = bench_inference(db, args.window, overrides, repeat=1 if args.quick else 2)
        training = bench_training(db, args.window, overrides, args.steps)
    result = {
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{args.threads} torch thread(s)",
        "torch": torch.__version__,
        "window": args.window,
        "symbols": args.symbols,
        "bars": args.bars,
        "inference": inference,
        "training": training,
    }
    lines = [
        f"# Sequence benchmark ({result['hardware']}, torch {torch.__version__})",
        "",
        f"desktop preset model, window {args.window}, {args.symbols} symbols × {args.bars} bars",
        "",
        "| inference | predictions | per-window s | one-pass s | speed-up | max abs diff |",
        "|---|---:|---:|---:|---:|---:|",
        f"| CPU | {inference['predictions']:,} | {inference['per_window_s']:.2f} | "
        f"{inference['one_pass_s']:.3f} | {inference['speedup']:.1f}× | "
        f"{inference['max_abs_difference']:.1e} |",
        "",
        "| training | items/batch | rows/batch | target bars/s | steps/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in ("last", "all"):
        t = training[mode]
        lines.append(
            f"| supervision={mode} | {t['items_per_batch']} | {t['rows_per_batch']:,} | "
            f"{t['target_bars_per_s']:,.0f} | {t['steps_per_s']:.2f} |"
        )
    lines += ["", f"per target bar: {training['speedup_per_target_bar']:.1f}× faster with `all`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
