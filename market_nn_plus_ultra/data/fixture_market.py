"""Price, volume and corporate-action paths of the synthetic fixture.

Each asset class shares a Markov regime chain (bull / bear / high_vol) and a common
factor; each symbol's standardised shock mixes the factor with its own Student-t
innovation, ``u = ρ f + √(1-ρ²) e`` (unit variance, i.i.d. over time given the regime).
Volatility follows an EGARCH(1,1)-style log-variance recursion driven by past shocks
(a linear filter, so it runs as one ``scipy.signal.lfilter`` call), times the regime
level and an intraday seasonal profile. The log return of bar ``t`` (close ``t-1`` →
close ``t``) is ``μ - σ_t²/2 + σ_t u_t``: its conditional mean is constant, so nothing
observable at ``t-1`` predicts it (unless ``regime_drift`` > 0 gives regimes a trend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .fixture_calendar import Calendar, Instrument, symbol_rng

__all__ = [
    "REGIMES",
    "ClassShocks",
    "SymbolPath",
    "class_shocks",
    "corporate_actions",
    "equal_weight_benchmarks",
    "simulate_symbol",
]

REGIMES = ("bull", "bear", "high_vol")
_REGIME_DAYS = np.array([120.0, 50.0, 15.0])  # mean stay in sessions (days for crypto)
_REGIME_NEXT = np.array([[0.0, 0.7, 0.3], [0.6, 0.0, 0.4], [0.5, 0.5, 0.0]])
_REGIME_VOL = np.array([0.8, 1.25, 2.0])  # relative level; normalised in _regime_vol
_REGIME_CORR = np.array([1.0, 1.15, 1.3])  # correlations rise in stress
_REGIME_DRIFT = np.array([1.0, -1.5, -0.5])  # × regime_drift, annualised

# Daily EGARCH parameters (persistence, |shock| loading, leverage); rescaled per bar.
_EGARCH_BETA, _EGARCH_ALPHA = 0.95, 0.15
_LEVERAGE = {"equity": -0.08, "crypto": -0.03}
_TAIL_DOF = {"equity": 5.0, "crypto": 4.5}
_ANNUAL_DRIFT = {"equity": 0.06, "crypto": 0.2}
_OVERNIGHT_SHARE = 0.2  # share of an equity's daily variance earned overnight


def _std_t(rng: np.random.Generator, dof: float, size: int) -> np.ndarray:
    """Student-t draws scaled to unit variance (fat tails: excess kurtosis 6/(dof-4))."""
    return rng.standard_t(dof, size) / np.sqrt(dof / (dof - 2.0))


def _regime_vol() -> np.ndarray:
    """Regime volatility multipliers scaled so the long-run variance multiplier is 1."""
    evals, evecs = np.linalg.eig(_REGIME_NEXT.T)
    jump = np.real(evecs[:, np.argmin(np.abs(evals - 1.0))])
    share = jump / jump.sum() * _REGIME_DAYS
    share /= share.sum()
    return _REGIME_VOL / np.sqrt(share @ _REGIME_VOL**2)


@dataclass(frozen=True)
class ClassShocks:
    """What the symbols of one asset class share: regime per bar and the factor shock."""

    regime: np.ndarray  # (rows + 1,) int8 index into REGIMES
    factor: np.ndarray  # (rows + 1,) unit-variance Student-t


def class_shocks(asset_class: str, cal: Calendar, seed: int) -> ClassShocks:
    """Regime chain and common factor for one class; one bar past the end for look-ahead."""
    rng = symbol_rng(seed, "class", asset_class)
    n = len(cal.timestamps) + 1
    regime = np.empty(n, dtype=np.int8)
    # Loop over regime spells (tens of them), not over bars.
    pos, state = 0, 0
    while pos < n:
        stay = int(rng.geometric(1.0 / (_REGIME_DAYS[state] * cal.slots_per_day)))
        regime[pos : pos + stay] = state
        pos += stay
        state = int(rng.choice(3, p=_REGIME_NEXT[state]))
    return ClassShocks(regime, _std_t(rng, _TAIL_DOF[asset_class], n))


def _seasonality(inst: Instrument, cal: Calendar) -> tuple[np.ndarray, np.ndarray]:
    """Per-slot (variance weight, volume weight); variance weights average to 1 per day."""
    phase = (np.arange(cal.slots_per_day) + 0.5) / cal.slots_per_day
    if not cal.intraday or cal.slots_per_day == 1:
        return np.ones(cal.slots_per_day), np.ones(cal.slots_per_day)
    if inst.asset_class == "equity":
        # U-shape: heavy trading at the open and into the close, quiet at lunch.
        var = 1 + 1.2 * np.exp(-phase / 0.08) + 0.6 * np.exp(-(1 - phase) / 0.08)
        vol = 1 + 2.0 * np.exp(-phase / 0.1) + 1.5 * np.exp(-(1 - phase) / 0.1)
        var = var / var.mean() * (1 - _OVERNIGHT_SHARE)
        var[0] += _OVERNIGHT_SHARE * cal.slots_per_day  # the first bar carries the night
    else:
        # 24/7 market: activity peaks while Europe and the US overlap (~14:00 UTC).
        var = 1 + 0.3 * np.sin(2 * np.pi * (phase - 0.35))
        vol = 1 + 0.4 * np.sin(2 * np.pi * (phase - 0.35))
    return var / var.mean(), vol / vol.mean()


@dataclass(frozen=True)
class SymbolPath:
    """One symbol's simulated bars (all arrays (rows,) unless noted)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    shock: np.ndarray  # (rows + 1,) standardised shock u; u[t+1] drives the t → t+1 return
    cond_vol: np.ndarray  # annualised volatility of the next bar, known at t's close
    regime: np.ndarray  # int8 index into REGIMES


