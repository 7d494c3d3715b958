"""``plus-ultra data fixture``."""

from __future__ import annotations

from .data import app  # noqa: F401
