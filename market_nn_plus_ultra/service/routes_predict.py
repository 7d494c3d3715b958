"""The trading routes: ``POST /predict`` and ``POST /outcomes``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .app import ServiceState
from .auth import require_key
from .errors import ServiceError
from .guard import GuardResult
from .holder import Served
from .limits import check_rows, check_symbols
from .predictor import ModelOutputs
from .schemas import (
    Breach,
    ErrorResponse,
    GuardrailsReport,
    OutcomesRequest,
    OutcomesResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    Telemetry,
    UnmatchedOutcome,
)

__all__ = ["router"]

log = logging.getLogger("market_nn_plus_ultra.service")

router = APIRouter()

_LOGGED_BREACHES = 50  # breach rows logged one by one per request; the rest are counted
_BASE = ("timestamp", "symbol", "position", "forecast", "realised_return")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def _iso(value: Any) -> str:
    """ISO-8601 UTC of a timestamp (int: nanoseconds since the epoch)."""
    if isinstance(value, int):
        return pd.Timestamp(value, tz="UTC").isoformat()
    return pd.Timestamp(value).tz_convert("UTC").isoformat()


# /predict reads its body itself (pydantic-core parses and validates the JSON in one
# pass, without the JSON → dict → model detour); the schema is still PredictRequest's.
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
}


def parse_predict(body: bytes) -> PredictRequest:
    """The request body as a :class:`PredictRequest`, or the 422 FastAPI would answer."""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in err.errors(include_url=False)]
        raise RequestValidationError(errors) from None


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=_PREDICT_BODY,
    responses={
        409: {"model": ErrorResponse, "description": "guardrails.on_breach=reject refused it."},
        422: {"model": ErrorResponse, "description": "Invalid bars or symbols (says the fix)."},
        503: {"model": ErrorResponse, "description": "No model in service yet."},
    },
    tags=["predictions"],
)
async def predict(request: Request) -> Response:
    """Target positions at each symbol's latest bar, from the service's database
    (``symbols``, ``as_of``) or from the caller's recent bars (``bars``), after the
    guardrails. Logged with the request id."""
    # Bars requests that arrive together are answered together, on the loop (one forward
    # pass; see batching.LoopBatcher); a policy's replays run on the predictor's worker
    # thread and database reads in the thread pool.
    body = parse_predict(await request.body())
    state = _state(request)
    rid = request.state.request_id
    served = state.holder.require()  # this request's model, whatever reloads happen
    svc = state.config.service
    started = time.perf_counter()
    if body.bars is not None:
        mode = "bars"
        check_rows(len(body.bars), svc, "bars", served.predictor.min_bars)
        check_symbols(len({b.symbol for b in body.bars}), svc, "bars[].symbol")
        predictor = served.predictor
        if predictor.batched:
            out = await predictor.predict_bars(body.bars)
        else:  # a policy replays every bar: too long to hold the event loop for
            out = await asyncio.wrap_future(predictor.submit_bars(body.bars))
    else:
        mode = "database"
        check_symbols(len(set(body.symbols or [])), svc, "symbols")
        out = await run_in_threadpool(
            served.predictor.from_database, body.symbols or [], body.as_of
        )
    cols = out.columns
    # each symbol's last bar is its newest: the newest of them is the inputs' newest bar
    newest = int(cols["timestamp"].max())
    _observe_inputs(state, out)
    guarded = time.perf_counter()
    result = state.guard.apply(lambda: out.frame, cols)
    finished = time.perf_counter()
    seconds = {**out.seconds, "guardrails": finished - guarded, "total": finished - started}
    _observe(state, mode, seconds, result)
    breaches = _breaches(result)
    _log_breaches(rid, served.version, breaches, result.action)
    state.log.append(_log_rows(rid, served.version, cols, result, _iso(newest)))
    if result.action == "reject":
        raise ServiceError(
            409,
            f"guardrails refused the prediction (guardrails.on_breach=reject): "
            f"{len(breaches)} breach(es) of {sorted({b.rule for b in breaches})} — nothing "
            "was served; see `breaches`",
            breaches=[b.model_dump(mode="json") for b in breaches],
        )
    state.guard.record(None, result.positions, cols)
    state.metrics.predictions.inc(len(result.positions))
    state.metrics.observe_served(result.positions, newest / 1e9)
    predictor = served.predictor
    response = PredictResponse(
        predictions=_predictions(cols, result),
        guardrails=GuardrailsReport(
            action=result.action,
            positions=dict(zip(cols["symbol"].tolist(), result.positions.tolist(), strict=True)),
            breaches=breaches,
        ),
        model_version=served.version,
        request_id=rid,
        telemetry=Telemetry(
            mode=mode,
            feature_columns=predictor.feature_columns,
            window=predictor.window,
            horizon=predictor.horizon,
            min_bars=predictor.min_bars,
            latency_ms={k: round(v * 1e3, 3) for k, v in seconds.items()},
        ),
    )
    # serialised here, once (a returned model would be validated again by FastAPI)
    return Response(response.model_dump_json(exclude_none=True), media_type="application/json")


def _observe_inputs(state: ServiceState, out: ModelOutputs) -> None:
    """The drift window takes the model's input rows at the predicted bars."""
    rows = getattr(out, "features", None)  # (n, F) raw inputs aligned with out.columns
    if rows is not None:
        state.drift.observe(rows)


