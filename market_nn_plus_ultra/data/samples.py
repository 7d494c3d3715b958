"""Real market data shipped inside permissively licensed PyPI packages (no network needed).

``SAMPLES`` maps a name to a :class:`SampleDataset`: where the data lives, its licence,
its symbols with their ``assets`` rows, and the quirks found by inspecting it. Loading a
sample returns the package's own frame reshaped for :func:`~.importers.normalise_frame`;
:func:`import_samples` writes one or more samples into a database.

Packages and licences (read from the installed distributions' metadata):
``arch`` — University of Illinois/NCSA Open Source License; ``matplotlib`` — the
Matplotlib License (PSF-based, OSI approved). Both come with the ``samples`` extra.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .importers import DataImportError, ImportResult, normalise_frame, write_series

__all__ = [
    "SAMPLES",
    "SampleAsset",
    "SampleDataset",
    "SampleUnavailableError",
    "describe_samples",
    "import_samples",
    "load_sample",
]

_EXTRA_HINT = "pip install 'market-nn-plus-ultra[samples]'"


class SampleUnavailableError(DataImportError):
    """The package that ships a sample is not installed; the message says how to add it."""


class SampleAsset(NamedTuple):
    """One ``assets`` row of a sample."""

    symbol: str
    name: str
    asset_class: str
    currency: str
    exchange: str
    sector: str | None = None


@dataclass(frozen=True)
class SampleDataset:
    """A real dataset inside an installed package: provenance, licence, symbols, quirks."""

    name: str
    description: str
    package: str
    license: str
    frequency: str
    assets: tuple[SampleAsset, ...]
    quirks: tuple[str, ...]
    loader: Callable[[], pd.DataFrame] = field(repr=False, compare=False)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(a.symbol for a in self.assets)

    def load(self) -> pd.DataFrame:
        """The package's frame with a ``symbol`` column, ready for ``normalise_frame``."""
        return self.loader()


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        package = name.split(".")[0]
        raise SampleUnavailableError(
            f"this sample ships with the `{package}` package, which is not installed — "
            f"{_EXTRA_HINT}"
        ) from None


def _arch(dataset: str) -> pd.DataFrame:
    return _module(f"arch.data.{dataset}").load()


def _mpl_file(filename: str) -> Path:
    return Path(_module("matplotlib.cbook").get_sample_data(filename, asfileobj=False))


def _arch_ohlcv(dataset: str, symbol: str) -> Callable[[], pd.DataFrame]:
    return lambda: _arch(dataset).reset_index().assign(symbol=symbol)


def _flat_bars(close: pd.DataFrame) -> pd.DataFrame:
    """Close-only prices as explicit flat bars (the quirk is stated, not inferred)."""
    price = close["close"]
    return close.assign(open=price, high=price, low=price, volume=0.0)


def _arch_close(dataset: str, column: str, symbol: str) -> Callable[[], pd.DataFrame]:
    # One price column with empty holiday rows; normalise_frame drops those.
    def load() -> pd.DataFrame:
        frame = _arch(dataset)[[column]].rename(columns={column: "close"}).reset_index()
        return _flat_bars(frame).assign(symbol=symbol)

    return load


def _goog() -> pd.DataFrame:
    with np.load(_mpl_file("goog.npz")) as archive:
        return pd.DataFrame(archive["price_data"]).assign(symbol="GOOG")


def _msft() -> pd.DataFrame:
    frame = pd.read_csv(_mpl_file("msft.csv"))
    frame["Date"] = pd.to_datetime(frame["Date"], format="%d-%b-%y")
    return frame.assign(symbol="MSFT")


def _stocks_monthly() -> pd.DataFrame:
    frame = pd.read_csv(_mpl_file("Stocks.csv"), comment="#", parse_dates=["Date"])
    frame = frame.dropna(how="all", subset=frame.columns[1:])
    # Yahoo labels a monthly bar with the month's first day but its close is the month's
    # last; relabel to the month end (or the download day for the last, partial month)
    # so no bar carries a price from its future.
    end = frame["Date"] + pd.offsets.MonthEnd(0)
    frame["Date"] = end.where(end <= frame["Date"].max(), frame["Date"].max())
    frame = frame.drop_duplicates("Date", keep="last")
    long = frame.melt(id_vars="Date", var_name="symbol", value_name="close")
    return _flat_bars(long.dropna(subset=["close"]))


