"""POST /reload: atomic swaps, refused checkpoints keep the old model, reloads under load."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from market_nn_plus_ultra.inference import Agent
from tests.service._service_cases import (
    KEY,
    bars_from_db,
    metric,
    ready_app,
    service_config,
)

AUTH = {"X-API-Key": KEY}


def _seq(version: str) -> int:
    return int(version.split("-")[0])


@pytest.fixture(scope="module")
def client(market_db, run_dir, tmp_path_factory):
    cfg = service_config(market_db, tmp_path_factory.mktemp("reload"))
    with TestClient(ready_app(cfg, run_dir)) as c:
        yield c


def _copy(run_dir, tmp, edit=None):
    """A copy of the run folder, its model_info.json edited by ``edit(info)``."""
    copy = shutil.copytree(run_dir, tmp / "copy", ignore=shutil.ignore_patterns("logs"))
    if edit is not None:
        path = copy / "model_info.json"
        info = json.loads(path.read_text())
        edit(info)
        path.write_text(json.dumps(info))
    return copy


def _corrupt(run_dir, tmp):
    copy = _copy(run_dir, tmp)
    for name in ("best.ckpt", "last.ckpt"):
        (copy / name).write_bytes(b"PK\x03\x04 not a checkpoint" * 10)
    return copy


def test_reload_swaps_in_a_new_version(client, run_dir):
    before = client.get("/health").json()["model_version"]
    response = client.post("/reload", json={"checkpoint": str(run_dir / "last.ckpt")}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["previous_version"] == before and _seq(body["model_version"]) == _seq(before) + 1
    assert body["checkpoint"].endswith("last.ckpt") and body["seconds"] > 0
    assert client.get("/health").json()["model_version"] == body["model_version"]
    served = client.post("/predict", json={"symbols": ["AAA"]}).json()
    assert served["model_version"] == body["model_version"]
    assert metric(client, 'plus_ultra_reloads_total{outcome="loaded"}') >= 2
    # no body: the configured checkpoint again
    again = client.post("/reload", headers=AUTH).json()
    assert (
        again["checkpoint"].endswith("best.ckpt")
        and _seq(again["model_version"]) == _seq(before) + 2
    )


def test_a_corrupt_checkpoint_is_refused_and_the_old_model_serves(client, run_dir, tmp_path):
    before = client.get("/health").json()["model_version"]
    response = client.post(
        "/reload", json={"checkpoint": str(_corrupt(run_dir, tmp_path))}, headers=AUTH
    )
    assert response.status_code == 422
    assert "cannot be served" in response.json()["detail"]
    assert "not a readable checkpoint" in response.json()["detail"]
    assert client.get("/health").json()["model_version"] == before
    assert client.post("/predict", json={"symbols": ["AAA"]}).status_code == 200
    assert metric(client, 'plus_ultra_reloads_total{outcome="refused"}') >= 1
    nowhere = client.post("/reload", json={"checkpoint": str(tmp_path / "nope")}, headers=AUTH)
    assert nowhere.status_code == 422 and "does not exist" in nowhere.json()["detail"]
    odd = client.post("/reload", json={"checkpoint": str(run_dir / "config.yaml")}, headers=AUTH)
    assert odd.status_code == 422 and "a .ckpt / .pt file" in odd.json()["detail"]


def _window(info):
    info["window"] = 16


def _order(info):
    columns = info["feature_columns"]
    columns[0], columns[1] = columns[1], columns[0]


def _symbols(info):
    info["symbols"] = ["AAA", "CCC"]


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_window, "window 8 → 16"),
        (_order, "feature columns differ (the new model are in another order)"),
        (_symbols, "symbols ['AAA', 'BBB'] → ['AAA', 'CCC']"),
    ],
)
def test_an_incompatible_checkpoint_is_refused_naming_the_mismatch(
    client, run_dir, tmp_path, edit, named
):
    before = client.get("/health").json()["model_version"]
    response = client.post(
        "/reload", json={"checkpoint": str(_copy(run_dir, tmp_path, edit))}, headers=AUTH
    )
    assert response.status_code == 409
    assert named in response.json()["detail"]
    assert client.get("/health").json()["model_version"] == before


@pytest.mark.slow
def test_reloads_under_load_fail_no_request(market_db, run_dir, tmp_path):
    """Six clients predict for ~20 s while five reloads run, one of a corrupt checkpoint."""
    app = ready_app(service_config(market_db, tmp_path), run_dir)
    bars = bars_from_db(Agent.from_checkpoint(run_dir, device="cpu"), market_db, tail=72)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    stop = threading.Event()
    seen: dict[int, list[tuple[int, str | None]]] = {}

    def load(worker: int) -> None:
        body = {"bars": bars} if worker % 2 else {"symbols": ["AAA", "BBB"]}
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json=body)
                seen.setdefault(worker, []).append((r.status_code, r.json().get("model_version")))

    workers = [threading.Thread(target=load, args=(k,)) for k in range(6)]
    for w in workers:
        w.start()
    corrupt = _corrupt(run_dir, tmp_path)
    reloads = []
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as c:
        for k in range(5):
            time.sleep(3)
            target = corrupt if k == 2 else run_dir
            reloads.append(c.post("/reload", json={"checkpoint": str(target)}).status_code)
    time.sleep(3)
    stop.set()
    for w in workers:
        w.join()
    server.should_exit = True
    thread.join(30)
    assert reloads == [200, 200, 422, 200, 200]
    statuses = [s for rows in seen.values() for s, _ in rows]
    print(f"{len(statuses)} requests, {len(workers)} clients, reloads {reloads}")
    assert len(statuses) > 100 and set(statuses) == {200}  # zero failed requests
    for rows in seen.values():  # each client only ever sees versions move forward
        versions = [_seq(v) for _, v in rows]
        assert versions == sorted(versions)
    assert max(_seq(v) for rows in seen.values() for _, v in rows) == 5
