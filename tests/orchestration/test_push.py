"""push(): every file copied, marker last, never half a push; local, memory:// and S3 (moto)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

import fsspec
import pytest

from market_nn_plus_ultra.orchestration.push import PUSH_MARKER, PushError, push


def _run_folder(tmp_path: Path, name: str = "20240701T000000Z") -> Path:
    run = tmp_path / "runs" / name
    (run / "train" / "checkpoints").mkdir(parents=True)
    (run / "manifest.json").write_text('{"stages": []}\n')
    (run / "train" / "checkpoints" / "best.ckpt").write_bytes(os.urandom(50_000))
    (run / "train" / "config.yaml").write_text("seed: 7\n")
    (run / "report.md").write_text("# report\n")
    # leftovers of the crash-safe writer: a dead writer's temporary and a lock sidecar
    (run / ".report.md.999999-0123abcd.tmp").write_text("half")
    (run / ".catalogue.parquet.lock").write_bytes(b"")
    return run


EXPECTED = ["manifest.json", "report.md", "train/checkpoints/best.ckpt", "train/config.yaml"]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_manifest(manifest: dict, run: Path) -> None:
    assert [f["path"] for f in manifest["files"]] == EXPECTED
    for item in manifest["files"]:
        data = (run / item["path"]).read_bytes()
        assert item["bytes"] == len(data) and item["sha256"] == _digest(data)
    assert {s["path"]: s["reason"] for s in manifest["skipped"]} == {
        ".catalogue.parquet.lock": "lock sidecar of the crash-safe writer",
        ".report.md.999999-0123abcd.tmp": "temporary file of an unfinished write",
    }
    assert manifest["run"] == run.name


def test_local_push_copies_every_file_and_writes_the_marker(tmp_path, caplog):
    run = _run_folder(tmp_path)
    caplog.set_level(logging.WARNING)
    dest = tmp_path / "store"
    pushed = push(run, str(dest))
    target = dest / run.name
    assert pushed == [str(target / rel) for rel in EXPECTED] + [str(target / PUSH_MARKER)]
    for rel in EXPECTED:
        assert (target / rel).read_bytes() == (run / rel).read_bytes()
    _check_manifest(json.loads((target / PUSH_MARKER).read_text()), run)
    assert "skipping" in caplog.text and ".report.md.999999-0123abcd.tmp" in caplog.text
    assert sorted(p.name for p in dest.iterdir()) == [run.name]  # no staging left behind


def test_local_repush_replaces_the_old_copy_and_file_urls_work(tmp_path):
    run = _run_folder(tmp_path)
    dest = tmp_path / "store"
    push(run, str(dest))
    (dest / run.name / "stale.txt").write_text("from an older push")
    (run / "report.md").write_text("# report v2\n")
    push(run, f"file://{dest}")
    assert not (dest / run.name / "stale.txt").exists()
    assert (dest / run.name / "report.md").read_text() == "# report v2\n"


def test_memory_push_uses_a_temporary_prefix_then_the_marker(tmp_path):
    run = _run_folder(tmp_path)
    fs = fsspec.filesystem("memory")
    fs.rm("/bucket", recursive=True) if fs.exists("/bucket") else None
    pushed = push(run, "memory://bucket/runs")
    assert pushed == [f"memory:///bucket/runs/{run.name}/{rel}" for rel in [*EXPECTED, PUSH_MARKER]]
    assert sorted(fs.find("/bucket")) == sorted(
        f"/bucket/runs/{run.name}/{rel}" for rel in [*EXPECTED, PUSH_MARKER]
    )
    for rel in EXPECTED:
        assert fs.cat(f"/bucket/runs/{run.name}/{rel}") == (run / rel).read_bytes()
    _check_manifest(json.loads(fs.cat(f"/bucket/runs/{run.name}/{PUSH_MARKER}")), run)
    fs.rm("/bucket", recursive=True)


def test_a_failed_upload_leaves_no_marker_and_no_staging(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    fs = fsspec.filesystem("memory")
    push(run, "memory://fail/runs")  # a complete earlier push
    original = type(fs).put_file
    calls = {"n": 0}

    def flaky(self, lpath, rpath, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("connection reset by peer")
        return original(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(type(fs), "put_file", flaky)
    (run / "report.md").write_text("# report v2\n")
    with pytest.raises(PushError, match=r"push to 'memory://fail/runs' failed .*connection reset"):
        push(run, "memory://fail/runs")
    # the earlier complete push is untouched; nothing half-written is visible
    assert fs.cat(f"/fail/runs/{run.name}/report.md") == b"# report\n"
    assert fs.exists(f"/fail/runs/{run.name}/{PUSH_MARKER}")
    assert [p for p in fs.find("/fail") if ".tmp" in p] == []
    fs.rm("/fail", recursive=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchscheme://bucket/x", "unknown storage scheme 'nosuchscheme'"),
        ("", "the URL is empty"),
    ],
)
def test_bad_urls_name_the_url_and_the_fix(tmp_path, url, message):
    with pytest.raises(PushError, match=message):
        push(_run_folder(tmp_path), url)


def test_missing_s3fs_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now raises ImportError
    from fsspec.registry import _registry

    monkeypatch.delitem(_registry, "s3", raising=False)
    with pytest.raises(PushError, match=r"'s3://bucket/runs'.*pip install s3fs"):
        push(_run_folder(tmp_path), "s3://bucket/runs")


def test_bad_run_folders(tmp_path):
    with pytest.raises(PushError, match="does not exist"):
        push(tmp_path / "missing", "memory://x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PushError, match="has no files to push"):
        push(tmp_path / "empty", "memory://x")
    run = _run_folder(tmp_path)
    (run / PUSH_MARKER).write_text("mine")
    with pytest.raises(PushError, match="completion marker"):
        push(run, "memory://x")
    (run / PUSH_MARKER).unlink()
    with pytest.raises(PushError, match="inside the run folder"):
        push(run, str(run))


# --------------------------------------------------------------------------------------
# S3 through moto's server on 127.0.0.1
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch, s3_endpoint):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    if not fs.exists("plus-ultra-runs"):
        fs.mkdir("plus-ultra-runs")
    return fs, options


def test_s3_push_through_moto(tmp_path, s3_env):
    fs, options = s3_env
    run = _run_folder(tmp_path)
    pushed = push(run, "s3://plus-ultra-runs/retrain", storage_options=options)
    prefix = f"plus-ultra-runs/retrain/{run.name}"
    assert pushed == [f"s3://{prefix}/{rel}" for rel in [*EXPECTED, PUSH_MARKER]]
    fs.invalidate_cache()
    assert sorted(fs.find("plus-ultra-runs/retrain")) == sorted(
        f"{prefix}/{rel}" for rel in [*EXPECTED, PUSH_MARKER]
    )  # the temporary prefix is gone
    for rel in EXPECTED:
        assert fs.cat(f"{prefix}/{rel}") == (run / rel).read_bytes()
    _check_manifest(json.loads(fs.cat(f"{prefix}/{PUSH_MARKER}")), run)
    # a second push of the run replaces it (old marker removed first, new one last)
    (run / "report.md").write_text("# report v2\n")
    push(run, "s3://plus-ultra-runs/retrain", storage_options=options)
    fs.invalidate_cache()
    assert fs.cat(f"{prefix}/report.md") == b"# report v2\n"
    marker = json.loads(fs.cat(f"{prefix}/{PUSH_MARKER}"))
    assert {f["path"]: f["sha256"] for f in marker["files"]}["report.md"] == _digest(
        b"# report v2\n"
    )


def test_s3_endpoint_from_the_environment(tmp_path, s3_env, s3_endpoint, monkeypatch):
    fs, _ = s3_env
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # botocore reads it; no options
    run = _run_folder(tmp_path, "envrun")
    push(run, "s3://plus-ultra-runs/env", storage_options={"skip_instance_cache": True})
    fs.invalidate_cache()
    assert fs.exists(f"plus-ultra-runs/env/envrun/{PUSH_MARKER}")


def test_s3_missing_bucket_and_credentials_are_clear_errors(tmp_path, s3_env, monkeypatch):
    fs, options = s3_env
    run = _run_folder(tmp_path)
    with pytest.raises(PushError, match=r"s3://no-such-bucket/x.*create it first"):
        push(run, "s3://no-such-bucket/x", storage_options=options)
    fs.invalidate_cache()
    assert not fs.exists("no-such-bucket")  # a push never creates a bucket
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(PushError, match=r"s3://plus-ultra-runs/nocreds.*AWS_ACCESS_KEY_ID"):
        push(run, "s3://plus-ultra-runs/nocreds", storage_options=options)


def test_config_refuses_credentials_in_push_storage_options():
    from market_nn_plus_ultra.config import ConfigError, load_config

    ok = load_config(
        None, ["orchestration.push_storage_options={client_kwargs: {endpoint_url: 'http://x'}}"]
    )
    assert ok.orchestration.push_storage_options == {"client_kwargs": {"endpoint_url": "http://x"}}
    with pytest.raises(ConfigError, match=r"orchestration\.push_storage_options.*\['secret'\]"):
        load_config(None, ["orchestration.push_storage_options={secret: abc}"])
    with pytest.raises(ConfigError, match=r"client_kwargs\.aws_secret_access_key.*environment"):
        load_config(
            None, ["orchestration.push_storage_options={client_kwargs: {aws_secret_access_key: s}}"]
        )
