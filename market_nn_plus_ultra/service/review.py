"""The analyst review page: ``GET /review`` and ``POST /review/annotations``.

``GET /review`` renders, from the service's own database (``service.database``), the
newest predictions with their guardrail breaches, realised returns and annotations, the
newest trades (a ``trades`` table in the service or the market database) and the newest
annotations, plus a form to add one. The page is self-contained (no external script or
style) and every value is escaped. ``POST /review/annotations`` stores an annotation in
the service's database through :func:`~market_nn_plus_ultra.data.annotations.add_annotation`
(the same checks as ``plus-ultra annotate add``); like every mutating endpoint it needs
the API key (``X-API-Key``). The market database is only ever read.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from ..data.annotations import Annotation, AnnotationError, add_annotation, read_annotations
from ..data.prediction_log import TRADE_COLUMNS, read_predictions, read_trades
from ..data.store import StoreError
from ..data.validation import DataValidationError
from .auth import require_key
from .errors import ServiceError
from .review_page import TEMPLATE

__all__ = ["AnnotationBody", "router"]

router = APIRouter(tags=["review"])

_POST_URL = "/review/annotations"


class AnnotationBody(BaseModel):
    """An annotation: what it is about (request, bar or trade), its kind and its text."""

    model_config = {"extra": "forbid"}

    kind: Literal["note", "anomaly", "veto"] = Field(description="note | anomaly | veto.")
    text: str | None = Field(
        None, max_length=2000, description="The note (a veto's: its rationale)."
    )
    rationale: str | None = Field(None, max_length=2000, description="Why: required for a veto.")
    author: str | None = Field(None, max_length=100)
    request_id: str | None = Field(None, max_length=64, description="From a /predict response.")
    symbol: str | None = Field(None, max_length=32)
    timestamp: datetime | None = Field(None, description="The annotated bar (ISO-8601).")
    model_version: str | None = Field(None, max_length=64)
    trade_id: int | None = Field(None, ge=0, description="trades.trade_id of the trade.")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:+.{digits}f}"
    return str(value)


def _breaches(raw: Any) -> list[str]:
    """The log's breaches JSON as lines: ``max_position: +0.80 → +0.50 (detail)``."""
    try:
        items = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return [str(raw)]
    lines = []
    for b in items if isinstance(items, list) else []:
        if isinstance(b, dict):
            detail = f" ({b['detail']})" if b.get("detail") else ""
            lines.append(
                f"{b.get('rule', '?')}: {_fmt(b.get('before'), 2)} → {_fmt(b.get('after'), 2)}{detail}"
            )
    return lines


def _kinds(notes: pd.DataFrame) -> tuple[dict[tuple[str, str], set[str]], dict]:
    """Annotation kinds by (request_id, symbol) and by (timestamp, symbol)."""
    by_request: dict[tuple[str, str], set[str]] = {}
    by_bar: dict[tuple[str, str], set[str]] = {}
    for row in notes.itertuples(index=False):
        if isinstance(row.request_id, str) and row.request_id:
            by_request.setdefault((row.request_id, row.symbol), set()).add(row.kind)
        else:
            by_bar.setdefault((pd.Timestamp(row.timestamp).isoformat(), row.symbol), set()).add(
                row.kind
            )
    return by_request, by_bar


def _prediction_rows(frame: pd.DataFrame, notes: pd.DataFrame) -> list[dict[str, Any]]:
    by_request, by_bar = _kinds(notes)
    rows = []
    for p in frame.itertuples(index=False):
        kinds = by_request.get((p.request_id, p.symbol), set())
        kinds |= by_bar.get((pd.Timestamp(p.timestamp).isoformat(), p.symbol), set())
        rows.append(
            {
                "timestamp": p.timestamp,
                "symbol": p.symbol,
                "model_version": p.model_version,
                "request_id": p.request_id,
                "position": _fmt(p.position),
                "model_position": _fmt(p.model_position),
                "forecast": _fmt(p.forecast, 5),
                "action": p.action,
                "breaches": _breaches(p.breaches),
                "realised": _fmt(p.realised_return, 5),
                "kinds": sorted(kinds),
                "vetoed": "veto" in kinds,
            }
        )
    return rows


def _trades(database: Path, market_db: Path) -> list[dict[str, str]] | None:
    for path in (database, market_db):
        if Path(path).is_file():
            try:
                frame = read_trades(path, limit=50)
            except StoreError:
                continue
            if frame is not None:
                return [{c: _fmt(v) if c != "trade_id" else str(v) for c, v in row.items()}
                        for row in frame.to_dict("records")]  # fmt: skip
    return None


@router.get("/review", response_class=HTMLResponse, summary="Recent predictions for review")
def review(
    request: Request,
    limit: int = Query(100, ge=1, le=1000, description="Newest predictions shown."),
    symbol: str | None = Query(None, max_length=32, description="Only this symbol."),
) -> HTMLResponse:
    from jinja2 import Environment

    state = request.app.state.service
    database, market_db = Path(state.config.service.database), Path(state.config.data.sqlite_path)
    symbols = [symbol] if symbol else None
    try:
        frame = read_predictions(database, symbols=symbols, limit=limit)
        notes = read_annotations(database, symbols=symbols, limit=limit)
    except (StoreError, AnnotationError) as err:
        raise ServiceError(503, f"the review page cannot read {database}: {err}") from None
    served = state.holder.current
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            model_version=served.version if served is not None else None,
            database=str(database),
            generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            predictions=_prediction_rows(frame, notes),
            trades=_trades(database, market_db),
            trade_columns=TRADE_COLUMNS,
            annotations=[{k: _fmt(v) for k, v in r.items()} for r in notes.to_dict("records")],
            post_url=_POST_URL,
        )
    )
    return HTMLResponse(html)


@router.post(
    _POST_URL,
    response_model=Annotation,
    status_code=201,
    dependencies=[Depends(require_key)],
    summary="Add an annotation (needs the API key)",
)
def post_annotation(body: AnnotationBody, request: Request) -> Annotation:
    state = request.app.state.service
    database = Path(state.config.service.database)
    try:
        state.log.flush()  # a request answered a moment ago is in the log
        saved = add_annotation(
            database,
            **body.model_dump(),
            predictions_db=database,
            trades_db=Path(state.config.data.sqlite_path),
        )
    except (AnnotationError, DataValidationError) as err:
        raise ServiceError(422, str(err)) from None
    except StoreError as err:
        raise ServiceError(503, str(err)) from None
    return saved  # the stored row (a dataclass: FastAPI serialises it through pydantic)