_INDEX = "index"
SAMPLES: dict[str, SampleDataset] = {
    s.name: s
    for s in (
        SampleDataset(
            name="sp500",
            description="S&P 500 index, daily OHLCV 1999-01-04 – 2018-12-31 (Yahoo Finance via arch.data.sp500)",
            package="arch",
            license="NCSA",
            frequency="daily",
            assets=(SampleAsset("^GSPC", "S&P 500 Index", _INDEX, "USD", "SNP"),),
            quirks=(
                "price index: Adj Close equals Close on every row, so returns exclude dividends",
                "session dates stored at 00:00 UTC of the session date",
                "gaps are exchange closures: 2001-09-11..14, 2007-01-02, 2012-10-29..30, holidays",
                "volume is Yahoo's aggregate for the index, not a tradeable quantity",
            ),
            loader=_arch_ohlcv("sp500", "^GSPC"),
        ),
        SampleDataset(
            name="nasdaq",
            description="NASDAQ Composite index, daily OHLCV 1999-01-04 – 2018-12-31 (Yahoo Finance via arch.data.nasdaq)",
            package="arch",
            license="NCSA",
            frequency="daily",
            assets=(SampleAsset("^IXIC", "NASDAQ Composite Index", _INDEX, "USD", "NASDAQ"),),
            quirks=(
                "price index: Adj Close equals Close on every row, so returns exclude dividends",
                "volume is 0 on 2015-05-12 and 2018-01-09 (missing in the source)",
                "same session calendar as sp500 (closures 2001-09-11..14, 2007-01-02, 2012-10-29..30)",
            ),
            loader=_arch_ohlcv("nasdaq", "^IXIC"),
        ),
        SampleDataset(
            name="vix",
            description="CBOE Volatility Index, daily close 2014-01-03 – 2019-01-03 (arch.data.vix)",
            package="arch",
            license="NCSA",
            frequency="daily",
            assets=(SampleAsset("^VIX", "CBOE Volatility Index", _INDEX, "USD", "CBOE"),),
            quirks=(
                "close only: open = high = low = close, volume 0",
                "weekday calendar with 46 empty holiday rows, dropped on import",
                "not directly tradeable: use as context (regime), not as a P&L target",
            ),
            loader=_arch_close("vix", "vix", "^VIX"),
        ),
        SampleDataset(
            name="wti",
            description="WTI crude oil spot price (Cushing, OK), daily 1986-01-02 – 2019-01-03 (FRED DCOILWTICO via arch.data.wti)",
            package="arch",
            license="NCSA",
            frequency="daily",
            assets=(
                SampleAsset(
                    "WTI", "WTI crude oil spot (FRED DCOILWTICO)", "commodity", "USD", "spot"
                ),
            ),
            quirks=(
                "close only: open = high = low = close, volume 0",
                "weekday calendar with 290 empty holiday rows, dropped on import",
                "a spot assessment, not a futures contract: no roll, not directly tradeable",
            ),
            loader=_arch_close("wti", "DCOILWTICO", "WTI"),
        ),
        SampleDataset(
            name="goog",
            description="Google class A shares, daily OHLCV 2004-08-19 (IPO) – 2008-10-14 (matplotlib goog.npz)",
            package="matplotlib",
            license="Matplotlib License",
            frequency="daily",
            assets=(
                SampleAsset(
                    "GOOG",
                    "Google Inc. class A",
                    "equity",
                    "USD",
                    "NASDAQ",
                    "Communication Services",
                ),
            ),
            quirks=(
                "prices as traded then: not adjusted for the 2014 and 2022 splits",
                "adj_close equals close on every row (no dividends or splits in range)",
                "numpy record array, dates as datetime64[D]",
            ),
            loader=_goog,
        ),
        SampleDataset(
            name="msft",
            description="Microsoft shares, daily OHLCV 2003-06-19 – 2003-09-19, 65 sessions (matplotlib msft.csv)",
            package="matplotlib",
            license="Matplotlib License",
            frequency="daily",
            assets=(
                SampleAsset(
                    "MSFT",
                    "Microsoft Corporation",
                    "equity",
                    "USD",
                    "NASDAQ",
                    "Information Technology",
                ),
            ),
            quirks=(
                "rows are newest first; sorted on import",
                "dates like 19-Sep-03 (two-digit years)",
                "'Adj. Close*' is dividend-adjusted (×0.9942–0.9946); OHLC scaled by it on import",
            ),
            loader=_msft,
        ),
        SampleDataset(
            name="stocks_monthly",
            description="Monthly adjusted closes of 8 US stocks and 2 indices, 1990-01 – 2022-06 (matplotlib Stocks.csv)",
            package="matplotlib",
            license="Matplotlib License",
            frequency="monthly",
            assets=tuple(
                SampleAsset(sym, name, _INDEX if sym.startswith("^") else "equity", "USD", exch)
                for sym, name, exch in (
                    ("IBM", "International Business Machines", "NYSE"),
                    ("AAPL", "Apple Inc.", "NASDAQ"),
                    ("MSFT", "Microsoft Corporation", "NASDAQ"),
                    ("XRX", "Xerox", "NASDAQ"),
                    ("AMZN", "Amazon.com", "NASDAQ"),
                    ("DELL", "Dell Technologies", "NYSE"),
                    ("GOOGL", "Alphabet class A", "NASDAQ"),
                    ("ADBE", "Adobe", "NASDAQ"),
                    ("^GSPC", "S&P 500 Index", "SNP"),
                    ("^IXIC", "NASDAQ Composite Index", "NASDAQ"),
                )
            ),
            quirks=(
                "close only (adjusted for splits and dividends as of 2022): flat bars, volume 0",
                "source dates a month's close on its 1st; relabelled to the month end (no look-ahead)",
                "ragged: AMZN from 1997-06, GOOGL from 2004-09, DELL from 2016-09",
                "empty dividend rows dropped; the partial last month ends 2022-06-28",
            ),
            loader=_stocks_monthly,
        ),
    )
}


