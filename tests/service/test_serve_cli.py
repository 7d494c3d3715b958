"""`plus-ultra serve` through the installed entry point: start, ready, predict, terminate."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service._service_cases import KEY_ENV

ENTRY = Path(sys.executable).parent / "plus-ultra"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run_dir: Path, port: int, db: Path, log: Path, *extra: str) -> list[str]:
    """``plus-ultra serve`` of ``run_dir`` on ``port``, reading ``db``, logging to ``log``."""
    command = [str(ENTRY), "serve", "--checkpoint", str(run_dir), "--port", str(port), *extra]
    return [*command, "--set", f"data.sqlite_path={db}", "--set", f"service.database={log}"]


@pytest.mark.slow  # a fresh interpreter imports torch and loads the model: 10-20 s
@pytest.mark.skipif(not ENTRY.exists(), reason="the plus-ultra entry point is not installed")
def test_serve_starts_predicts_and_stops(market_db, run_dir, tmp_path):
    port = _free_port()
    log = tmp_path / "service.db"
    command = _serve(run_dir, port, market_db, log, "--device", "cpu", "--api-key-env", KEY_ENV)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert ready is not None and ready.status_code == 200, proc.stdout and proc.stdout.read1()
        response = httpx.post(f"{url}/predict", json={"symbols": ["AAA", "BBB"]}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["symbol"] for p in body["predictions"]] == ["AAA", "BBB"]
        assert body["model_version"] == ready.json()["model_version"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert f"serving {run_dir} on http://127.0.0.1:{port}" in " ".join(output.split())
    assert (tmp_path / "service.config.yaml").is_file()  # the resolved config, beside the log
    with sqlite3.connect(log) as con:  # the request was logged before the process ended
        assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 2


@pytest.mark.slow  # a fresh interpreter imports torch: about 5 s
@pytest.mark.skipif(not ENTRY.exists(), reason="the plus-ultra entry point is not installed")
def test_a_stop_during_the_model_load_exits_cleanly(market_db, run_dir, tmp_path):
    """SIGTERM as soon as /health answers (the model still loading in the background):
    the process waits for the load and exits 0 — it used to abort (torch torn down under
    the loading thread)."""
    port = _free_port()
    command = _serve(run_dir, port, market_db, tmp_path / "service.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    assert "terminate called" not in output


def test_serve_refuses_a_missing_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from market_nn_plus_ultra.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--checkpoint", str(tmp_path / "nope")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "error: --checkpoint" in text and "does not exist" in text
