"""Benchmark: the prediction service on loopback, beside its framework and model floors.

The model is the desktop preset's (configs/default_desktop.yaml: hybrid_transformer,
d_model 64, depth 2, window 64, the default feature set, ``train_zscore``) trained for one
epoch of 4 batches on a 400-bar daily fixture of two symbols — the weights do not change
the speed. The service runs with the default guardrails (``max_position`` 1.0) and its
prediction log, under uvicorn with one worker, in its own process; the load generator
(raw HTTP/1.1 over keep-alive connections, see ``service_http.py``) in another.

One run measures:

1. **In process** — one bars-mode prediction of one symbol (``min_bars`` bars) through
   ``Predictor.from_bars`` by stage (features, model), the guardrails (the default cap,
   and every path-dependent rule over a 252-bar live book), 16 one-symbol requests
   answered as one batch (what 16 concurrent callers get), a symbols-mode prediction,
   and the floors: ``Agent.predict`` on a database holding the same bars and the bare
   forward pass of the model on that one window (and on 16 windows at once).
2. **Over HTTP** — ``POST /predict`` in both modes (``bars``: the request carries the
   bars; ``symbols``: the service reads its database) at concurrency 1 and 16: p50/p99
   latency and requests/s, with the server's CPU time per request; beside it the
   framework floor, a bare FastAPI ``POST /predict`` returning a constant, under the same
   uvicorn settings and with the same request bodies. Each uvicorn setting installed is
   run: ``h11`` + ``asyncio`` (plain ``uvicorn``) and ``httptools`` + ``uvloop``
   (``uvicorn[standard]``).

    python benchmarks/service.py            # about 2 minutes on 2 cores
    python benchmarks/service.py --quick    # a smoke run (nothing written)

Writes ``benchmarks/results/service.md`` (and ``.json``) with the machine, the load
average before and after each measurement, and the targets: p99 < 10 ms for one bars
prediction at concurrency 1, >= 500 requests/s at concurrency 16.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from service_http import cpu_seconds, free_port, load, request_bytes, start_server, stop_server

from market_nn_plus_ultra.config import load_config, save_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.features.compute import compute_features
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.service.guard import Guardrails, LiveBook
from market_nn_plus_ultra.service.predictor import Predictor
from market_nn_plus_ultra.service.schemas import PredictRequest
from market_nn_plus_ultra.training import train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_P99_MS, TARGET_RPS = 10.0, 500.0
#: Every path-dependent guardrail at once (the slow path of the guardrails).
FULL_GUARDRAILS = [
    "guardrails.max_gross=0.8",
    "guardrails.max_net=0.5",
    "guardrails.max_turnover=0.5",
    "guardrails.cvar_limit=0.05",
    "guardrails.drawdown_stop=0.2",
]


# --------------------------------------------------------------------------------------
# Set-up: a trained desktop run, the request bodies, the service config
# --------------------------------------------------------------------------------------


def _setup(tmp: Path) -> dict:
    db = write_fixture(tmp / "market.db", symbols=("AAA", "BBB"), rows=400, freq="1D")
    run_dir = tmp / "run"
    cfg = load_config(
        ROOT / "configs" / "default_desktop.yaml",
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"training.checkpoint_dir={run_dir}",
            "training.max_epochs=1",
            "training.limit_train_batches=4",
            "training.progress_bar=false",
            "training.accelerator=cpu",
            "features.threads=1",
        ],
    )
    train(cfg)
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    predictor = Predictor(agent, agent.config.data)
    short = write_fixture(
        tmp / "short.db", symbols=("AAA",), rows=predictor.min_bars, freq="1D", seed=3
    )
    data = agent.config.data.model_copy(update={"sqlite_path": short, "symbols": None})
    panel, _ = compute_features(data, agent.config.features)
    frame = panel[predictor.required_columns].reset_index()
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    bars = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
    service_cfg = load_config(
        None,
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"service.database={tmp / 'service.db'}",
            "service.torch_threads=1",
        ],
    )
    return {
        "db": db,
        "short_db": short,
        "run_dir": run_dir,
        "agent": agent,
        "predictor": predictor,
        "bars": bars,
        "bodies": {
            "bars": json.dumps({"bars": bars}).encode(),
            "symbols": json.dumps({"symbols": ["AAA"]}).encode(),
        },
        "service_config": save_config(service_cfg, tmp / "service.yaml"),
        "guardrails": service_cfg.guardrails,
    }


# --------------------------------------------------------------------------------------
# In process
# --------------------------------------------------------------------------------------


def _percentiles(seconds: list[float], cpu: list[float] | None = None) -> dict:
    ms = np.asarray(seconds) * 1e3
    out = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    if cpu is not None:  # CPU time of this thread: what preemption by other processes hides
        out["cpu_p50_ms"] = float(np.percentile(np.asarray(cpu) * 1e3, 50))
    return out


def _repeat(fn, n: int, warm: int = 10) -> tuple[dict, object]:
    for _ in range(warm):
        out = fn()
    times, cpu = [], []
    for _ in range(n):
        began, began_cpu = time.perf_counter(), time.thread_time()
        out = fn()
        times.append(time.perf_counter() - began)
        cpu.append(time.thread_time() - began_cpu)
    return _percentiles(times, cpu), out


def _per(stats: dict, n: int) -> dict:
    """Timings of a call that answers ``n`` requests, per request."""
    return {k: v / n for k, v in stats.items()}


def _full_guard(setup: dict, frame) -> Guardrails:
    """Every path-dependent rule, over a live book holding 252 served bars of the symbol."""
    cfg = load_config(None, FULL_GUARDRAILS).guardrails
    book = LiveBook(252)
    last = frame["timestamp"].iloc[0].value
    stamps = last - np.arange(252, 0, -1, dtype=np.int64) * 86_400 * 10**9
    rng = np.random.default_rng(0)
    book.record_positions(stamps, np.array(["AAA"] * 252, dtype=object), rng.uniform(-1, 1, 252))
    for t in stamps:
        book.record_return(int(t), "AAA", float(rng.normal(0, 0.01)))
    return Guardrails(cfg, book)


def in_process(setup: dict, n: int) -> dict:
    """Stage times of one bars-mode prediction and the floors, in this process."""
    agent, predictor = setup["agent"], setup["predictor"]
    request = PredictRequest.model_validate_json(setup["bodies"]["bars"])
    parse, _ = _repeat(lambda: PredictRequest.model_validate_json(setup["bodies"]["bars"]), n)
    bars = request.bars
    stages: dict[str, list[float]] = {"features": [], "model": [], "total": []}
    cpu = []
    for i in range(n + 10):  # the prediction runs on the predictor's batch thread
        began, began_cpu = time.perf_counter(), time.process_time()
        out = predictor.from_bars(bars)
        total = time.perf_counter() - began
        if i >= 10:
            for k, v in out.seconds.items():
                stages[k].append(v)
            stages["total"].append(total)
            cpu.append(time.process_time() - began_cpu)
    guard = Guardrails(setup["guardrails"], LiveBook(252))
    cap, _ = _repeat(lambda: guard.apply(out.frame), n)
    full_guard = _full_guard(setup, out.frame)
    full, _ = _repeat(lambda: full_guard.apply(out.frame), max(20, n // 5))
    symbols, _ = _repeat(lambda: predictor.from_database(["AAA"], None), max(20, n // 10), 3)
    reference, frame = _repeat(lambda: agent.predict(setup["short_db"]), max(20, n // 10), 3)
    dataset = agent.dataset(agent.tensors(setup["short_db"]))
    x = dataset.batch(np.array([len(dataset) - 1]))["x"]  # (1, W, F): the last window
    with torch.inference_mode():
        forward, _ = _repeat(lambda: agent.model(x, None), n)
        x16 = x.expand(16, -1, -1).contiguous()
        forward16, _ = _repeat(lambda: agent.model(x16, None), max(20, n // 10))
    # 16 concurrent one-symbol requests answered as one batch (what 16 callers get)
    batch16, _ = _repeat(lambda: predictor._from_bars_many([bars] * 16), max(20, n // 10), 3)
    expected = frame[frame["symbol"] == "AAA"].iloc[-1]
    return {
        "request_parse": parse,
        **{f"from_bars_{k}": _percentiles(v) for k, v in stages.items()},
        "from_bars_total": _percentiles(stages["total"], cpu),
        "guardrails_cap": cap,
        "guardrails_full": full,
        "from_database": symbols,
        "agent_predict": reference,
        "model_forward": forward,
        "model_forward_16": _per(forward16, 16),
        "batch_16": _per(batch16, 16),
        "parity_abs_diff": abs(float(out.frame["position"].iloc[0]) - expected["position"]),
        "n_bars": len(bars),
    }


# --------------------------------------------------------------------------------------
# Over HTTP
# --------------------------------------------------------------------------------------


def _settings() -> list[tuple[str, str]]:
    found = all(importlib.util.find_spec(m) for m in ("httptools", "uvloop"))
    return [("h11", "asyncio"), *([("httptools", "uvloop")] if found else [])]


def over_http(setup: dict, warmup: float, duration: float) -> list[dict]:
    env = {
        "PLUS_ULTRA_CONFIG": str(setup["service_config"]),
        "PLUS_ULTRA_CHECKPOINT": str(setup["run_dir"]),
        "OMP_NUM_THREADS": "1",
    }
    rows = []
    for http, loop in _settings():
        for kind in ("model", "floor"):
            port = free_port()
            proc = start_server(kind, port, http, loop, env)
            try:
                for mode, body in setup["bodies"].items():
                    payload = request_bytes("/predict", body, port)
                    for concurrency in (1, 16):
                        before, cpu0 = os.getloadavg()[0], cpu_seconds(proc.pid)
                        row = load(port, payload, concurrency, warmup, duration)
                        cpu = cpu_seconds(proc.pid) - cpu0
                        row.update(
                            server=kind,
                            http=http,
                            loop=loop,
                            mode=mode,
                            body_bytes=len(body),
                            load_before=before,
                            load_after=os.getloadavg()[0],
                            server_cpu_ms_per_request=1e3 * cpu / max(row["requests"], 1),
                        )
                        rows.append(row)
                        print(_http_line(row), flush=True)
            finally:
                stop_server(proc)
    return rows


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import fastapi
    import uvicorn

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch "
        f"{torch.__version__} (1 thread), FastAPI {fastapi.__version__}, uvicorn "
        f"{uvicorn.__version__}; {platform.system()} {platform.release()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )


def _stage_line(name: str, r: dict) -> str:
    cpu = f"{r['cpu_p50_ms']:.3f}" if "cpu_p50_ms" in r else ""
    return f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} |"


def _http_line(r: dict) -> str:
    return (
        f"| {r['server']} | {r['http']} + {r['loop']} | {r['mode']} | {r['concurrency']} | "
        f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_s']:,.0f} | "
        f"{r['server_cpu_ms_per_request']:.2f} | {r['load_before']:.1f} → "
        f"{r['load_after']:.1f} | {r['errors']} |"
    )


def report(result: dict) -> str:
    p = result["in_process"]
    stage_rows = [
        ("request body → `PredictRequest` (pydantic-core, one pass)", "request_parse"),
        ("`Predictor.from_bars`: features (bars → arrays → features)", "from_bars_features"),
        ("`Predictor.from_bars`: model (tensors, window, forward)", "from_bars_model"),
        ("`Predictor.from_bars` total", "from_bars_total"),
        ("16 one-symbol requests as one batch, per request", "batch_16"),
        ("guardrails, default (`max_position` cap)", "guardrails_cap"),
        ("guardrails, every path-dependent rule, 252-bar book", "guardrails_full"),
        ("`Predictor.from_database` (symbols mode, reads SQLite)", "from_database"),
        ("floor: `Agent.predict` on a database of the same bars", "agent_predict"),
        ("floor: the model's forward pass on the one window", "model_forward"),
        ("floor: the forward pass on 16 windows, per window", "model_forward_16"),
    ]
    lines = [
        "# Service benchmark (`benchmarks/service.py`)",
        "",
        f"Machine: {result['machine']}. Load average (1 min) at the start "
        f"{result['load_start']:.1f}, at the end {result['load_end']:.1f}.",
        "",
        f"Desktop preset model, one symbol, {p['n_bars']} bars a request (window + warm-up); "
        f"served position − `Agent.predict`: {p['parity_abs_diff']:.1e}.",
        "",
        "## In process (one prediction, ms)",
        "",
        "| stage | p50 | p99 | CPU p50 |",
        "|---|---:|---:|---:|",
        *[_stage_line(name, p[k]) for name, k in stage_rows],
        "",
        "## Over HTTP (loopback; load generator in its own process)",
        "",
        "| server | uvicorn | mode | concurrency | p50 ms | p99 ms | requests/s | "
        "server CPU ms/request | load avg | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
        *[_http_line(r) for r in result["http"]],
        "",
        "## Targets",
        "",
        *_targets(result["http"]),
    ]
    return "\n".join(lines) + "\n"


def _targets(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["server"] != "model" or r["mode"] != "bars":
            continue
        if r["concurrency"] == 1:
            ok = "met" if r["p99_ms"] < TARGET_P99_MS else "not met"
            lines.append(
                f"- {r['http']} + {r['loop']}, bars, concurrency 1: p99 {r['p99_ms']:.2f} ms "
                f"(target < {TARGET_P99_MS:g} ms: {ok})"
            )
        else:
            ok = "met" if r["requests_per_s"] >= TARGET_RPS else "not met"
            lines.append(
                f"- {r['http']} + {r['loop']}, bars, concurrency 16: "
                f"{r['requests_per_s']:,.0f} requests/s (target >= {TARGET_RPS:g}: {ok})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: short, unwritten")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per row")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--repeat", type=int, default=500, help="in-process repetitions")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "service.md")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.repeat = 0.5, 0.3, 30
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        setup = _setup(Path(tmp))
        result = {
            "machine": _machine(),
            "load_start": load_start,
            "in_process": in_process(setup, args.repeat),
            "http": over_http(setup, args.warmup, args.duration),
            "load_end": os.getloadavg()[0],
            "model": "configs/default_desktop.yaml, 1 epoch × 4 batches on a 400-bar fixture",
        }
    text = report(result)
    print(text)
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