def _resolve(names: Sequence[str]) -> list[SampleDataset]:
    chosen = []
    for name in names:
        if name not in SAMPLES:
            hint = difflib.get_close_matches(name, list(SAMPLES), n=1)
            raise DataImportError(
                f"unknown sample {name!r}"
                + (f" — did you mean {hint[0]!r}?" if hint else "")
                + f" Samples: {', '.join(SAMPLES)} (list them with `plus-ultra data samples`)"
            )
        chosen.append(SAMPLES[name])
    return chosen


def load_sample(name: str) -> pd.DataFrame:
    """One sample as ``series`` rows: UTC ``timestamp``, ``symbol``, float OHLCV."""
    (sample,) = _resolve([name])
    return normalise_frame(sample.load(), source=f"sample:{name}")


def describe_samples() -> pd.DataFrame:
    """One row per sample: symbols, rows, first/last timestamp, package, licence, quirks.

    A sample whose package is missing has ``rows`` NaN and the install hint in ``note``.
    """
    rows = []
    for sample in SAMPLES.values():
        row = {
            "name": sample.name,
            "symbols": ", ".join(sample.symbols),
            "frequency": sample.frequency,
            "package": sample.package,
            "license": sample.license,
            "quirks": "; ".join(sample.quirks),
            "rows": np.nan,
            "start": pd.NaT,
            "end": pd.NaT,
            "note": "",
        }
        try:
            series = load_sample(sample.name)
            row.update(
                rows=len(series), start=series["timestamp"].min(), end=series["timestamp"].max()
            )
        except SampleUnavailableError as err:
            row["note"] = str(err)
        rows.append(row)
    return pd.DataFrame(rows)


def import_samples(
    out_db: str | Path,
    names: Sequence[str],
    *,
    append: bool = False,
    overwrite: bool = False,
) -> ImportResult:
    """Write the named samples (with their ``assets`` rows) into ``out_db``.

    Two samples that share a symbol (e.g. ``msft`` and ``stocks_monthly``) are refused:
    their bars would mix daily and monthly prices in one series.
    """
    chosen = _resolve(list(dict.fromkeys(names)))
    if not chosen:
        raise DataImportError(f"name at least one sample: {', '.join(SAMPLES)}")
    owner: dict[str, str] = {}
    for sample in chosen:
        for sym in sample.symbols:
            if sym in owner:
                raise DataImportError(
                    f"samples {owner[sym]!r} and {sample.name!r} both hold {sym} — "
                    "import them into separate databases"
                )
            owner[sym] = sample.name
    series = pd.concat([load_sample(s.name) for s in chosen], ignore_index=True)
    assets = pd.DataFrame([a._asdict() for s in chosen for a in s.assets])
    sources = {
        sym: {
            "kind": "sample",
            "sample": name,
            "package": SAMPLES[name].package,
            "license": SAMPLES[name].license,
        }
        for sym, name in owner.items()
    }
    return write_series(
        out_db, series, assets=assets, sources=sources, append=append, overwrite=overwrite
    )
