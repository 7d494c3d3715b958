"""Trading calendars and instrument reference data for the synthetic fixture.

Equities trade the New York session (weekdays except NYSE holidays, 09:30–16:00
America/New_York, stored in UTC) at intraday frequencies and one bar per business day
at daily frequency; crypto trades 24/7. Bars are labelled by their OPEN time (the
15-minute bar stamped 09:30 covers 09:30–09:45), as most intraday vendors do; daily
bars are stamped 00:00 UTC of their date.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

__all__ = [
    "CRYPTO_QUOTES",
    "NEW_YORK",
    "Calendar",
    "Instrument",
    "asset_class_of",
    "build_calendar",
    "instrument",
    "nyse_holidays",
    "parse_freq",
    "symbol_rng",
]

NEW_YORK = "America/New_York"
#: A symbol ``BASE-QUOTE`` whose quote is one of these is crypto; anything else is an equity.
CRYPTO_QUOTES = ("USD", "USDT", "USDC", "EUR", "GBP", "BTC", "ETH")

_SESSION_OPEN = pd.Timedelta(hours=9, minutes=30)
_SESSION_CLOSE = pd.Timedelta(hours=16)
_DAY = pd.Timedelta(days=1)
# The holiday rules are defined up to this date (pandas' calendar horizon).
_LAST_CALENDAR_DAY = pd.Timestamp("2200-12-31")


class _NyseHolidayCalendar(AbstractHolidayCalendar):
    # NYSE full-day closures; New Year's Day on a Saturday is not observed on the Friday.
    rules = [  # noqa: RUF012 - pandas reads this class attribute
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=nearest_workday),
    ]


def nyse_holidays(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """NYSE full-day holidays between two dates (naive dates, inclusive)."""
    return _NyseHolidayCalendar().holidays(start, end)


def parse_freq(freq: str) -> pd.Timedelta:
    """A bar frequency ('15min', '1h', '1D', 'D') → Timedelta; at most one day."""
    try:
        delta = pd.Timedelta(freq)
    except ValueError:
        try:
            delta = pd.Timedelta("1" + freq)
        except ValueError:
            raise ValueError(
                f"--freq {freq!r} is not a bar frequency — use e.g. '1min', '15min', '1h' or '1D'"
            ) from None
    if delta <= pd.Timedelta(0) or delta > _DAY:
        raise ValueError(f"--freq {freq!r} must be positive and at most one day ('1D')")
    return delta


def asset_class_of(symbol: str) -> str:
    """'crypto' for ``BASE-QUOTE`` symbols quoted in a currency of CRYPTO_QUOTES, else 'equity'."""
    base, _, quote = symbol.rpartition("-")
    return "crypto" if base and quote.upper() in CRYPTO_QUOTES else "equity"


@dataclass(frozen=True)
class Instrument:
    """Reference data and simulation parameters of one symbol (annualised, decimal units)."""

    symbol: str
    asset_class: str
    name: str
    sector: str
    currency: str
    exchange: str
    start_price: float
    annual_vol: float
    dividend_yield: float
    factor_loading: float
    daily_volume: float  # in shares (equities) or coins (crypto), post-split units


# name, sector, exchange, start price, annual vol, dividend yield, daily volume
_KNOWN: dict[str, tuple[str, str, str, float, float, float, float]] = {
    "SPY": ("SPDR S&P 500 ETF Trust", "Broad Market", "NYSE Arca", 250.0, 0.17, 0.015, 7e7),
    "QQQ": ("Invesco QQQ Trust", "Technology", "NASDAQ", 155.0, 0.22, 0.006, 4e7),
    "IWM": ("iShares Russell 2000 ETF", "Small Cap", "NYSE Arca", 135.0, 0.23, 0.012, 2.5e7),
    "DIA": ("SPDR Dow Jones Industrial Average ETF", "Broad Market", "NYSE Arca", 235.0, 0.16,
            0.018, 3e6),
    "AAPL": ("Apple Inc.", "Technology", "NASDAQ", 40.0, 0.28, 0.007, 1e8),
    "MSFT": ("Microsoft Corp.", "Technology", "NASDAQ", 100.0, 0.26, 0.009, 3e7),
    "BTC-USD": ("Bitcoin", "Digital Assets", "Coinbase", 3800.0, 0.65, 0.0, 3e4),
    "ETH-USD": ("Ethereum", "Digital Assets", "Coinbase", 140.0, 0.85, 0.0, 4e5),
    "SOL-USD": ("Solana", "Digital Assets", "Coinbase", 1.5, 1.1, 0.0, 2e6),
}  # fmt: skip
_SECTORS = ("Technology", "Financials", "Health Care", "Energy", "Industrials", "Consumer")
_EXCHANGES = ("NYSE", "NASDAQ")


def symbol_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator for one (seed, key…) stream: a symbol's path does not depend on the others."""
    words = [zlib.crc32(key.encode()) for key in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def instrument(symbol: str, seed: int) -> Instrument:
    """Reference data for ``symbol``: well-known tickers get realistic values, others draws."""
    rng = symbol_rng(seed, "instrument", symbol)
    cls = asset_class_of(symbol)
    # The loading on the class factor is always drawn so that correlations vary by seed.
    loading = rng.uniform(0.65, 0.9) if cls == "equity" else rng.uniform(0.6, 0.85)
    if symbol.upper() in _KNOWN:
        name, sector, exchange, price, vol, yld, volume = _KNOWN[symbol.upper()]
    elif cls == "crypto":
        name, sector, exchange = f"{symbol} (synthetic)", "Digital Assets", "Coinbase"
        price = float(np.exp(rng.uniform(np.log(0.5), np.log(500.0))))
        vol, yld = rng.uniform(0.6, 1.1), 0.0
        volume = 5e7 / price
    else:
        name = f"{symbol} (synthetic)"
        sector = _SECTORS[zlib.crc32(symbol.encode()) % len(_SECTORS)]
        exchange = _EXCHANGES[zlib.crc32(symbol.encode()) % len(_EXCHANGES)]
        price = float(np.exp(rng.uniform(np.log(20.0), np.log(400.0))))
        vol, yld = rng.uniform(0.18, 0.4), rng.uniform(0.0, 0.03)
        volume = 2e8 / price
    quote = symbol.rpartition("-")[2].upper() if cls == "crypto" else "USD"
    return Instrument(
        symbol=symbol,
        asset_class=cls,
        name=name,
        sector=sector,
        currency=quote,
        exchange=exchange,
        start_price=float(price),
        annual_vol=float(vol),
        dividend_yield=float(yld),
        factor_loading=float(loading),
        daily_volume=float(volume),
    )


@dataclass(frozen=True)
class Calendar:
    """The bars of one asset class: ``rows`` timestamps plus where each sits in its day.

    ``slot`` is the bar's position in its session (equities) or UTC day (crypto), in
    ``[0, slots_per_day)``; ``day`` numbers the sessions/days from 0.
    """

    timestamps: pd.DatetimeIndex  # (rows,) UTC
    slot: np.ndarray  # (rows,) int
    day: np.ndarray  # (rows,) int
    slots_per_day: int
    bars_per_year: float
    freq: pd.Timedelta

    @property
    def intraday(self) -> bool:
        return self.freq < _DAY

    def daily_rows(self) -> tuple[np.ndarray, pd.DatetimeIndex]:
        """Bar index of each day's last bar and the time its close is known.

        Intraday: the last bar of each session / UTC day, stamped at its close (the
        session close 16:00 New York, midnight UTC for crypto). Daily: every bar, at its
        own timestamp (a daily bar stamped with its date is known at that day's end).
        """
        if not self.intraday:
            return np.arange(len(self.timestamps)), self.timestamps
        last = np.flatnonzero(np.append(self.day[1:] != self.day[:-1], True))
        return last, self.timestamps[last] + self.freq


def _session_days(start: pd.Timestamp, n_days: int) -> pd.DatetimeIndex:
    """The first ``n_days`` NYSE sessions on or after ``start`` (naive dates)."""
    # 252 sessions in 365 days; the slack covers holidays and short spans.
    end = start + pd.Timedelta(days=int(n_days * 1.5) + 14)
    if end > _LAST_CALENDAR_DAY:
        raise ValueError(
            f"the equity calendar would run past {_LAST_CALENDAR_DAY.date()} — lower --rows "
            "or use an intraday --freq"
        )
    days = pd.bdate_range(start, end)
    days = days[~days.isin(nyse_holidays(start, end))]
    return days[:n_days]


def build_calendar(
    asset_class: str, rows: int, freq: pd.Timedelta, start: pd.Timestamp
) -> Calendar:
    """``rows`` bars from ``start`` (a naive UTC date) for 'equity' or 'crypto'."""
    start = pd.Timestamp(start).normalize()
    if asset_class == "equity" and freq < _DAY:
        offsets = pd.timedelta_range(_SESSION_OPEN, _SESSION_CLOSE - pd.Timedelta(1), freq=freq)
        per_day = len(offsets)
        days = _session_days(start, -(-rows // per_day))
        local = (days.to_numpy()[:, None] + offsets.to_numpy()[None, :]).ravel()[:rows]
        stamps = pd.DatetimeIndex(local).tz_localize(NEW_YORK).tz_convert("UTC")
        index = np.arange(rows)
        return Calendar(stamps, index % per_day, index // per_day, per_day, 252.0 * per_day, freq)
    if asset_class == "equity":
        days = _session_days(start, rows)
        stamps = days.tz_localize("UTC")
        return Calendar(stamps, np.zeros(rows, dtype=int), np.arange(rows), 1, 252.0, freq)
    stamps = pd.date_range(start.tz_localize("UTC"), periods=rows, freq=freq)
    per_day = max(1, round(_DAY / freq))
    since = (stamps - stamps[0].normalize()) // freq
    slot = np.asarray(since, dtype=np.int64) % per_day
    day = np.asarray((stamps - stamps[0].normalize()) // _DAY, dtype=np.int64)
    return Calendar(stamps, slot, day, per_day, 365.0 * per_day, freq)
