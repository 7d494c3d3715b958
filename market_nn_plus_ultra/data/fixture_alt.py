"""Alternative-data side tables of the synthetic fixture.

Every value is stamped no earlier than the moment it could be known: daily snapshots at
the close that produced them, funding at its 8-hour fixing from bars already closed, the
macro calendar at 08:30 New York. Only ``alt_sentiment.sentiment_score`` may carry
information about the future, and only when a signal is planted:
``score_t = IC · u_{t+1} + √(1 - IC²) · ε_t`` with ``u_{t+1}`` the standardised shock of
the next return and ``ε_t`` i.i.d. N(0, 1), so its Pearson correlation with the
standardised next return is exactly ``IC`` in expectation and nothing else in the
database adds to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fixture_calendar import NEW_YORK, Calendar, Instrument, nyse_holidays, symbol_rng
from .fixture_market import SymbolPath

__all__ = [
    "funding_table",
    "implied_vol_table",
    "macro_table",
    "onchain_table",
    "sentiment_table",
]


_FUNDING_EVERY = pd.Timedelta(hours=8)
_FOMC_MONTHS = (1, 3, 5, 6, 7, 9, 11, 12)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary-scale AR(1) noise with lag-1 autocorrelation ``phi`` and s.d. ``sd``."""
    from scipy.signal import lfilter  # scipy.signal is slow to import: load it on use

    return lfilter([sd * np.sqrt(1 - phi**2)], [1.0, -phi], rng.standard_normal(n))


