"""The container's entrypoint and healthcheck, run for real on this machine: dispatch to a
stub `plus-ultra`, the real CLI's parsing of what it passes, and `serve` end to end."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.docker._container import ENTRYPOINT, EXPECTED_COMMANDS, HEALTHCHECK

BIN = Path(sys.executable).parent
STUB = '#!/bin/sh\nprintf "%s\\n" "$$" "$@" > "$STUB_OUT"\n'


def _spec_healthcheck():
    spec = importlib.util.spec_from_file_location("plus_ultra_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _spec_healthcheck()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stub(tmp_path):
    """A `plus-ultra` that records its PID and arguments, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "plus-ultra").write_text(STUB)
    (bin_dir / "plus-ultra").chmod(0o755)
    (tmp_path / "runs").mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STUB_OUT": str(tmp_path / "argv.txt"),
        "PLUS_ULTRA_HEALTH_FILE": str(tmp_path / "serve.port"),
        "PLUS_ULTRA_RUNS_DIR": str(tmp_path / "runs"),
    }
    return tmp_path, env


def _run(stub, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the entrypoint; return the process and the stub's [pid, *argv] (or [])."""
    tmp, base = stub
    (tmp / "argv.txt").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [str(ENTRYPOINT), *args],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    recorded = tmp / "argv.txt"
    lines = recorded.read_text().splitlines() if recorded.exists() else []
    if lines:  # exec: the CLI runs as the entrypoint's own process (signals reach it)
        assert lines[0] == str(proc.pid)
    return done, lines[1:]


@pytest.mark.parametrize("command", [c for c in EXPECTED_COMMANDS if c != "serve"])
def test_batch_commands_exec_plus_ultra_with_the_arguments(stub, command):
    done, argv = _run(stub, command, "--config", "configs/default.yaml", "--set", "a=b c")
    assert done.returncode == 0, done.stderr
    assert argv == [command, "--config", "configs/default.yaml", "--set", "a=b c"]
    assert (stub[0] / "runs" / "automation_runs").is_dir()
    assert not (stub[0] / "serve.port").exists()


def test_serve_binds_all_interfaces_on_port_inside_the_container(stub):
    done, argv = _run(stub, "serve", "--checkpoint", "/runs/train")
    assert done.returncode == 0, done.stderr
    assert argv == ["serve", "--host", "0.0.0.0", "--port", "8000", "--checkpoint", "/runs/train"]
    assert (stub[0] / "serve.port").read_text() == "8000\n"

    done, argv = _run(stub, "serve", "--checkpoint", "/runs/train", PORT="9100")
    assert argv[:5] == ["serve", "--host", "0.0.0.0", "--port", "9100"]
    assert (stub[0] / "serve.port").read_text() == "9100\n"


@pytest.mark.parametrize(
    ("args", "expected_port"),
    [
        (["--host", "127.0.0.1", "--port", "9200"], "9200"),
        (["--host=127.0.0.1", "--port=9300"], "9300"),
    ],
)
def test_serve_keeps_an_explicit_host_and_port(stub, args, expected_port):
    done, argv = _run(stub, "serve", *args, PORT="9999")
    assert done.returncode == 0, done.stderr
    assert argv == ["serve", *args]
    assert (stub[0] / "serve.port").read_text() == f"{expected_port}\n"


def test_a_bad_port_is_refused_before_the_cli(stub):
    done, argv = _run(stub, "serve", PORT="eighty")
    assert done.returncode == 2 and argv == []
    assert "port 'eighty' is not a number" in done.stderr and "PORT" in done.stderr


def test_unknown_command_exits_2_and_lists_the_commands(stub):
    done, argv = _run(stub, "trian")
    assert done.returncode == 2 and argv == []
    assert "unknown command 'trian'" in done.stderr
    for command in EXPECTED_COMMANDS:
        assert command in done.stderr
    done, argv = _run(stub)
    assert done.returncode == 2 and argv == [] and "Usage:" in done.stderr


def test_help_lists_every_command(stub):
    done, argv = _run(stub, "--help")
    assert done.returncode == 0 and argv == []
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert set(EXPECTED_COMMANDS) | {"plus-ultra", "shell"} <= listed


def test_passthrough_log_settings_and_shell(stub):
    done, argv = _run(stub, "plus-ultra", "data", "validate", "/data/market.db")
    assert argv == ["data", "validate", "/data/market.db"]
    done, argv = _run(
        stub,
        "train",
        "--max-epochs",
        "1",
        PLUS_ULTRA_LOG_LEVEL="DEBUG",
        PLUS_ULTRA_LOG_FORMAT="json",
    )
    assert argv == ["--log-level=DEBUG", "--log-format=json", "train", "--max-epochs", "1"]
    done, argv = _run(stub, "shell", "-c", "echo from-sh")
    assert done.returncode == 0 and done.stdout == "from-sh\n" and argv == []


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(
    os.geteuid() == 0 and SETPRIV is None, reason="root writes anywhere; no setpriv to drop it"
)
def test_an_unwritable_runs_volume_is_named_with_the_fix():
    """As the image's user meets a root-owned host folder (here: nobody, when run as root)."""
    top = Path(tempfile.mkdtemp(prefix="plus-ultra-entry-"))
    try:
        top.chmod(0o777)  # the stub's output file; /runs itself stays read-only
        (top / "plus-ultra").write_text(STUB)
        (top / "plus-ultra").chmod(0o755)
        runs = top / "runs"
        runs.mkdir(mode=0o555)
        runs.chmod(0o555)
        drop = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups"]
        prefix = drop if os.geteuid() == 0 and SETPRIV else []
        env = {
            "PATH": f"{top}{os.pathsep}/usr/bin:/bin",
            "STUB_OUT": str(top / "argv.txt"),
            "PLUS_ULTRA_RUNS_DIR": str(runs),
            "PLUS_ULTRA_HEALTH_FILE": str(top / "serve.port"),
        }
        done = subprocess.run(
            [*prefix, str(ENTRYPOINT), "predict", "--checkpoint", "x"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        argv = (top / "argv.txt").read_text().splitlines()[1:]
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert argv == ["predict", "--checkpoint", "x"]  # a warning, not a refusal
    assert f"{runs} is not writable" in done.stderr and "chown the host folder" in done.stderr


@pytest.mark.skipif(not (BIN / "plus-ultra").exists(), reason="plus-ultra is not installed")
@pytest.mark.parametrize("command", EXPECTED_COMMANDS)
def test_the_real_cli_parses_what_the_entrypoint_passes(tmp_path, command):
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PLUS_ULTRA_HEALTH_FILE": str(tmp_path / "serve.port"),
        "PLUS_ULTRA_RUNS_DIR": str(tmp_path),
        "PLUS_ULTRA_LOG_FORMAT": "json",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [str(ENTRYPOINT), command, "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"plus-ultra {command}" in " ".join(done.stdout.split())


# --- the healthcheck -------------------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_healthcheck_reads_the_served_port(tmp_path, health_server):
    port_file = tmp_path / "serve.port"
    port_file.write_text(f"{health_server}\n")
    assert healthcheck.check("/health", port_file, 2.0) == (
        True,
        f"http://127.0.0.1:{health_server}/health answered 200",
    )
    healthy, reason = healthcheck.check("/ready", port_file, 2.0)
    assert not healthy and reason.endswith("answered 503")


def test_healthcheck_without_a_server(tmp_path):
    absent = tmp_path / "none.port"
    healthy, reason = healthcheck.check("/health", absent, 1.0)
    assert healthy and "nothing to check" in reason
    closed = tmp_path / "closed.port"
    closed.write_text(f"{_free_port()}\n")
    healthy, reason = healthcheck.check("/health", closed, 1.0)
    assert not healthy and "unreachable" in reason
    for text, why in (("eighty", "not a port number"), ("70000", "outside 1-65535")):
        closed.write_text(text)
        healthy, reason = healthcheck.check("/health", closed, 1.0)
        assert not healthy and why in reason
    assert healthcheck.check("health", absent, 1.0)[0] is False


def _container_layout(tmp: Path) -> tuple[Path, dict[str, str]]:
    """The image's /app on this machine: data/ and outputs/ link into the two volumes."""
    data, runs, app = tmp / "data", tmp / "runs", tmp / "app"
    for folder in (data, runs, app):
        folder.mkdir()
    (app / "data").symlink_to(data)
    (app / "outputs").symlink_to(runs)
    (app / "automation_runs").symlink_to(runs / "automation_runs")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PLUS_ULTRA_HEALTH_FILE": str(tmp / "serve.port"),
        "PLUS_ULTRA_RUNS_DIR": str(runs),
        "OMP_NUM_THREADS": "1",
    }
    return app, env


def _entry(app: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(ENTRYPOINT), *args], cwd=app, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # three fresh interpreters import torch; a tiny model trains: about 25 s
@pytest.mark.skipif(not (BIN / "plus-ultra").exists(), reason="plus-ultra is not installed")
def test_the_container_flow_fixture_train_serve_healthy_stop(tmp_path):
    """The config's default paths land in the volumes; serve passes the healthcheck and
    stops cleanly on SIGTERM."""
    from tests.training._train_cases import TINY

    app, env = _container_layout(tmp_path)
    fixture = ["data", "fixture", "data/market.db", "--symbols", "AAA", "BBB", "--rows", "300"]
    _entry(app, env, "plus-ultra", *fixture, "--freq", "1D")
    _entry(app, env, "train", *(f"--set={o}" for o in TINY))
    assert (tmp_path / "data" / "market.db").is_file()
    assert (tmp_path / "data" / ".plus_ultra_cache").is_dir()  # the read cache, beside the db
    assert (tmp_path / "runs" / "train" / "config.yaml").is_file()
    assert (tmp_path / "runs" / "automation_runs").is_dir()

    port, port_file = _free_port(), tmp_path / "serve.port"
    env["PORT"] = str(port)
    check = [sys.executable, str(HEALTHCHECK), "/health"]
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
    command = [str(ENTRYPOINT), "serve", "--host", "127.0.0.1", "--checkpoint", "outputs/train"]
    proc = subprocess.Popen(
        [*command, "--device", "cpu"],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, result = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
            if result.returncode == 0 and "answered 200" in result.stdout:
                break  # (before serve writes the port file the check passes vacuously)
            time.sleep(0.5)
        assert result is not None and result.returncode == 0, result and result.stderr
        assert f"127.0.0.1:{port}/health answered 200" in result.stdout
        assert port_file.read_text() == f"{port}\n"
    finally:
        proc.send_signal(signal.SIGTERM)  # what tini forwards on `docker stop`
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert f"on http://127.0.0.1:{port}" in " ".join(output.split())
    assert (tmp_path / "runs" / "service" / "service.db").is_file()  # outputs/service/...
