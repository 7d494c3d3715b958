"""The ``plus-ultra`` command: a thin table of commands over the library."""

from .main import app, main

__all__ = ["app", "main"]
