"""The base of every config section and the error type of the config layer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the option and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