def _gap_share(inst: Instrument, cal: Calendar, var_w: np.ndarray) -> np.ndarray:
    """Per bar, the share of the return earned between the previous close and this open."""
    if inst.asset_class == "crypto":
        return np.zeros(len(cal.slot))
    if not cal.intraday or cal.slots_per_day == 1:
        return np.full(len(cal.slot), _OVERNIGHT_SHARE)
    share = np.where(cal.slot == 0, _OVERNIGHT_SHARE * cal.slots_per_day / var_w[0], 0.0)
    return share


def simulate_symbol(
    inst: Instrument,
    cal: Calendar,
    shocks: ClassShocks,
    seed: int,
    regime_drift: float = 0.0,
    autocorr: float = 0.0,
) -> SymbolPath:
    """OHLCV of one symbol: consistent bars (low ≤ open, close ≤ high), prices > 0.

    ``autocorr`` makes the unit-variance return shocks an AR(1) with that lag-1
    autocorrelation (a linear edge a model can learn); 0 leaves them independent.
    """
    from scipy.signal import lfilter  # scipy.signal is slow to import: load it on use

    rng = symbol_rng(seed, "path", inst.symbol)
    rows = len(cal.timestamps)
    n = cal.slots_per_day
    regime = shocks.regime
    rho = np.clip(inst.factor_loading * _REGIME_CORR[regime], 0.0, 0.97)
    idio = _std_t(rng, _TAIL_DOF[inst.asset_class], rows + 1)
    u = rho * shocks.factor + np.sqrt(1 - rho**2) * idio  # (rows + 1,) unit variance
    if autocorr:  # AR(1) shocks of unit variance: corr(u_t, u_{t-1}) = autocorr
        u = lfilter([np.sqrt(1 - autocorr**2)], [1.0, -autocorr], u)

    # EGARCH: h_t = β h_{t-1} + α(|u_{t-1}| - E|u|) + γ u_{t-1}; per-bar parameters keep
    # the daily persistence and the stationary variance of h.
    beta = _EGARCH_BETA ** (1.0 / n)
    scale = np.sqrt((1 - beta**2) / (1 - _EGARCH_BETA**2))
    drive = _EGARCH_ALPHA * scale * (np.abs(u) - np.abs(u).mean())
    drive += _LEVERAGE[inst.asset_class] * scale * u
    h = lfilter([0.0, 1.0], [1.0, -beta], drive)  # (rows + 1,), h_0 = 0
    level = _regime_vol()[regime[:rows]] * np.exp(h[:rows] / 2)  # (rows,)

    var_w, vol_w = _seasonality(inst, cal)
    bar_vol = inst.annual_vol / np.sqrt(cal.bars_per_year)
    sigma = bar_vol * level * np.sqrt(var_w[cal.slot])
    drift = (_ANNUAL_DRIFT[inst.asset_class] + regime_drift * _REGIME_DRIFT[regime[:rows]]) / (
        cal.bars_per_year
    )
    log_ret = drift - sigma**2 / 2 + sigma * u[:rows]
    log_ret[0] = 0.0  # the first bar opens the series

    # Open = previous close moved by the gap share of the return (the overnight for
    # equities) plus tick noise; high/low extend the open-close body by the intrabar range.
    kappa = _gap_share(inst, cal, var_w)
    gap = kappa * log_ret + 0.03 * sigma * rng.standard_normal(rows)
    log_close = np.log(inst.start_price) + np.cumsum(log_ret)
    log_open = np.concatenate([[np.log(inst.start_price)], log_close[:-1]]) + gap
    intrabar = sigma * np.sqrt(1 - kappa)
    log_high = np.maximum(log_open, log_close) + intrabar * rng.exponential(0.35, rows)
    log_low = np.minimum(log_open, log_close) - intrabar * rng.exponential(0.35, rows)

    # Volume: seasonal, louder on big moves and in stressed regimes, persistent level.
    phi = 0.8 ** (1.0 / n)
    persistent = lfilter([0.25 * np.sqrt(1 - phi**2)], [1.0, -phi], rng.standard_normal(rows))
    log_volume = (
        np.log(inst.daily_volume / n)
        + np.log(vol_w[cal.slot])
        + 0.45 * (np.abs(u[:rows]) - np.abs(u).mean())
        + 0.5 * np.log(_regime_vol()[regime[:rows]])
        + persistent
        + 0.2 * rng.standard_normal(rows)
    )
    volume = np.exp(log_volume)
    volume = np.round(volume) if inst.asset_class == "equity" else np.round(volume, 4)
    return SymbolPath(
        open=np.exp(log_open),
        high=np.exp(log_high),
        low=np.exp(log_low),
        close=np.exp(log_close),
        volume=volume,
        shock=u,
        # The next bar's EGARCH level (set by shocks up to t) at the current regime.
        cond_vol=inst.annual_vol * _regime_vol()[regime[:rows]] * np.exp(h[1:] / 2),
        regime=regime[:rows],
    )


