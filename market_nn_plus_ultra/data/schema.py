"""The SQLite schema: every table of the store, its key and its indexes, declared once.

``TABLES`` is the single source for the DDL (:func:`ddl`) and for the key/column facts
that validation and the readers use. Timestamps are ISO-8601 UTC text
(``2024-01-02T14:30:00Z``); symbols are text and always bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ALT_PREFIX",
    "TABLES",
    "TIMESTAMP_FORMAT",
    "Column",
    "TableSpec",
    "alt_table_ddl",
    "ddl",
]

#: strftime pattern of stored timestamps (UTC, second resolution; ".fff" is allowed too).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Alternative-data side tables are named ``alt_<name>``.
ALT_PREFIX = "alt_"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # TEXT | REAL | INTEGER
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One table: columns, primary key, extra indexes and whether it is required."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    without_rowid: bool = True
    required: bool = False
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_TS = Column("timestamp", "TEXT", nullable=False, description="ISO-8601 UTC timestamp")
_SYM = Column("symbol", "TEXT", nullable=False, description="instrument symbol")

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "assets",
            (
                Column("asset_id", "INTEGER", nullable=False),
                Column("symbol", "TEXT", nullable=False),
                Column("name", "TEXT"),
                Column("sector", "TEXT"),
                Column("asset_class", "TEXT"),
                Column("currency", "TEXT"),
                Column("exchange", "TEXT"),
            ),
            primary_key=("asset_id",),
            unique=(("symbol",),),
            without_rowid=False,
            required=True,
            description="one row per instrument",
        ),
        TableSpec(
            "asset_flags",
            (
                _SYM,
                Column("flag", "TEXT", nullable=False, description="close_only | no_volume"),
                Column("note", "TEXT", description="where the mark came from"),
            ),
            primary_key=("symbol", "flag"),
            description=(
                "what a symbol's bars lack: close_only (open = high = low = close), "
                "no_volume (volume unknown, stored as 0)"
            ),
        ),
        TableSpec(
            "series",
            (
                _TS,
                _SYM,
                Column("open", "REAL", nullable=False),
                Column("high", "REAL", nullable=False),
                Column("low", "REAL", nullable=False),
                Column("close", "REAL", nullable=False),
                Column("volume", "REAL", nullable=False),
            ),
            primary_key=("symbol", "timestamp"),
            indexes=(("timestamp",),),
            required=True,
            description="the OHLCV spine",
        ),
        TableSpec(
            "indicators",
            (_TS, _SYM, Column("name", "TEXT", nullable=False), Column("value", "REAL")),
            primary_key=("symbol", "timestamp", "name"),
            description="precomputed indicators in long format",
        ),
        TableSpec(
            "regimes",
            (_TS, _SYM, Column("name", "TEXT", nullable=False), Column("value", "TEXT")),
            primary_key=("symbol", "timestamp", "name"),
            description="regime labels in long format (name = labeller, value = label)",
        ),
        TableSpec(
            "corporate_actions",
            (
                _SYM,
                _TS,
                Column("kind", "TEXT", nullable=False),
                Column("value", "REAL", nullable=False),
            ),
            primary_key=("symbol", "timestamp", "kind"),
            description="splits (value = ratio) and dividends (value = cash per share)",
        ),
        TableSpec(
            "benchmarks",
            (_TS, Column("name", "TEXT", nullable=False), Column("value", "REAL", nullable=False)),
            primary_key=("name", "timestamp"),
            description="benchmark levels (e.g. an index) by name",
        ),
        TableSpec(
            "cross_asset_views",
            (
                Column("view", "TEXT", nullable=False),
                _TS,
                _SYM,
                Column("name", "TEXT", nullable=False),
                Column("value", "REAL"),
            ),
            primary_key=("view", "symbol", "timestamp", "name"),
            description="aligned multi-symbol context columns, long format",
        ),
        TableSpec(
            "trades",
            (
                Column("trade_id", "INTEGER", nullable=False),
                _TS,
                _SYM,
                Column("side", "TEXT", nullable=False),
                Column("quantity", "REAL", nullable=False),
                Column("price", "REAL", nullable=False),
                Column("fees", "REAL"),
                Column("strategy", "TEXT"),
            ),
            primary_key=("trade_id",),
            indexes=(("symbol", "timestamp"),),
            without_rowid=False,
            description="executed trades",
        ),
        TableSpec(
            "annotations",
            (
                Column("annotation_id", "INTEGER", nullable=False),
                Column("timestamp", "TEXT", nullable=False, description="the annotated bar (UTC)"),
                Column("symbol", "TEXT"),
                Column("author", "TEXT"),
                Column("kind", "TEXT", description="note | anomaly | veto"),
                Column("text", "TEXT", nullable=False),
                # Added after the first release: nullable, so older tables stay valid and
                # are extended in place (ALTER TABLE ADD COLUMN) on the first write.
                Column("request_id", "TEXT", description="the service's request id"),
                Column("model_version", "TEXT", description="the served model's version"),
                Column("trade_id", "INTEGER", description="trades.trade_id annotated"),
                Column("rationale", "TEXT", description="why: required for a veto"),
                Column("created", "TEXT", description="when it was written (UTC)"),
            ),
            primary_key=("annotation_id",),
            indexes=(("symbol", "timestamp"), ("request_id",)),
            without_rowid=False,
            description=(
                "analyst feedback on a prediction, a trade or a bar: a note, an anomaly flag "
                "or a veto of the action taken (with a rationale)"
            ),
        ),
        TableSpec(
            "metadata",
            (Column("key", "TEXT", nullable=False), Column("value", "TEXT")),
            primary_key=("key",),
            description="provenance and ground truth (e.g. a fixture's planted signal), JSON values",
        ),
    )
}


def _create_table(spec: TableSpec) -> str:
    cols = []
    for col in spec.columns:
        null = " NOT NULL" if not col.nullable else ""
        cols.append(f'"{col.name}" {col.sql_type}{null}')
    cols.append(f"PRIMARY KEY ({', '.join(spec.primary_key)})")
    cols.extend(f"UNIQUE ({', '.join(u)})" for u in spec.unique)
    suffix = " WITHOUT ROWID" if spec.without_rowid else ""
    return f'CREATE TABLE IF NOT EXISTS "{spec.name}" (\n  ' + ",\n  ".join(cols) + f"\n){suffix}"


def _create_indexes(spec: TableSpec) -> list[str]:
    return [
        f'CREATE INDEX IF NOT EXISTS "ix_{spec.name}_{"_".join(cols)}" '
        f'ON "{spec.name}" ({", ".join(cols)})'
        for cols in spec.indexes
    ]


def ddl(tables: list[str] | None = None) -> list[str]:
    """CREATE statements (tables, then indexes) for the named tables, or all of them."""
    names = tables if tables is not None else list(TABLES)
    out: list[str] = []
    for name in names:
        spec = TABLES[name]
        out.append(_create_table(spec))
        out.extend(_create_indexes(spec))
    return out


def alt_table_ddl(name: str, value_columns: dict[str, str], per_symbol: bool) -> list[str]:
    """DDL for an ``alt_<name>`` side table keyed by timestamp (and symbol when per-symbol)."""
    table = name if name.startswith(ALT_PREFIX) else ALT_PREFIX + name
    key = ["timestamp", "symbol"] if per_symbol else ["timestamp"]
    cols = ['"timestamp" TEXT NOT NULL']
    if per_symbol:
        cols.append('"symbol" TEXT NOT NULL')
    cols += [f'"{c}" {t}' for c, t in value_columns.items()]
    pk = ", ".join(reversed(key)) if per_symbol else "timestamp"
    cols.append(f"PRIMARY KEY ({pk})")
    return [
        f'CREATE TABLE IF NOT EXISTS "{table}" (\n  ' + ",\n  ".join(cols) + "\n) WITHOUT ROWID"
    ]
