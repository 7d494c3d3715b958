"""The trading routes: ``POST /predict`` and ``POST /outcomes``."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Request

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


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def _iso(value: Any) -> str:
    return pd.Timestamp(value).tz_convert("UTC").isoformat()


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses={
        409: {"model": ErrorResponse, "description": "guardrails.on_breach=reject refused it."},
        422: {"model": ErrorResponse, "description": "Invalid bars or symbols (says the fix)."},
        503: {"model": ErrorResponse, "description": "No model in service yet."},
    },
    tags=["predictions"],
)
def predict(body: PredictRequest, request: Request) -> PredictResponse:
    """Target positions at each symbol's latest bar, from the service's database
    (``symbols``, ``as_of``) or from the caller's recent bars (``bars``), after the
    guardrails. Logged with the request id."""
    state = _state(request)
    rid = request.state.request_id
    served = state.holder.require()  # this request's model, whatever reloads happen
    svc = state.config.service
    started = time.perf_counter()
    if body.bars is not None:
        mode = "bars"
        check_rows(len(body.bars), svc, "bars", served.predictor.min_bars)
        check_symbols(len({b.symbol for b in body.bars}), svc, "bars[].symbol")
        out = served.predictor.from_bars(body.bars)
        newest = max(b.timestamp for b in body.bars)
    else:
        mode = "database"
        check_symbols(len(set(body.symbols or [])), svc, "symbols")
        out = served.predictor.from_database(body.symbols or [], body.as_of)
        newest = out.frame["timestamp"].max()
    _observe_inputs(state, out)
    guarded = time.perf_counter()
    result = state.guard.apply(out.frame)
    finished = time.perf_counter()
    seconds = {**out.seconds, "guardrails": finished - guarded, "total": finished - started}
    _observe(state, mode, seconds, result)
    breaches = _breaches(result)
    _log_breaches(rid, served.version, breaches, result.action)
    state.log.append(_log_rows(rid, served.version, out, result, _iso(newest)))
    if result.action == "reject":
        raise ServiceError(
            409,
            f"guardrails refused the prediction (guardrails.on_breach=reject): "
            f"{len(breaches)} breach(es) of {sorted({b.rule for b in breaches})} — nothing "
            "was served; see `breaches`",
            breaches=[b.model_dump(mode="json") for b in breaches],
        )
    state.guard.record(out.frame, result.positions)
    state.metrics.predictions.inc(len(out.frame))
    state.metrics.observe_served(result.positions, pd.Timestamp(newest).timestamp())
    predictor = served.predictor
    return PredictResponse(
        predictions=_predictions(out, result),
        guardrails=GuardrailsReport(
            action=result.action,
            positions=dict(zip(out.frame["symbol"], result.positions.tolist(), strict=True)),
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


def _observe_inputs(state: ServiceState, out: ModelOutputs) -> None:
    """The drift window takes the model's input rows at the predicted bars."""
    rows = getattr(out, "features", None)  # (n, F) raw inputs aligned with out.frame
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


def _head_outputs(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _BASE]


def _predictions(out: ModelOutputs, result: GuardResult) -> list[Prediction]:
    frame = out.frame
    extra = _head_outputs(frame)
    columns = {c: frame[c].tolist() for c in extra}
    return [
        Prediction(
            timestamp=t,
            symbol=s,
            position=p,
            model_position=mp,
            forecast=_number(f),
            **{c: columns[c][i] for c in extra},
        )
        for i, (t, s, p, mp, f) in enumerate(
            zip(
                frame["timestamp"],
                frame["symbol"],
                result.positions.tolist(),
                frame["position"].tolist(),
                frame["forecast"].tolist(),
                strict=True,
            )
        )
    ]


def _number(value: float) -> float | None:
    """NaN (a policy without a forecasting head) → None (JSON null, SQL NULL)."""
    return None if math.isnan(value) else float(value)


def _log_rows(
    rid: str, version: str, out: ModelOutputs, result: GuardResult, newest: str
) -> list[tuple[Any, ...]]:
    frame = out.frame
    extra = _head_outputs(frame)
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    b = result.breaches
    for s, r, x, y, d in zip(
        b["symbol"], b["rule"], b["before"], b["after"], b["detail"], strict=True
    ):
        by_symbol.setdefault(s, []).append({"rule": r, "before": x, "after": y, "detail": d})
    created = pd.Timestamp.now(tz="UTC").isoformat()
    return [
        (
            rid,
            version,
            _iso(frame["timestamp"].iat[i]),
            symbol,
            newest,
            0.0 if result.action == "reject" else float(result.positions[i]),
            float(frame["position"].iat[i]),
            _number(frame["forecast"].iat[i]),
            json.dumps({c: float(frame[c].iat[i]) for c in extra}),
            result.action,
            json.dumps(by_symbol.get(symbol, [])),
            created,
        )
        for i, symbol in enumerate(frame["symbol"].tolist())
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
