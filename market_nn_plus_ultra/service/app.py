"""The app factory: ``create_app(config, checkpoint)`` → a FastAPI app serving one model.

    app = create_app(load_config("configs/default.yaml"), "outputs/run")
    # or: PLUS_ULTRA_CONFIG=cfg.yaml uvicorn --factory market_nn_plus_ultra.service:create_app

The app answers ``/health`` at once and loads the model in the background; ``/ready``
turns 200 when it is loaded and warmed. Every response carries an ``X-Request-ID``
(the caller's, when it sends a valid one). Errors are JSON ``{"detail": ...}``: a bad
input is a 4xx whose message names the field and the fix.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import __version__
from ..config import Config, ConfigError, load_config
from ..evaluation.guardrails import sectors_from_assets
from .auth import ApiKey
from .drift import DriftMonitor, drift_reference_for
from .errors import ServiceError
from .guard import Guardrails, LiveBook
from .holder import ModelHolder, Served
from .limits import BodyLimit
from .log import PredictionLog
from .metrics import ServiceMetrics
from .outcomes import LiveTracker
from .schemas import PredictRequest

__all__ = ["ServiceState", "create_app"]

log = logging.getLogger("market_nn_plus_ultra.service")

CONFIG_ENV = "PLUS_ULTRA_CONFIG"
CHECKPOINT_ENV = "PLUS_ULTRA_CHECKPOINT"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHUTDOWN_WAIT = 120.0  # seconds a stop waits for a model load in progress


@dataclass
class ServiceState:
    """Everything the routes share (``app.state.service``)."""

    config: Config
    checkpoint: Path
    metrics: ServiceMetrics
    holder: ModelHolder
    auth: ApiKey
    log: PredictionLog
    guard: Guardrails
    live: LiveTracker
    drift: DriftMonitor
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)  # config edits (curriculum)

    def on_load(self, served: Served) -> None:
        """Point metrics, live statistics and drift at a newly swapped-in model."""
        info = served.agent.model_info
        self.metrics.set_model(
            served.version,
            str(served.checkpoint),
            str(info.get("architecture", served.agent.config.model.architecture)),
            str(info.get("head", served.agent.config.model.head)),
            served.loaded_at,
            _data_end(info, served.checkpoint),
        )
        self.metrics.reloads.labels("loaded").inc()
        self.live.set_expectation(served.version, served.expectation.of_model(served.agent.config))
        self.drift.set_reference(*drift_reference_for(served, self.config.service))
        self.refresh_metrics()
        _settle_heap()
        log.info(
            "model %s in service from %s (%.2f s)",
            served.version,
            served.checkpoint,
            served.load_seconds,
            extra={"fields": {"event": "model_loaded", "version": served.version}},
        )

    def refresh_metrics(self) -> None:
        """Recompute the gauges read from state: live statistics and feature drift."""
        served = self.holder.current
        self.metrics.publish_live(self.live.stats(served.version if served else None))
        self.metrics.publish_drift(self.drift.report())


def _settle_heap() -> None:
    """Move every object alive now (the libraries, the model) out of the garbage
    collector's sight. The heap holds about half a million long-lived objects; under load
    the requests' short-lived ones would otherwise trigger full collections that walk all
    of them (about 100 ms each, a third of the CPU at 16 concurrent requests). Run after
    each load: the previous model's cycles are collected first (one full collection per
    reload, off the request path but holding the interpreter for a moment)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _data_end(info: dict[str, Any], checkpoint: Path) -> float | None:
    """Unix time of the newest training bar (``model_info.json``'s ``data_end``), else of
    the checkpoint file (a run from before ``data_end`` was recorded)."""
    stamp = info.get("data_end")
    if stamp:
        try:
            return pd.Timestamp(stamp).timestamp()
        except (TypeError, ValueError):
            log.warning(
                "%s: model_info.json data_end=%r is not a timestamp; model staleness is "
                "measured from the checkpoint file's time instead",
                checkpoint,
                stamp,
            )
    try:
        return checkpoint.stat().st_mtime
    except OSError:
        return None


def _restore_live(state: ServiceState) -> None:
    """Rebuild the live statistics and the guardrails' book from the prediction log, so
    a restart neither forgets the drift nor resets a drawdown stop."""
    for row in state.log.outcome_rows():
        state.live.add(row[0], row[2], row[3], row[4], row[1])
    svc = state.config.service
    book = state.guard.book
    for stamp, symbol, position, realised in state.log.served_rows(
        svc.guardrail_history * svc.max_symbols
    ):
        ns = pd.Timestamp(stamp).value
        book.record_positions(
            np.array([ns]), np.array([symbol], dtype=object), np.array([position])
        )
        if realised is not None:
            book.record_return(ns, symbol, realised)


