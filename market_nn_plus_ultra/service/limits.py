"""Request limits: body bytes (ASGI middleware, before anything is parsed), rows, symbols."""

from __future__ import annotations

import json
from typing import Any

from ..config import ServiceConfig
from .errors import ServiceError

__all__ = ["BodyLimit", "check_rows", "check_symbols"]


class BodyLimit:
    """Answer 413 to a body over ``limit`` bytes, declared or streamed, unread by the app."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await self._refuse(send, int(declared))
                return
            await self.app(scope, receive, send)  # the server holds the body to its length
            return
        # No length (chunked): read the body here, up to the limit, then replay it.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(send, seen)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Any, size: int) -> None:
        body = json.dumps(
            {
                "detail": f"request body of {size:,}+ bytes exceeds service.max_body_bytes="
                f"{self.limit:,} — send fewer bars per request (or raise the limit)"
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def check_rows(n: int, cfg: ServiceConfig, field: str, min_bars: int | None = None) -> None:
    """422 when a request sends more than ``service.max_prediction_rows`` rows."""
    if n > cfg.max_prediction_rows:
        need = f" (the model needs {min_bars} bars per symbol)" if min_bars else ""
        raise ServiceError(
            422,
            f"{field}: {n:,} rows exceed service.max_prediction_rows={cfg.max_prediction_rows:,}"
            f" — send fewer per request{need}",
        )


def check_symbols(n: int, cfg: ServiceConfig, field: str) -> None:
    """422 when a request names more than ``service.max_symbols`` symbols."""
    if n > cfg.max_symbols:
        raise ServiceError(
            422,
            f"{field}: {n:,} symbols exceed service.max_symbols={cfg.max_symbols:,} — split "
            "the request",
        )
