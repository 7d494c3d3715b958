"""The one error type of the service: an HTTP status and a message that names the fix."""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceError"]


class ServiceError(Exception):
    """A request the service refuses: ``status`` (4xx, or 503 while not ready), ``detail``
    (what is wrong, where, and the fix) and optional ``extra`` fields of the JSON body."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra
