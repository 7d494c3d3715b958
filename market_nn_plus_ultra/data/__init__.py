"""Data layer: SQLite schema and store, validation, fixtures, importers, fast panel reads."""

from .schema import TABLES, TableSpec, ddl
from .store import StoreError, read_table, update_database, write_database

__all__ = ["TABLES", "StoreError", "TableSpec", "ddl", "read_table", "update_database", "write_database"]