def macro_table(first: pd.Timestamp, last: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Global macro calendar: one row per US business day at 08:30 New York.

    ``rate_10y`` is a persistent 10-year yield in percent; ``cpi_surprise`` is the CPI
    print minus consensus (percentage points) on the monthly release day and 0.0 on other
    days; ``event_flag`` is 1.0 on CPI and FOMC days.
    """
    start, end = first.tz_convert(NEW_YORK).normalize(), last.tz_convert(NEW_YORK).normalize()
    start, end = start.tz_localize(None), end.tz_localize(None)
    days = pd.bdate_range(start, end)
    days = days[~days.isin(nyse_holidays(start, end))]
    rng = symbol_rng(seed, "alt", "macro")
    n = len(days)
    months = days.year * 12 + days.month
    # CPI: the first business day on or after the 10th of each month.
    after_tenth = np.asarray(days.day >= 10)
    cpi = after_tenth & ~pd.Series(months).where(after_tenth).duplicated().to_numpy()
    fomc = (
        np.asarray(days.month.isin(_FOMC_MONTHS))
        & np.asarray((days.day >= 15) & (days.day <= 21))
        & np.asarray(days.day_of_week == 2)
    )
    surprise = np.where(cpi, np.round(0.1 * rng.standard_normal(n), 2), 0.0)
    stamps = (days + pd.Timedelta(hours=8, minutes=30)).tz_localize(NEW_YORK).tz_convert("UTC")
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "rate_10y": 2.5 + _ar1(rng, n, 0.998, 0.6),
            "cpi_surprise": surprise,
            "event_flag": (cpi | fomc).astype(np.float64),
        }
    )


def funding_table(inst: Instrument, cal: Calendar, path: SymbolPath, seed: int) -> pd.DataFrame:
    """Perpetual-swap funding (crypto only) at 00:00, 08:00 and 16:00 UTC, rate per 8h.

    The rate leans on the trailing 8-hour return of bars already closed at the fixing.
    """
    if inst.asset_class != "crypto":
        return pd.DataFrame(columns=["timestamp", "symbol", "funding_rate"])
    closed_at = cal.timestamps + cal.freq
    stamps = pd.date_range(
        cal.timestamps[0].ceil(_FUNDING_EVERY), closed_at[-1].floor(_FUNDING_EVERY), freq="8h"
    )
    now = np.searchsorted(closed_at, stamps, side="right") - 1
    before = np.searchsorted(closed_at, stamps - _FUNDING_EVERY, side="right") - 1
    close = path.close
    trailing = np.where(
        (now >= 0) & (before >= 0),
        close[np.maximum(now, 0)] / close[np.maximum(before, 0)] - 1.0,
        0.0,
    )
    rng = symbol_rng(seed, "alt", "funding", inst.symbol)
    rate = 1e-4 + 0.02 * trailing + _ar1(rng, len(stamps), 0.9, 2e-4)
    return pd.DataFrame(
        {"timestamp": stamps, "symbol": inst.symbol, "funding_rate": np.clip(rate, -0.0075, 0.0075)}
    )


def sentiment_table(
    inst: Instrument, cal: Calendar, path: SymbolPath, seed: int, ic: float = 0.0
) -> pd.DataFrame:
    """News sentiment at every bar: a standardised score and the bar's article count.

    ``sentiment_score`` at bar ``t`` correlates with the next return's standardised shock
    with coefficient ``ic`` (0 = pure noise). ``news_volume`` rises with the size of the
    bar's own move and, for equities, piles up overnight into the session's first bar.
    """
    rng = symbol_rng(seed, "alt", "sentiment", inst.symbol)
    rows = len(cal.timestamps)
    score = ic * path.shock[1:] + np.sqrt(1.0 - ic**2) * rng.standard_normal(rows)
    move = np.abs(path.shock[:rows])
    rate = 40.0 / cal.slots_per_day * np.exp(0.6 * (move - move.mean()))
    if inst.asset_class == "equity" and cal.intraday:
        rate = np.where(cal.slot == 0, 4.0 * rate, rate)
    return pd.DataFrame(
        {
            "timestamp": cal.timestamps,
            "symbol": inst.symbol,
            "sentiment_score": score,
            "news_volume": rng.poisson(rate).astype(np.float64),
        }
    )


def implied_vol_table(inst: Instrument, cal: Calendar, path: SymbolPath, seed: int) -> pd.DataFrame:
    """Daily options-implied volatility at each day's close (annualised, decimal).

    ``iv_30d`` is the conditional volatility known at the close times a variance risk
    premium; ``iv_skew`` (25-delta put minus call vol) is more negative outside bull
    regimes and for equities.
    """
    rng = symbol_rng(seed, "alt", "implied_vol", inst.symbol)
    at, stamps = cal.daily_rows()
    n = len(at)
    stressed = (path.regime[at] != 0).astype(np.float64)
    iv = path.cond_vol[at] * 1.1 * np.exp(0.05 * rng.standard_normal(n))
    base, tilt = (-0.12, -0.08) if inst.asset_class == "equity" else (-0.01, -0.03)
    skew = base + tilt * stressed + 0.02 * rng.standard_normal(n)
    return pd.DataFrame({"timestamp": stamps, "symbol": inst.symbol, "iv_30d": iv, "iv_skew": skew})


def onchain_table(inst: Instrument, cal: Calendar, path: SymbolPath, seed: int) -> pd.DataFrame:
    """Daily on-chain activity (crypto only) at each UTC day's end.

    ``active_addresses`` is a persistent count, lower at weekends; ``exchange_netflow``
    (coins moved onto exchanges) rises after the day's sell-offs.
    """
    if inst.asset_class != "crypto":
        return pd.DataFrame(columns=["timestamp", "symbol", "active_addresses", "exchange_netflow"])
    rng = symbol_rng(seed, "alt", "onchain", inst.symbol)
    at, stamps = cal.daily_rows()
    n = len(at)
    log_close = np.log(path.close[at])
    day_return = np.diff(log_close, prepend=np.log(path.open[0]))
    z = day_return / (inst.annual_vol / np.sqrt(365.0))
    weekend = np.asarray(cal.timestamps[at].day_of_week >= 5)  # the day the row summarises
    base = {"BTC-USD": 9e5, "ETH-USD": 5e5}.get(inst.symbol.upper(), 5e4)
    active = base * np.exp(_ar1(rng, n, 0.97, 0.1) - 0.08 * weekend)
    netflow = 0.02 * inst.daily_volume * (-0.5 * z + rng.standard_normal(n))
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "symbol": inst.symbol,
            "active_addresses": np.round(active),
            "exchange_netflow": netflow,
        }
    )
