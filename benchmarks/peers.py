"""Benchmark: our models beside pytorch-forecasting and neuralforecast, on the same data.

In one run, on the same bars, split and budget: pytorch-forecasting's
``TemporalFusionTransformer`` fed by its ``TimeSeriesDataSet`` loader, neuralforecast's
``TFT`` and ``PatchTST``, and ours through the real training path (Config →
``MarketDataModule`` → ``train``): ``temporal_fusion``, and ``hybrid_transformer`` with
every position supervised (``training.supervision=all``). Every model reads 128 bars,
predicts 5 forward returns, trains on 256 target windows per step at hidden size 64 for
the same number of optimiser steps (a wall-clock cap per model stops a slow one early; the
table says so), then forecasts every test window. Figures per model: samples/s end to
end (frame handed to the library's loader → last training step) and in the training
loop (loading included), target windows/s (a sequence supervised at every position
counts each position), peak RSS, parameters, and the out-of-sample IC (pooled
Spearman) and MAE of the 1-step forecast on the test cells every model predicted.

Datasets: ``fixture`` — planted-signal series whose next return carries a known linear
edge in the inputs (oracle IC printed); ``index`` — the S&P 500 and NASDAQ Composite
daily bars the ``arch`` package ships, with 15 of our features plus the return.

    nice python benchmarks/peers.py            # the full table (about 80 min on 2 cores)
    nice python benchmarks/peers.py --quick    # smoke run, about 2 minutes (outputs/)

Needs the ``peers`` extra (``pip install 'market-nn-plus-ultra[peers]'``). Writes
``benchmarks/results/peers.md`` and ``peers.json``. Each model runs in its own process
(``peers_runners.py``) so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from scipy.signal import lfilter
from scipy.stats import spearmanr

from market_nn_plus_ultra.windows import purged_splits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers_report import hardware, report, versions  # noqa: E402  (modules beside this one)
from peers_runners import ENCODER, HORIZON, MODELS, RUNNERS  # noqa: E402

TEST_FRACTION = 0.15
SIGMA = 0.01  # fixture: standard deviation of a bar's return
EDGE = 0.10  # fixture: loading of the next return on the planted input signal
AUTOCORR = 0.05  # fixture: lag-1 autocorrelation of returns (what a returns-only model sees)
INDEX_FEATURES = [  # 15 of our default features; calendar columns are constant on daily bars
    "velocity_5",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_width_20",
    "atr_14",
    "volume_z_20",
    "realised_vol_20",
    "skew_20",
    "kurt_20",
    "regime_bull_prob",
    "fft_energy_low",
    "fft_energy_mid",
    "fft_energy_high",
]


# --------------------------------------------------------------------------------------
# Data: one long frame per dataset (series, time_idx, timestamp, close, ret, inputs)
# --------------------------------------------------------------------------------------


def planted_fixture(n_series: int, n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Series whose return t → t+1 is ``σ (a·z_t + b·u_t + c·ε)``: a known linear edge.

    Inputs: ``ret`` (the return into bar t, ``σ u_t``) and 15 AR(1) factors ``f01..f15``
    (φ = 0.95, unit variance); ``z_t`` is a fixed unit-norm mix of ``f01..f04``, the other
    11 are distractors. ``a`` = EDGE, ``b`` = AUTOCORR, ``c`` keeps ``u`` near unit
    variance. ``oracle`` = ``σ (a·z_t + b·u_t)``, the conditional mean of the next return.
    """
    rng = np.random.default_rng(seed)
    phi, n_factors, n_signal = 0.95, 15, 4
    shocks = rng.standard_normal((n_rows, n_series, n_factors))
    factors = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], shocks, axis=0)  # (T, S, 15)
    weights = rng.standard_normal(n_signal)
    z = factors[..., :n_signal] @ (weights / np.linalg.norm(weights))  # (T, S)
    c = np.sqrt(1.0 - EDGE**2 - AUTOCORR**2)
    drive = np.zeros((n_rows, n_series))
    drive[1:] = EDGE * z[:-1] + c * rng.standard_normal((n_rows - 1, n_series))
    u = lfilter([1.0], [1.0, -AUTOCORR], drive, axis=0)  # u_{t+1} = b·u_t + a·z_t + c·ε
    ret = SIGMA * u
    stamps = pd.date_range("1970-01-01", periods=n_rows, freq="D", tz="UTC")
    frames = []
    inputs = ["ret", *(f"f{k + 1:02d}" for k in range(n_factors))]
    for s in range(n_series):
        frame = pd.DataFrame(factors[:, s].astype(np.float32), columns=inputs[1:])
        frame.insert(0, "ret", ret[:, s])
        frame.insert(0, "close", 100.0 * np.cumprod(1.0 + ret[:, s]))
        frame.insert(0, "timestamp", stamps)
        frame.insert(0, "time_idx", np.arange(n_rows))
        frame.insert(0, "series", f"S{s:02d}")
        frame["oracle"] = SIGMA * (EDGE * z[:, s] + AUTOCORR * u[:, s])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), inputs