def _resolve(
    config: Config | str | Path | None, checkpoint: str | Path | None
) -> tuple[Config, Path]:
    if config is None:
        config = os.environ.get(CONFIG_ENV)
    if not isinstance(config, Config):
        config = load_config(config)
    checkpoint = checkpoint or config.service.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        raise ConfigError(
            "no checkpoint to serve: pass create_app(config, checkpoint), --checkpoint RUN_DIR, "
            f"set service.checkpoint, or the environment variable {CHECKPOINT_ENV}"
        )
    return config, Path(checkpoint)


def create_app(
    config: Config | str | Path | None = None, checkpoint: str | Path | None = None
) -> FastAPI:
    """A FastAPI app serving ``checkpoint`` (a run folder or a .ckpt in it) under ``config``.

    ``config``: the service's config (database, guardrails, ``service`` section) or a YAML
    path; None reads the path from ``$PLUS_ULTRA_CONFIG`` (defaults when unset).
    ``checkpoint``: None = ``service.checkpoint``, else ``$PLUS_ULTRA_CHECKPOINT``.
    The model, features and windows always come from the run's own config. Raises
    :class:`~market_nn_plus_ultra.config.ConfigError` or :class:`ServiceError` for a
    setting that cannot work (no checkpoint, an unwritable or shared service database).
    """
    from .review import router as review_router
    from .routes import router
    from .routes_predict import router as predict_router

    cfg, ckpt = _resolve(config, checkpoint)
    svc = cfg.service
    sectors = None
    if cfg.guardrails.max_sector_gross is not None or cfg.guardrails.sector_caps:
        sectors = sectors_from_assets(cfg.data.sqlite_path)
    state = ServiceState(
        config=cfg,
        checkpoint=ckpt,
        metrics=ServiceMetrics(),
        holder=ModelHolder(cfg.data, svc.device, svc.max_batch),
        auth=ApiKey(svc.api_key_env),
        log=PredictionLog(svc.database, market_db=cfg.data.sqlite_path),
        guard=Guardrails(cfg.guardrails, LiveBook(svc.guardrail_history), sectors),
        live=LiveTracker(svc.calibration_window),
        drift=DriftMonitor(svc),
    )
    _restore_live(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(svc.torch_threads)  # requests run in parallel threads
        if state.holder.current is None:  # a model loaded before start-up keeps serving
            state.holder.start(ckpt, state.on_load)
        yield
        if state.holder.loading:
            log.info("stopping: waiting for the model load in progress to finish")
            await asyncio.to_thread(state.holder.wait, _SHUTDOWN_WAIT)
        state.log.close()

    app = FastAPI(
        title="Market NN Plus Ultra",
        version=__version__,
        description="Predictions of a trained run behind guardrails, with metrics.",
        lifespan=lifespan,
    )
    app.state.service = state
    app.include_router(router)
    app.include_router(predict_router)
    app.include_router(review_router)
    _register_schemas(app, (PredictRequest,))
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, limit=svc.max_body_bytes)
    app.add_middleware(RequestContext, metrics=state.metrics)
    if not state.auth.configured:
        log.warning(
            "no API key in $%s: /reload, /outcomes and PUT /curriculum refuse every call",
            svc.api_key_env,
        )
    return app


def _register_schemas(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Add ``models`` (bodies a route reads itself) to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in found.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components.setdefault(model.__name__, found)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _service_error(request: Request, err: ServiceError) -> JSONResponse:
    body = {"detail": err.detail, "request_id": _request_id(request), **err.extra}
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(body, status_code=err.status, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    """``("body", "bars", 3, "close")`` → ``bars[3].close``."""
    text = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "field": _where(tuple(e.get("loc", ()))),
            "message": str(e.get("msg", "")),
            "type": e.get("type"),
        }
        for e in err.errors()
    ]
    shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    detail = f"invalid request — {shown}{more}; the schema is at /docs (GET /openapi.json)"
    return JSONResponse(
        {"detail": detail, "request_id": _request_id(request), "errors": errors}, status_code=422
    )


# --------------------------------------------------------------------------------------
# Request id and request metrics
# --------------------------------------------------------------------------------------


class RequestContext:
    """ASGI middleware: the request id (``X-Request-ID``) and the request metrics."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            labels = (path, scope.get("method", ""), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)
