"""Operational routes: health, readiness, config, curriculum, reload, metrics and drift."""

from __future__ import annotations

import re
import time
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from .. import config as config_module
from .app import ServiceState
from .auth import require_key
from .errors import ServiceError
from .holder import Served
from .metrics import CONTENT_TYPE
from .schemas import (
    ConfigResponse,
    CurriculumResponse,
    CurriculumUpdate,
    DriftResponse,
    ErrorResponse,
    FeatureDriftItem,
    HealthResponse,
    ReadyResponse,
    ReloadRequest,
    ReloadResponse,
)

__all__ = ["redact", "router"]

router = APIRouter()

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key sent."},
    403: {"model": ErrorResponse, "description": "Wrong key, or no key configured."},
    422: {"model": ErrorResponse, "description": "Invalid body."},
}
_SECRET = re.compile(r"(password|passwd|secret|token|api_?key|credential)s?$", re.IGNORECASE)
_URL_AUTH = re.compile(r"(?<=://)([^/@:\s]+):([^/@\s]+)@")


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def redact(value: Any, key: str = "") -> Any:
    """A config dump with secret-looking values (``*token``, ``*password``, ``*api_key`` …
    and passwords inside URLs) replaced by ``"***"``; ``*_env`` names stay (they are names)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is not None and _SECRET.search(key) and not key.endswith("_env"):
        return "***"
    if isinstance(value, str):
        return _URL_AUTH.sub(r"\1:***@", value)
    return value


@router.get("/health", response_model=HealthResponse, tags=["operations"])
def health(request: Request) -> HealthResponse:
    """Liveness: 200 while the process is up, with the model version and uptime."""
    state = _state(request)
    served = state.holder.current
    return HealthResponse(
        model_version=served.version if served else None,
        uptime_s=time.monotonic() - state.started,
    )


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model loaded and warmed yet."}},
    tags=["operations"],
)
def ready(request: Request) -> Any:
    """Readiness: 503 until a model is loaded and warmed, then 200."""
    holder = _state(request).holder
    served = holder.current
    if served is None:
        why = holder.error or "loading the model"
        body = ReadyResponse(ready=False, model_version=None, detail=why)
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return ReadyResponse(
        ready=True,
        model_version=served.version,
        detail=f"serving {served.checkpoint}",
        min_bars=served.predictor.min_bars,
    )


@router.get("/config", response_model=ConfigResponse, tags=["operations"])
def get_config(request: Request) -> ConfigResponse:
    """The resolved config of the service (and of the served run), secrets redacted."""
    state = _state(request)
    served = state.holder.current
    with state.lock:
        dump = config_module.config_to_dict(state.config)
    run = config_module.config_to_dict(served.agent.config) if served else None
    return ConfigResponse(config=redact(dump), run_config=None if run is None else redact(run))


# --------------------------------------------------------------------------------------
# Curriculum
# --------------------------------------------------------------------------------------


def _stage_of(served: Served | None, profile: str | None) -> str | None:
    """The stage the served RL run trained in last (its rollouts.parquet), if that run used
    the same profile."""
    if served is None or profile is None:
        return None
    path = served.run_dir / "rollouts.parquet"
    run_rl = getattr(served.agent.config.reinforcement, "curriculum", None)
    if not path.is_file() or getattr(run_rl, "profile", None) != profile:
        return None
    try:
        stages = pd.read_parquet(path, columns=["curriculum_stage"])["curriculum_stage"]
    except (OSError, KeyError, ValueError):
        return None
    stages = stages.dropna()
    return str(stages.iloc[-1]) if len(stages) else None


def _curriculum(state: ServiceState) -> CurriculumResponse:
    with state.lock:
        rl = getattr(state.config.reinforcement, "curriculum", None)
        dump = rl.model_dump(mode="json") if rl is not None else {}
    profile = dump.get("profile")
    profiles = dump.get("profiles", {})
    stages = profiles.get(profile, {}).get("stages", []) if profile else []
    name = _stage_of(state.holder.current, profile)
    index = next((i for i, s in enumerate(stages) if s.get("name") == name), 0 if stages else None)
    return CurriculumResponse(
        profile=profile,
        stage=stages[index] if index is not None else None,
        stage_index=index,
        profiles=profiles,
    )


@router.get("/curriculum", response_model=CurriculumResponse, tags=["curriculum"])
def get_curriculum(request: Request) -> CurriculumResponse:
    """The reinforcement curriculum profile in force and its stage (the stage the served
    RL run reached, else the first stage a fine-tuning run starts in)."""
    return _curriculum(_state(request))


@router.put(
    "/curriculum",
    response_model=CurriculumResponse,
    responses=_AUTH_ERRORS,
    dependencies=[Depends(require_key)],
    tags=["curriculum"],
)
def put_curriculum(body: CurriculumUpdate, request: Request) -> CurriculumResponse:
    """Set the profile in force (and optionally the profiles), validated by the config
    model; it lasts for the life of the process (put it in the config file to keep it)."""
    state = _state(request)
    model = type(getattr(state.config.reinforcement, "curriculum", None))
    if not hasattr(model, "model_validate"):
        raise ServiceError(422, "this build has no reinforcement.curriculum section to set")
    with state.lock:
        current = state.config.reinforcement.curriculum
        raw = {"profile": body.profile, "profiles": body.profiles}
        if body.profiles is None:
            raw["profiles"] = current.model_dump(mode="json")["profiles"]
        try:
            state.config.reinforcement.curriculum = model.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            field = f"reinforcement.curriculum{'.' + where if where else ''}"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ServiceError(422, f"{field}: {message}") from None
    return _curriculum(state)


# --------------------------------------------------------------------------------------
# Reload, metrics and drift
# --------------------------------------------------------------------------------------


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        **_AUTH_ERRORS,
        409: {"model": ErrorResponse, "description": "The checkpoint does not fit."},
        422: {"model": ErrorResponse, "description": "Unreadable or corrupt checkpoint."},
    },
    dependencies=[Depends(require_key)],
    tags=["operations"],
)
def reload(request: Request, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load, validate and warm a checkpoint beside the model in service, then swap it in;
    requests in flight finish on the old model, and a refused checkpoint leaves it serving."""
    state = _state(request)
    previous = state.holder.current
    path = body.checkpoint if body is not None and body.checkpoint else state.checkpoint
    try:
        served = state.holder.load(path)
    except ServiceError:
        state.metrics.reloads.labels("refused").inc()
        raise
    state.on_load(served)
    return ReloadResponse(
        model_version=served.version,
        checkpoint=str(served.checkpoint),
        previous_version=previous.version if previous else None,
        seconds=served.load_seconds,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
    tags=["operations"],
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this app (requests, latency, inference, model, guardrails,
    positions, live ROI and calibration drift, feature drift); docs/operations.md."""
    state = _state(request)
    state.refresh_metrics()
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/drift", response_model=DriftResponse, tags=["operations"])
def drift(request: Request) -> DriftResponse:
    """PSI and KS of each feature of the newest served rows against the training
    distribution, and the regime-shift flag."""
    report = _state(request).drift.report()
    ranked = sorted(report.features, key=lambda d: d.psi, reverse=True)
    return DriftResponse(
        available=report.available,
        reason=report.reason,
        source=report.source,
        rows=report.rows,
        window=report.window,
        min_rows=report.min_rows,
        psi_threshold=report.psi_threshold,
        regime_shift=report.regime_shift,
        drifted=report.drifted,
        features=[FeatureDriftItem(feature=d.feature, psi=d.psi, ks=d.ks) for d in ranked],
    )
