"""A corpus of malformed databases, written with plain sqlite3 so they can be truly broken.

The tables are created without keys or constraints, so each kind can hold what a strict
writer would refuse: duplicate keys, rows out of order, text in REAL columns. Every kind
starts from the same small clean database (two symbols × 48 hourly bars, 24/7) and
breaks one thing; ``expected`` names the (table, column, check) validation must report.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SYMBOLS = ("AAA", "BBB")
N_BARS = 48

#: Declared column types of the loose tables (no primary key, no NOT NULL).
_TYPES = {
    "assets": {"asset_id": "INTEGER", "symbol": "TEXT", "name": "TEXT", "asset_class": "TEXT"},
    "series": {
        "timestamp": "TEXT",
        "symbol": "TEXT",
        "open": "REAL",
        "high": "REAL",
        "low": "REAL",
        "close": "REAL",
        "volume": "REAL",
    },
    "indicators": {"timestamp": "TEXT", "symbol": "TEXT", "name": "TEXT", "value": "REAL"},
    "alt_sentiment": {
        "timestamp": "TEXT",
        "symbol": "TEXT",
        "sentiment_score": "REAL",
        "news_volume": "REAL",
    },
    "metadata": {"key": "TEXT", "value": "TEXT"},
}


def clean_tables() -> dict[str, pd.DataFrame]:
    """Consistent tables as object frames (values exactly as they will be stored)."""
    rng = np.random.default_rng(7)
    times = pd.date_range("2024-01-01", periods=N_BARS, freq="h", tz="UTC")
    text = times.strftime("%Y-%m-%dT%H:%M:%SZ")
    frames = []
    for symbol in SYMBOLS:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, N_BARS)))
        open_ = close * (1 + rng.normal(0, 0.002, N_BARS))
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": text,
                    "symbol": symbol,
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.002,
                    "low": np.minimum(open_, close) * 0.998,
                    "close": close,
                    "volume": rng.uniform(100, 1000, N_BARS),
                }
            )
        )
    series = pd.concat(frames, ignore_index=True).astype(object)
    assets = pd.DataFrame(
        {"asset_id": [1, 2], "symbol": list(SYMBOLS), "name": ["A", "B"], "asset_class": "crypto"}
    ).astype(object)
    indicators = series[["timestamp", "symbol"]].assign(name="rsi_14", value=50.0)
    sentiment = series[["timestamp", "symbol"]].assign(
        sentiment_score=rng.normal(0, 1, len(series)), news_volume=3.0
    )
    metadata = pd.DataFrame({"key": ["source"], "value": ['"test corpus"']})
    return {
        "assets": assets,
        "series": series,
        "indicators": indicators.astype(object),
        "alt_sentiment": sentiment.astype(object),
        "metadata": metadata,
    }


def write_raw(path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write frames as loose tables (declared types, no keys), values as given."""
    con = sqlite3.connect(path)
    try:
        with con:
            for name, frame in tables.items():
                types = _TYPES[name]
                cols = ", ".join(f'"{c}" {types.get(c, "")}'.strip() for c in frame.columns)
                con.execute(f'CREATE TABLE "{name}" ({cols})')
                rows = frame.astype(object).where(frame.notna(), None)
                marks = ", ".join("?" * len(frame.columns))
                con.executemany(
                    f'INSERT INTO "{name}" VALUES ({marks})',
                    list(rows.itertuples(index=False, name=None)),
                )
    finally:
        con.close()
    return path


@dataclass(frozen=True)
class Kind:
    """One way to break the database and what validation must say about it."""

    name: str
    breaks: Callable[[dict[str, pd.DataFrame]], None]
    table: str
    column: str
    check: str

    def build(self, directory: Path) -> Path:
        tables = clean_tables()
        self.breaks(tables)
        return write_raw(directory / f"{self.name}.db", tables)


def _set(table: str, column: str, row: int, value: object) -> Callable:
    def breaks(tables: dict[str, pd.DataFrame]) -> None:
        tables[table].loc[row, column] = value

    return breaks


def _scale(column: str, row: int, base: str, factor: float) -> Callable:
    def breaks(tables: dict[str, pd.DataFrame]) -> None:
        series = tables["series"]
        series.loc[row, column] = float(series.loc[row, base]) * factor

    return breaks


def _drop_table(name: str) -> Callable:
    return lambda tables: tables.pop(name)


def _drop_column(column: str) -> Callable:
    def breaks(tables: dict[str, pd.DataFrame]) -> None:
        tables["series"] = tables["series"].drop(columns=[column])

    return breaks


