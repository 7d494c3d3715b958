"""Data layer: SQLite schema and store, fast panel reads, validation, fixtures, importers."""

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

__all__ = [
    "TABLES",
    "DataValidationError",
    "StoreError",
    "TableSpec",
    "ValidationFailure",
    "ValidationReport",
    "ddl",
    "drop_invalid_rows",
    "read_metadata",
    "read_panel",
    "read_table",
    "summarise_series",
    "update_database",
    "validate_database",
    "validate_tables",
    "write_database",
]