def index_data(workdir: Path) -> tuple[pd.DataFrame, list[str]]:
    """S&P 500 and NASDAQ Composite daily bars (``arch``), imported and featured our way."""
    from market_nn_plus_ultra.config import load_config
    from market_nn_plus_ultra.data.samples import import_samples
    from market_nn_plus_ultra.features.compute import compute_features

    db = workdir / "index.db"
    import_samples(db, ["sp500", "nasdaq"], overwrite=True)
    cfg = load_config(
        None,
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            "features.names=[" + ",".join(INDEX_FEATURES) + "]",
        ],
    )
    panel, _ = compute_features(cfg.data, cfg.features)
    frame = panel[["close", *INDEX_FEATURES]].reset_index().rename(columns={"symbol": "series"})
    frame = frame.sort_values(["series", "timestamp"], ignore_index=True)
    frame["ret"] = frame.groupby("series")["close"].pct_change()
    frame = frame.dropna().reset_index(drop=True)  # feature warm-up rows: no model sees them
    calendar = np.sort(frame["timestamp"].unique())
    frame.insert(1, "time_idx", np.searchsorted(calendar, frame["timestamp"].to_numpy()))
    inputs = ["ret", *INDEX_FEATURES]
    frame[inputs[1:]] = frame[inputs[1:]].astype(np.float32)
    return frame, inputs