def corporate_actions(
    inst: Instrument, cal: Calendar, close: np.ndarray, seed: int
) -> pd.DataFrame:
    """One split and quarterly dividends for an equity (none for crypto).

    Series prices are back-adjusted for both (the last bar is the raw price), so the
    events leave no jump in the returns. ``split`` values are the ratio (2.0 = 2-for-1);
    ``dividend`` values are cash per share in the raw (unadjusted) price of the day.
    Events fall on the first bar of a session (the ex-date open).
    """
    columns = ["symbol", "timestamp", "kind", "value"]
    if inst.asset_class != "equity":
        return pd.DataFrame(columns=columns)
    rng = symbol_rng(seed, "actions", inst.symbol)
    starts = np.flatnonzero(cal.slot == 0)
    starts = starts[starts > 0]  # an action needs the previous close
    n = len(starts)
    factor = np.ones(len(close))
    frames = []
    if n >= 3:
        at = starts[rng.integers(n // 5, max(4 * n // 5, n // 5 + 1))]
        ratio = float(rng.choice([2.0, 3.0, 4.0], p=[0.6, 0.2, 0.2]))
        factor[at] *= ratio
        frames.append(("split", np.array([at]), np.array([ratio])))
    if inst.dividend_yield > 0:
        # Quarterly ex-dates: every 63 sessions from a random first one.
        at = starts[np.arange(int(rng.integers(5, 63)), n, 63)]
        cut = inst.dividend_yield / 4 * np.exp(0.1 * rng.standard_normal(len(at)))
        factor[at] /= 1 - cut
        frames.append(("dividend", at, cut))
    # raw_t = adjusted_t × Π_{events after t} factor
    after = np.append(np.cumprod(factor[::-1])[::-1][1:], 1.0)
    parts = []
    for kind, at, value in frames:
        if kind == "dividend":
            value = value * close[at - 1] * after[at - 1]
        parts.append(
            pd.DataFrame(
                {
                    "symbol": inst.symbol,
                    "timestamp": cal.timestamps[at],
                    "kind": kind,
                    "value": value,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def equal_weight_benchmarks(series: pd.DataFrame, classes: dict[str, str]) -> pd.DataFrame:
    """Equal-weight index levels (start 100, rebalanced every bar) on the union of bars.

    ``equal_weight`` spans every symbol, ``equal_weight_<class>`` each asset class. A
    symbol between its first and last bar that does not trade at a timestamp (an equity
    overnight) contributes a zero return there.
    """
    closes = series.pivot(index="timestamp", columns="symbol", values="close")
    alive = closes.ffill().where(closes.bfill().notna())
    returns = alive.pct_change(fill_method=None)
    groups = {"equal_weight": list(closes.columns)}
    for cls in sorted(set(classes.values())):
        groups[f"equal_weight_{cls}"] = [s for s in closes.columns if classes[s] == cls]
    frames = []
    for name, members in groups.items():
        mean = returns[members].mean(axis=1).fillna(0.0)
        level = 100.0 * (1.0 + mean).cumprod()
        # The overall index lives on every bar; a class index on its own bars only.
        trading = closes if name == "equal_weight" else closes[members]
        level = level[trading.notna().any(axis=1)]
        frames.append(pd.DataFrame({"timestamp": level.index, "name": name, "value": level.values}))
    return pd.concat(frames, ignore_index=True)