def _duplicate_row(tables: dict[str, pd.DataFrame]) -> None:
    series = tables["series"]
    tables["series"] = pd.concat([series, series.iloc[[10]]], ignore_index=True)


def _swap_rows(tables: dict[str, pd.DataFrame]) -> None:
    series = tables["series"]
    order = np.arange(len(series))
    order[[5, 6]] = order[[6, 5]]
    tables["series"] = series.iloc[order].reset_index(drop=True)


def _offsets(tables: dict[str, pd.DataFrame]) -> None:
    """Rows 20-23 of AAA written as New York time with -05:00 (same instants)."""
    series = tables["series"]
    rows = slice(20, 23)
    local = pd.to_datetime(series.loc[rows, "timestamp"], utc=True).dt.tz_convert("-05:00")
    series.loc[rows, "timestamp"] = local.map(lambda t: t.isoformat())


def _naive(tables: dict[str, pd.DataFrame]) -> None:
    series = tables["series"]
    series.loc[30:33, "timestamp"] = series.loc[30:33, "timestamp"].str.replace("T", " ").str[:-1]


def _unknown_symbol(tables: dict[str, pd.DataFrame]) -> None:
    tables["assets"] = tables["assets"].iloc[:1]


def _empty_series(tables: dict[str, pd.DataFrame]) -> None:
    tables["series"] = tables["series"].iloc[:0]


def _duplicate_asset(tables: dict[str, pd.DataFrame]) -> None:
    tables["assets"].loc[1, "symbol"] = "AAA"
    tables["series"].loc[tables["series"]["symbol"] == "BBB", "symbol"] = "AAA"


KINDS: tuple[Kind, ...] = (
    Kind("missing_series", _drop_table("series"), "series", "*", "missing_table"),
    Kind("missing_assets", _drop_table("assets"), "assets", "*", "missing_table"),
    Kind("missing_column", _drop_column("close"), "series", "close", "missing_column"),
    Kind("text_in_real", _set("series", "close", 3, "abc"), "series", "close", "numeric"),
    Kind("null_volume", _set("series", "volume", 5, None), "series", "volume", "not_null"),
    Kind("nan_text", _set("series", "open", 7, "NaN"), "series", "open", "nan"),
    Kind("infinite_high", _set("series", "high", 2, float("inf")), "series", "high", "finite"),
    Kind("duplicate_key", _duplicate_row, "series", "symbol,timestamp", "duplicate_key"),
    Kind("unsorted", _swap_rows, "series", "timestamp", "timestamp_order"),
    Kind(
        "unparseable_time",
        _set("series", "timestamp", 4, "01/03/2024 10:00"),
        "series",
        "timestamp",
        "timestamp_format",
    ),
    Kind("mixed_offsets", _offsets, "series", "timestamp", "mixed_timezones"),
    Kind("naive_and_aware", _naive, "series", "timestamp", "mixed_timezones"),
    Kind("low_above_open", _scale("low", 8, "open", 1.05), "series", "low", "ohlc_low"),
    Kind("high_below_close", _scale("high", 9, "close", 0.95), "series", "high", "ohlc_high"),
    Kind("zero_price", _set("series", "close", 11, 0.0), "series", "close", "positive"),
    Kind("negative_price", _set("series", "open", 12, -1.0), "series", "open", "positive"),
    Kind("negative_volume", _set("series", "volume", 13, -5.0), "series", "volume", "non_negative"),
    Kind("unknown_symbol", _unknown_symbol, "series", "symbol", "unknown_symbol"),
    Kind("empty_series", _empty_series, "series", "*", "empty_table"),
    Kind(
        "alt_text",
        _set("alt_sentiment", "sentiment_score", 6, "bullish"),
        "alt_sentiment",
        "sentiment_score",
        "numeric",
    ),
    Kind("indicator_text", _set("indicators", "value", 1, "n/a"), "indicators", "value", "numeric"),
    Kind("asset_id_text", _set("assets", "asset_id", 0, "one"), "assets", "asset_id", "integer"),
    Kind("duplicate_asset", _duplicate_asset, "assets", "symbol", "duplicate_key"),
)


def not_sqlite(directory: Path) -> Path:
    path = directory / "prices.db"
    path.write_text("timestamp,symbol,close\n2024-01-01,AAA,1.0\n")
    return path


def empty_file(directory: Path) -> Path:
    path = directory / "empty.db"
    path.touch()
    return path


def missing_file(directory: Path) -> Path:
    return directory / "nowhere.db"


#: Paths that cannot be opened as a database at all (a clean StoreError).
BAD_FILES: dict[str, Callable[[Path], Path]] = {
    "not_sqlite": not_sqlite,
    "empty_file": empty_file,
    "missing_file": missing_file,
}
