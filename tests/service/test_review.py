"""GET /review (recent predictions, breaches, trades, annotations) and POST /review/annotations,
through the app and in headless Chromium."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from market_nn_plus_ultra.data.annotations import read_annotations
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.store import update_database
from tests.service._service_cases import KEY, ready_app, service_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_HOSTILE = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def review(run_dir, tmp_path_factory):
    """An app on a market database with trades, after two /predict calls (capped positions)."""
    tmp = tmp_path_factory.mktemp("review")
    db = write_fixture(tmp / "market.db", symbols=("AAA", "BBB"), rows=300, freq="1D")
    trades = pd.DataFrame(
        {"trade_id": [1, 2], "timestamp": ["2020-03-02T15:00:00Z", "2020-03-03T15:00:00Z"],
         "symbol": ["AAA", "BBB"], "side": ["buy", "sell"], "quantity": [10.0, 5.0],
         "price": [101.5, 99.0], "fees": [0.1, 0.1], "strategy": [_HOSTILE, "model"]}
    )  # fmt: skip
    update_database(db, {"trades": trades})
    cfg = service_config(db, tmp, "guardrails.max_position=0.01", "guardrails.on_breach=cap")
    app = ready_app(cfg, run_dir)
    client = TestClient(app)
    ids = [client.post("/predict", json={"symbols": ["AAA", "BBB"]}).json()["request_id"]]
    ids.append(client.post("/predict", json={"symbols": ["AAA"]}).json()["request_id"])
    app.state.service.log.flush()
    yield client, app, ids, cfg
    client.close()


def _post(client, body, key=KEY):
    headers = {"X-API-Key": key} if key else {}
    return client.post("/review/annotations", json=body, headers=headers)


def test_adding_an_annotation_needs_the_key_and_a_valid_body(review):
    client, _, ids, cfg = review
    body = {"kind": "veto", "request_id": ids[0], "symbol": "AAA", "rationale": _HOSTILE}
    assert _post(client, body, key=None).status_code == 401
    assert _post(client, body, key="wrong").status_code == 403
    missing = _post(client, {"kind": "veto", "request_id": ids[0], "symbol": "AAA"})
    assert missing.status_code == 422 and "--rationale" in missing.json()["detail"]
    ambiguous = _post(client, {"kind": "note", "text": "x", "request_id": ids[0]})
    assert ambiguous.status_code == 422 and "pass --symbol" in ambiguous.json()["detail"]
    assert _post(client, {"kind": "flag", "text": "x"}).status_code == 422  # schema: kind
    saved = _post(client, body)
    assert saved.status_code == 201, saved.text
    out = saved.json()
    assert (out["kind"], out["symbol"], out["request_id"]) == ("veto", "AAA", ids[0])
    stored = read_annotations(cfg.service.database)
    assert stored["annotation_id"].tolist() == [out["annotation_id"]]
    assert stored["model_version"].iloc[0] == out["model_version"]


def test_the_page_lists_predictions_breaches_trades_and_annotations(review):
    client, _, ids, _ = review
    _post(client, {"kind": "anomaly", "request_id": ids[1], "text": "odd gap"})
    page = client.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count('<tr class="prediction') == 3  # 2 + 1 symbols served
    assert html.count("max_position:") == 3  # every position was capped at 0.01
    assert html.count('<tr class="trade">') == 2 and html.count('<tr class="annotation">') >= 1
    assert _HOSTILE not in html and "&lt;script&gt;" in html  # escaped, never run
    assert 'data-request-id="' + ids[1] + '"' in html and "odd gap" in html
    assert (
        "<script src" not in html and "http" not in html.split("<script>")[0].split("</style>")[0]
    )
    only = client.get("/review", params={"symbol": "BBB", "limit": 5}).text
    assert only.count('<tr class="prediction') == 1
    assert client.get("/review", params={"limit": 0}).status_code == 422


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it: make browser)"
)
def test_the_review_page_renders_in_headless_chromium(review):
    import uvicorn

    client, app, ids, _ = review
    _post(client, {"kind": "note", "request_id": ids[1], "text": "checked in a browser"})
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        run = subprocess.run(
            [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
             "--v=0", "--virtual-time-budget=3000", "--dump-dom",
             f"http://127.0.0.1:{port}/review"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert len(re.findall(r'<tr class="prediction[^"]*"', dom)) == 3
    assert dom.count('<tr class="trade">') == 2 and "checked in a browser" in dom
    assert 'id="annotate-form"' in dom and _HOSTILE not in dom
    errors = [m for m in re.findall(r":CONSOLE[^\]]*\]\s*(.*)", run.stderr)
              if re.search(r"error|uncaught", m, re.IGNORECASE)]  # fmt: skip
    assert errors == []


@pytest.mark.parametrize(("path", "method"), [("/review", "GET"), ("/review/annotations", "POST")])
def test_no_generated_input_is_a_server_error(review, path, method):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    _, app, _, _ = review
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True)  # fmt: skip
    def check(case):
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=[not_a_server_error])

    check()
