"""The HTTP side of ``benchmarks/service.py``: servers in their own processes and a lean
load generator in another.

- :func:`start_server` runs ``python benchmarks/service_http.py serve …`` — the model
  service (``market_nn_plus_ultra.service:create_app`` under uvicorn, one worker) or the
  *framework floor* (a bare FastAPI app whose ``POST /predict`` returns a constant, the
  same uvicorn settings) — and waits for ``GET /ready``.
- :func:`load` drives one server from a separate process (``service_http.py load``): ``concurrency``
  keep-alive connections, each sending pre-serialised HTTP/1.1 requests back to back
  (asyncio streams, uvloop when installed), for a fixed time after a warm-up. A
  response is read to its last byte (``Content-Length``) before the next request goes.
  Every loop is bounded in time and count and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

__all__ = ["cpu_seconds", "floor_app", "free_port", "load", "request_bytes", "start_server"]

HERE = Path(__file__).resolve()
HOST = "127.0.0.1"
MAX_REQUESTS = 200_000  # per load run: a hard bound beside the time limit


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


def floor_app():
    """The framework floor: FastAPI answering ``POST /predict`` with a constant, unread."""
    from fastapi import FastAPI

    app = FastAPI()
    constant = {"predictions": [{"symbol": "AAA", "position": 0.0}], "model_version": "floor"}

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/predict")
    def predict() -> dict:  # a sync route, dispatched to the thread pool as /predict is
        return constant

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(kind: str, port: int, http: str, loop: str, env: dict[str, str]):
    """A server process (``kind`` model | floor) answering on ``port``; waits until ready."""
    cmd = [sys.executable, str(HERE), "serve", kind, "--port", str(port)]
    cmd += ["--http", http, "--loop", loop]
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} server not ready on port {port} after 180 s")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(kind: str, port: int, http: str, loop: str) -> None:
    import uvicorn

    common = {"host": HOST, "port": port, "workers": 1, "http": http, "loop": loop}
    common.update(access_log=False, log_level="warning", log_config=None)
    if kind == "floor":
        uvicorn.run(floor_app(), **common)
    else:  # PLUS_ULTRA_CONFIG / PLUS_ULTRA_CHECKPOINT name the config and the run
        uvicorn.run("market_nn_plus_ultra.service:create_app", factory=True, **common)


# --------------------------------------------------------------------------------------
# Load generator
# --------------------------------------------------------------------------------------


def request_bytes(path: str, body: bytes, port: int) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port, payload, stop_at, warm_until, out) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while (now := time.perf_counter()) < stop_at and out["n"] < MAX_REQUESTS:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if now < warm_until:
                continue
            out["n"] += 1
            out["latency"].append(done - now)
            if head[9:12] != b"200":
                out["errors"] += 1
                out["error"] = out.get("error") or (head[:12] + b" " + body[:300]).decode()
    finally:
        writer.close()


async def _drive(port, payload, concurrency, warmup, duration) -> dict:
    out = {"n": 0, "errors": 0, "latency": []}
    began = time.perf_counter()
    warm_until, stop_at = began + warmup, began + warmup + duration
    await asyncio.gather(
        *(_connection(port, payload, stop_at, warm_until, out) for _ in range(concurrency))
    )
    out["elapsed"] = time.perf_counter() - warm_until
    return out


def _load_main(port: int, payload: Path, concurrency: int, warmup: float, duration: float):
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    cpu0 = time.process_time()
    out = run(_drive(port, payload.read_bytes(), concurrency, warmup, duration))
    out["client_cpu_s"] = time.process_time() - cpu0
    lat = np.asarray(out.pop("latency")) * 1e3
    out["p50_ms"] = float(np.percentile(lat, 50)) if len(lat) else float("nan")
    out["p99_ms"] = float(np.percentile(lat, 99)) if len(lat) else float("nan")
    out["mean_ms"] = float(lat.mean()) if len(lat) else float("nan")
    print(json.dumps(out))


def load(port: int, payload: bytes, concurrency: int, warmup: float, duration: float) -> dict:
    """Latency percentiles (ms), requests/s and errors of ``duration`` seconds of load
    after ``warmup`` seconds, from a separate process (``service_http.py load``)."""
    with tempfile.NamedTemporaryFile(suffix=".http") as f:
        f.write(payload)
        f.flush()
        cmd = [sys.executable, str(HERE), "load", "--port", str(port), "--payload", f.name]
        cmd += ["--concurrency", str(concurrency), "--warmup", str(warmup)]
        cmd += ["--duration", str(duration)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=True, timeout=warmup + duration + 120
        )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "concurrency": concurrency,
        "requests": int(out["n"]),
        "errors": int(out["errors"]),
        "first_error": out.get("error"),
        "seconds": round(out["elapsed"], 3),
        "requests_per_s": out["n"] / out["elapsed"] if out["elapsed"] > 0 else 0.0,
        "p50_ms": out["p50_ms"],
        "p99_ms": out["p99_ms"],
        "mean_ms": out["mean_ms"],
        "client_cpu_s": out["client_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark server (see the docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("kind", choices=["model", "floor"])
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--http", default="h11")
    serve.add_argument("--loop", default="asyncio")
    gen = sub.add_parser("load")
    gen.add_argument("--port", type=int, required=True)
    gen.add_argument("--payload", type=Path, required=True, help="the HTTP request's bytes")
    gen.add_argument("--concurrency", type=int, default=1)
    gen.add_argument("--warmup", type=float, default=1.0)
    gen.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if args.command == "serve":
        _serve(args.kind, args.port, args.http, args.loop)
    else:
        _load_main(args.port, args.payload, args.concurrency, args.warmup, args.duration)


if __name__ == "__main__":
    main()