def _observe(
    state: ServiceState, mode: str, seconds: dict[str, float], result: GuardResult
) -> None:
    m = state.metrics
    for stage, value in seconds.items():
        m.inference_seconds.labels(mode, stage).observe(value)
    if len(result.breaches):
        for rule, n in result.breaches["rule"].value_counts().items():
            m.breaches.labels(str(rule)).inc(int(n))
        m.derisk.labels(result.action).inc()


def _breaches(result: GuardResult) -> list[Breach]:
    b = result.breaches
    if not len(b):
        return []
    return [
        Breach(timestamp=t, symbol=s, rule=r, before=x, after=y, detail=d)
        for t, s, r, x, y, d in zip(
            b["timestamp"],
            b["symbol"],
            b["rule"],
            b["before"],
            b["after"],
            b["detail"],
            strict=True,
        )
    ]


def _log_breaches(rid: str, version: str, breaches: list[Breach], action: str) -> None:
    for b in breaches[:_LOGGED_BREACHES]:
        fields = {"event": "guardrail_breach", "request_id": rid, "model_version": version}
        fields.update(b.model_dump(mode="json"), action=action)
        log.warning(
            "guardrail %s on %s: %.4g → %.4g (%s)",
            b.rule,
            b.symbol,
            b.before,
            b.after,
            action,
            extra={"fields": fields},
        )
    if len(breaches) > _LOGGED_BREACHES:
        rest = len(breaches) - _LOGGED_BREACHES
        fields = {"event": "guardrail_breaches_more", "request_id": rid, "n": rest}
        log.warning("%d more guardrail breaches in request %s", rest, rid, extra={"fields": fields})


def _head_outputs(cols: dict[str, np.ndarray]) -> list[str]:
    return [c for c in cols if c not in _BASE]