def _truth(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (series, t): the realised return t → t+1 and, on the fixture, the oracle."""
    columns = ["series", "time_idx", "ret"] + (["oracle"] if "oracle" in frame else [])
    truth = frame[columns].sort_values(["series", "time_idx"]).copy()
    truth["realised"] = truth.groupby("series")["ret"].shift(-1)
    return truth.rename(columns={"time_idx": "t"}).drop(columns="ret").dropna(subset="realised")


def _ridge(frame: pd.DataFrame, inputs: list[str], train_last: int) -> pd.DataFrame:
    """Reference, not a peer: a ridge regression of the next return on the inputs at t."""
    from sklearn.linear_model import Ridge

    truth = _truth(frame)
    rows = frame.merge(truth, left_on=["series", "time_idx"], right_on=["series", "t"])
    train = rows[rows.t <= train_last]
    mean, std = train[inputs].mean(), train[inputs].std().replace(0.0, 1.0)
    model = Ridge(alpha=1.0).fit((train[inputs] - mean) / std, train["realised"])
    return pd.DataFrame(
        {"series": rows.series, "t": rows.t, "forecast": model.predict((rows[inputs] - mean) / std)}
    )


# --------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------


def _warmup(steps: int) -> int:
    """Training steps left out of the training-loop rate (first-step allocations, caches)."""
    return 3 if steps >= 10 else 1


def _run_model(model: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One model in a fresh process; its result JSON, or its error."""
    out = folder / f"result-{model}.json"
    log = folder / f"log-{model}.txt"
    threads = str(args.threads)
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [sys.executable, str(HERE / "peers_runners.py"), "--model", model]
    command += ["--data", str(folder), "--out", str(out), "--threads", threads]
    began, busy, own = time.perf_counter(), _busy_cpu_s(), _children_cpu_s()
    with log.open("w") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0 or not out.exists():
        tail = log.read_text().strip().splitlines()[-6:]
        return {"model": model, "label": RUNNERS[model][0], "error": " | ".join(tail)}
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - began
    # CPU time the rest of the machine used meanwhile, in cores (other jobs share it)
    others = (_busy_cpu_s() - busy) - (_children_cpu_s() - own)
    result["other_load_cores"] = max(0.0, others) / result["process_s"]
    return result


def _busy_cpu_s() -> float:
    """CPU-seconds every core of the machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _children_cpu_s() -> float:
    """CPU-seconds used by this process's finished children (the model processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _score(preds: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    joined = preds.merge(truth, on=["series", "t"])
    ic = spearmanr(joined["forecast"], joined["realised"]).statistic
    mae = float(np.mean(np.abs(joined["forecast"] - joined["realised"])))
    return {"ic": float(ic), "mae_bps": 1e4 * mae, "cells": len(joined)}


def run_dataset(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the dataset, run every model on it, score them on their common test cells."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "fixture":
        frame, inputs = planted_fixture(args.series, args.rows)
    else:
        frame, inputs = index_data(folder)
    n_rows = int(frame["time_idx"].max()) + 1
    train, _, test = purged_splits(
        n_rows, 0.0, TEST_FRACTION, window=ENCODER, horizon=HORIZON, embargo=None
    )
    meta = {
        "inputs": inputs,
        "train_last": train.rows.stop - 1,
        "test_first": test.rows.start,
        "test_last": test.rows.stop - 1,
        "test_fraction": TEST_FRACTION,
        "gaps": bool(frame.groupby("series").size().min() < n_rows),
        "steps": args.steps,
        "warmup_steps": _warmup(args.steps),
        "max_seconds": args.max_seconds,
        "variable_width": args.variable_width,
        "accelerator": args.accelerator,
        "workdir": str(folder),
    }
    frame.to_parquet(folder / "data.parquet", index=False)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    truth = _truth(frame)
    truth = truth[(truth.t >= meta["test_first"]) & (truth.t <= meta["test_last"])]
    results, predictions = [], {}
    for model in args.models:
        print(f"[{name}] {model} ...", flush=True)
        result = _run_model(model, folder, args)
        path = folder / f"pred-{model}.parquet"
        if "error" not in result and path.exists():
            predictions[model] = pd.read_parquet(path)
        else:
            print(f"[{name}] {model} failed: {result.get('error')}", flush=True)
        results.append(result)
    predictions["ridge"] = _ridge(frame, inputs, meta["train_last"])
    common = truth
    for preds in predictions.values():
        common = common.merge(preds[["series", "t"]], on=["series", "t"])
    for result in results:
        if result["model"] in predictions:
            result.update(_score(predictions[result["model"]], common))
    summary = {
        "dataset": name,
        "series": int(frame["series"].nunique()),
        "rows": n_rows,
        "inputs": len(inputs),
        "train_windows": int((meta["train_last"] - ENCODER + 2) * frame["series"].nunique()),
        "test_cells": len(common),
        "split": {k: meta[k] for k in ("train_last", "test_first", "test_last")},
        "ridge": _score(predictions["ridge"], common),
        "models": results,
    }
    if "oracle" in common:
        summary["oracle_ic"] = float(spearmanr(common["oracle"], common["realised"]).statistic)
        last = frame[["series", "time_idx", "ret"]].rename(columns={"time_idx": "t"})
        last = common.merge(last, on=["series", "t"])  # the return into bar t as the forecast
        summary["last_return_ic"] = float(spearmanr(last["ret"], last["realised"]).statistic)
    return summary


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: tiny data, 3 steps.")
    parser.add_argument("--datasets", default="fixture,index", help="fixture, index or both.")
    parser.add_argument("--models", default=",".join(MODELS), help=f"Any of {', '.join(MODELS)}.")
    parser.add_argument("--steps", type=int, default=None, help="Optimiser steps per model.")
    parser.add_argument("--max-seconds", type=float, default=None, help="Wall-clock cap.")
    parser.add_argument("--series", type=int, default=None, help="Fixture series.")
    parser.add_argument("--rows", type=int, default=None, help="Fixture bars per series.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per model (1: steady on a shared machine; 2 on an idle one).",
    )
    parser.add_argument(
        "--variable-width", type=int, default=8, help="TFT per-input width (both TFTs)."
    )
    parser.add_argument(
        "--accelerator", choices=["cpu", "gpu"], default="cpu", help="Where every model runs."
    )
    parser.add_argument("--out", type=Path, default=None, help="Markdown report path.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep data and logs here.")
    parser.add_argument(
        "--rerender", type=Path, default=None, help="Only rewrite the .md of this peers.json."
    )
    args = parser.parse_args()
    quick = {"steps": 3, "max_seconds": 8.0, "series": 2, "rows": 900}
    full = {"steps": 150, "max_seconds": 900.0, "series": 10, "rows": 20_000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.datasets == "fixture,index":
        args.datasets = "fixture"
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    args.datasets = args.datasets.split(",")
    if set(args.datasets) - {"fixture", "index"}:
        raise SystemExit(f"--datasets {args.datasets}: use fixture, index or fixture,index")
    # a smoke run's figures are not the table's: they go to the (git-ignored) outputs/
    default = Path("outputs") / "peers-quick.md" if args.quick else HERE / "results" / "peers.md"
    args.out = args.out or default
    return args


def _rerender(path: Path) -> None:
    """Write the markdown report again from a saved ``peers.json`` (no model is run)."""
    payload = json.loads(path.read_text())
    args = argparse.Namespace(**payload["settings"])
    date = payload.get("date") or time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime))
    found, machine = payload["versions"], payload["hardware"]
    text = report(payload["datasets"], args, found, _warmup(args.steps), date, machine)
    path.with_suffix(".md").write_text(text)
    print(text)


def main() -> None:
    args = _parse()
    if args.rerender:
        _rerender(args.rerender)
        return
    found = versions()
    print(
        hardware(args.threads, args.accelerator),
        "|",
        ", ".join(f"{k} {v}" for k, v in found.items()),
    )
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = args.workdir or Path(tmp)
        summaries = [run_dataset(name, args, workdir) for name in args.datasets]
    date, machine = time.strftime("%Y-%m-%d"), hardware(args.threads, args.accelerator)
    text = report(summaries, args, found, _warmup(args.steps), date, machine)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    payload = {"versions": found, "hardware": machine, "date": date, "settings": vars(args)}
    payload["datasets"] = summaries
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
