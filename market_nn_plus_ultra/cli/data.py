"""``plus-ultra data …``: fixtures, samples, import, bootstrap, build, validate.

Each command lives in its own module (``data_<name>.py``) and registers itself on ``app``.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Create, import, build and validate SQLite market databases.",
    no_args_is_help=True,
)

# Command modules register on `app` when imported (kept last: they import `app`).
from . import data_build, data_fixture, data_import, data_validate  # noqa: E402, F401