def _stamp(ns: int) -> datetime:
    """int64 ns UTC → an aware datetime (bars carry at most microseconds)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _predictions(cols: dict[str, np.ndarray], result: GuardResult) -> list[Prediction]:
    extra = _head_outputs(cols)
    columns = {c: cols[c].tolist() for c in extra}
    return [
        Prediction(
            timestamp=_stamp(t),
            symbol=s,
            position=p,
            model_position=mp,
            forecast=_number(f),
            **{c: columns[c][i] for c in extra},
        )
        for i, (t, s, p, mp, f) in enumerate(
            zip(
                cols["timestamp"].tolist(),
                cols["symbol"].tolist(),
                result.positions.tolist(),
                cols["position"].tolist(),
                cols["forecast"].tolist(),
                strict=True,
            )
        )
    ]


def _number(value: float) -> float | None:
    """NaN (a policy without a forecasting head) → None (JSON null, SQL NULL)."""
    return None if math.isnan(value) else float(value)


def _log_rows(
    rid: str, version: str, cols: dict[str, np.ndarray], result: GuardResult, newest: str
) -> list[tuple[Any, ...]]:
    extra = _head_outputs(cols)
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    b = result.breaches
    if len(b):
        for s, r, x, y, d in zip(
            b["symbol"], b["rule"], b["before"], b["after"], b["detail"], strict=True
        ):
            by_symbol.setdefault(s, []).append({"rule": r, "before": x, "after": y, "detail": d})
    created = pd.Timestamp.now(tz="UTC").isoformat()
    heads = {c: cols[c].tolist() for c in extra}
    served = result.positions.tolist()
    return [
        (
            rid,
            version,
            _iso(t),
            symbol,
            newest,
            0.0 if result.action == "reject" else float(served[i]),
            float(position),
            _number(forecast),
            json.dumps({c: float(heads[c][i]) for c in extra}),
            result.action,
            json.dumps(by_symbol.get(symbol, [])),
            created,
        )
        for i, (t, symbol, position, forecast) in enumerate(
            zip(
                cols["timestamp"].tolist(),
                cols["symbol"].tolist(),
                cols["position"].tolist(),
                cols["forecast"].tolist(),
                strict=True,
            )
        )
    ]


# --------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------


@router.post(
    "/outcomes",
    response_model=OutcomesResponse,
    responses={
        401: {"model": ErrorResponse, "description": "No API key sent."},
        403: {"model": ErrorResponse, "description": "Wrong key, or no key configured."},
        422: {"model": ErrorResponse, "description": "Invalid body."},
    },
    dependencies=[Depends(require_key)],
    tags=["predictions"],
)
def outcomes(body: OutcomesRequest, request: Request) -> OutcomesResponse:
    """Realised returns of earlier predictions (by request id, or timestamp + symbol):
    they update the live PnL, ROI drift and calibration drift (docs/service.md)."""
    state = _state(request)
    check_rows(len(body.outcomes), state.config.service, "outcomes")
    state.log.flush()  # predictions still queued for the log are looked up too
    received = pd.Timestamp.now(tz="UTC").isoformat()
    matched, unmatched = 0, []
    for i, item in enumerate(body.outcomes):
        row, why = _find(state, item.request_id, item.symbol, item.timestamp)
        if row is None:
            unmatched.append(UnmatchedOutcome(index=i, reason=why))
            continue
        if not state.log.add_outcome(row, item.realised_return, received):
            unmatched.append(UnmatchedOutcome(index=i, reason="already recorded"))
            continue
        matched += 1
        state.live.add(
            row["model_version"],
            row["position"],
            row["forecast"],
            row["outputs"],
            item.realised_return,
        )
        stamp = pd.Timestamp(row["timestamp"]).value
        state.guard.book.record_return(stamp, row["symbol"], item.realised_return)
    state.metrics.outcomes.inc(matched)
    served: Served | None = state.holder.current
    stats = state.live.stats(served.version if served else None)
    state.metrics.publish_live(stats)
    return OutcomesResponse(matched=matched, unmatched=unmatched, live=stats)


def _find(state: ServiceState, request_id: str | None, symbol: str | None, timestamp: Any):
    """The logged prediction an outcome names, or (None, why not)."""
    if request_id is not None:
        rows = state.log.predictions_of(request_id)
        if symbol is not None:
            rows = [r for r in rows if r["symbol"] == symbol]
        if not rows:
            named = f" for {symbol}" if symbol else ""
            return None, f"no prediction with request_id {request_id!r}{named}"
        if len(rows) > 1:
            names = ", ".join(r["symbol"] for r in rows[:8])
            return (
                None,
                f"request {request_id} predicted {len(rows)} symbols ({names}): name the symbol",
            )
        row = rows[0]
        if row["action"] == "reject":
            return None, f"request {request_id} was rejected by the guardrails: nothing was served"
        return row, ""
    row = state.log.prediction_at(_iso(timestamp), str(symbol))
    if row is None:
        return None, f"no served prediction of {symbol} at {_iso(timestamp)}"
    return row, ""
