"""Data layer: SQLite schema and store, fast panel reads, validation, fixtures, importers.

The names below load their module on first use (PEP 562), so importing one submodule —
the fixture generator from the CLI, say — does not pull in pandera or the panel reader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .annotations import AnnotationError, add_annotation, read_annotations
    from .panel import read_panel
    from .schema import TABLES, TableSpec, ddl
    from .store import (
        StoreError,
        read_metadata,
        read_table,
        summarise_series,
        update_database,
        write_database,
    )
    from .validation import (
        DataValidationError,
        ValidationFailure,
        ValidationReport,
        drop_invalid_rows,
        validate_database,
        validate_tables,
    )

_EXPORTS = {
    "AnnotationError": "annotations",
    "add_annotation": "annotations",
    "read_annotations": "annotations",
    "read_panel": "panel",
    "TABLES": "schema",
    "TableSpec": "schema",
    "ddl": "schema",
    "StoreError": "store",
    "read_metadata": "store",
    "read_table": "store",
    "summarise_series": "store",
    "update_database": "store",
    "write_database": "store",
    "DataValidationError": "validation",
    "ValidationFailure": "validation",
    "ValidationReport": "validation",
    "drop_invalid_rows": "validation",
    "validate_database": "validation",
    "validate_tables": "validation",
}

__all__ = [
    "TABLES",
    "AnnotationError",
    "DataValidationError",
    "StoreError",
    "TableSpec",
    "ValidationFailure",
    "ValidationReport",
    "add_annotation",
    "ddl",
    "drop_invalid_rows",
    "read_annotations",
    "read_metadata",
    "read_panel",
    "read_table",
    "summarise_series",
    "update_database",
    "validate_database",
    "validate_tables",
    "write_database",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
