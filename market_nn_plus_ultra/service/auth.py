"""The API key of the mutating endpoints (``X-API-Key`` or ``Authorization: Bearer``).

The key is read once, at app creation, from the environment variable that
``service.api_key_env`` names (``--api-key-env``). Without a key the mutating endpoints
refuse every call (403) rather than run open. Keys are compared with
:func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hmac
import os

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ServiceError

__all__ = ["ApiKey", "require_key"]

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service API key.")
_bearer = HTTPBearer(auto_error=False, description="The service API key as a bearer token.")


class ApiKey:
    """The configured key (None: mutating endpoints are disabled)."""

    def __init__(self, env_name: str) -> None:
        self.env_name = env_name
        value = os.environ.get(env_name, "")
        self._key = value.encode("utf-8") if value else None

    @property
    def configured(self) -> bool:
        return self._key is not None

    def check(self, given: str | None) -> None:
        """Raise 403 (no key configured, wrong key) or 401 (no key sent)."""
        if self._key is None:
            raise ServiceError(
                403,
                f"this endpoint changes the service and is disabled: no API key is configured "
                f"— set the environment variable {self.env_name} (service.api_key_env, "
                "--api-key-env) and restart",
            )
        if not given:
            raise ServiceError(
                401, "missing API key: send it in the X-API-Key header (or Authorization: Bearer)"
            )
        if not hmac.compare_digest(given.encode("utf-8"), self._key):
            raise ServiceError(403, "wrong API key: send the key the service was started with")


def require_key(
    request: Request,
    api_key: str | None = Security(_header),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> None:
    """Route dependency: the request carries the app's API key."""
    given = api_key or (bearer.credentials if bearer is not None else None)
    request.app.state.service.auth.check(given)
