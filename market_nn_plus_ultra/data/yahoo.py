"""Bootstrap a database from Yahoo Finance through ``yfinance`` (needs network).

One ``yfinance.download(..., group_by="ticker", auto_adjust=False)`` call fetches every
ticker; its frame has a two-level column index (``Ticker``, ``Price``) with ``Open, High,
Low, Close, Adj Close, Volume`` under each ticker, and one row per timestamp of the union
of the tickers' calendars (NaN where a ticker did not trade). A ticker that fails comes
back as all-NaN columns: it is reported, the others are written. Daily bars carry the
exchange's session date (naive) and are stored at 00:00 UTC of that date; intraday bars
carry an exchange time zone and are converted to UTC. Writes upsert, so running the same
bootstrap twice gives the same database; ``overwrite`` rebuilds the file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .importers import DataImportError, ImportResult, normalise_frame, write_series

__all__ = ["bootstrap", "split_download"]

log = logging.getLogger(__name__)

_FIELDS = ("Open", "High", "Low", "Close", "Adj Close", "Volume")
_CRYPTO_QUOTES = ("USD", "USDT", "USDC", "EUR", "BTC", "ETH")


def _yfinance() -> Any:
    try:
        import yfinance
    except ImportError:
        raise DataImportError(
            "the Yahoo bootstrap needs the `yfinance` package — "
            "pip install 'market-nn-plus-ultra[yahoo]'"
        ) from None
    return yfinance


def split_download(
    data: pd.DataFrame | None, tickers: Sequence[str]
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """``yfinance.download`` output → ``{ticker: frame}`` for tickers with rows, and the rest.

    Accepts both column layouts (``group_by="ticker"``: tickers on level 0;
    ``group_by="column"``: on level 1) and the flat columns of a single-ticker download
    with ``multi_level_index=False``. Each frame keeps the timestamp index and the price
    fields, with the rows where that ticker has no price removed.
    """
    wanted = [t.upper() for t in tickers]
    if data is None or data.empty:
        return {}, wanted
    if isinstance(data.columns, pd.MultiIndex):
        inner = set(data.columns.get_level_values(1))
        level = 0 if inner & set(_FIELDS) else 1
        present = set(data.columns.get_level_values(level))
        per = {t: data.xs(t, axis=1, level=level) for t in wanted if t in present}
    elif len(wanted) == 1:
        per = {wanted[0]: data}
    else:
        raise DataImportError(
            f"the download has flat columns {list(data.columns)[:8]} for {len(wanted)} "
            "tickers — call yfinance.download with group_by='ticker'"
        )
    frames, missing = {}, []
    for ticker in wanted:
        frame = per.get(ticker)
        prices = [c for c in _FIELDS[:5] if frame is not None and c in frame.columns]
        frame = None if frame is None else frame.dropna(subset=prices, how="all")
        if frame is None or frame.empty:
            missing.append(ticker)
        else:
            frames[ticker] = frame
    return frames, missing


def _asset_row(symbol: str) -> dict[str, str | None]:
    """A best guess from Yahoo's symbol conventions (^ index, =X FX, =F futures, -USD crypto)."""
    row: dict[str, str | None] = {"symbol": symbol, "exchange": "Yahoo Finance"}
    quote = symbol.rsplit("-", 1)[-1] if "-" in symbol else ""
    if symbol.startswith("^"):
        row["asset_class"] = "index"
    elif symbol.endswith("=X"):
        row.update(asset_class="fx", currency=symbol[3:6] if len(symbol) == 8 else None)
    elif symbol.endswith("=F"):
        row["asset_class"] = "future"
    elif quote in _CRYPTO_QUOTES:
        row.update(asset_class="crypto", currency=quote)
    else:
        row["asset_class"] = "equity"
    return row


def bootstrap(
    out_db: str | Path,
    tickers: Sequence[str],
    start: str,
    end: str,
    *,
    overwrite: bool = False,
    interval: str = "1d",
    client: Any = None,
    adjust: bool = True,
) -> ImportResult:
    """Download ``tickers`` from Yahoo Finance over [start, end) and upsert them into ``out_db``.

    ``client`` is anything with yfinance's ``download`` (default: the ``yfinance`` module).
    With ``adjust``, OHLC are scaled by ``Adj Close / Close`` (dividends included in
    returns). Tickers that return no rows are listed in the result's ``warnings``; if
    none returns rows, nothing is written and the error lists them.
    """
    wanted = list(dict.fromkeys(t.strip().upper() for t in tickers if t.strip()))
    if not wanted:
        raise DataImportError("--tickers: give at least one Yahoo symbol, e.g. --tickers SPY QQQ")
    client = client if client is not None else _yfinance()
    data = client.download(
        wanted,
        start=start,
        end=end,
        interval=interval,
        group_by="ticker",
        auto_adjust=False,
        actions=False,
        progress=False,
    )
    frames, missing = split_download(data, wanted)
    if not frames:
        raise DataImportError(
            f"Yahoo returned no rows for {', '.join(missing)} between {start} and {end} "
            f"(interval {interval}) — check the symbols (Yahoo spelling: BRK-B, ^GSPC, "
            "BTC-USD), the dates, and the network"
        )
    notes: tuple[str, ...] = ()
    if missing:
        notes = (f"no data from Yahoo for {', '.join(missing)} — skipped; check the symbols",)
        log.warning(notes[0])
    series = pd.concat(
        [
            normalise_frame(frame.assign(symbol=ticker), source=f"yahoo:{ticker}", adjust=adjust)
            for ticker, frame in frames.items()
        ],
        ignore_index=True,
    )
    provenance = {"kind": "yahoo", "interval": interval, "adjusted": adjust}
    result = write_series(
        out_db,
        series,
        assets=pd.DataFrame([_asset_row(t) for t in frames]),
        sources={t: provenance for t in frames},
        append=not overwrite,
        overwrite=overwrite,
    )
    return dataclasses.replace(result, warnings=notes + result.warnings)
