"""Synthetic market databases: realistic panels with known ground truth.

The generator writes what a real store holds — ``assets``, the OHLCV ``series``,
``corporate_actions``, ``benchmarks``, the ``alt_*`` side tables — with the stylised
facts of real markets (fat tails, volatility clustering, regimes, factor correlation,
session calendars, intraday seasonality) and one optional, exactly known signal::

    tables = generate_fixture(["SPY", "BTC-USD"], rows=2048, freq="15min", alt_features=4,
                              seed=7, planted_signal=0.1)
    write_fixture("data/fixture.db", ["SPY", "BTC-USD"], rows=2048, planted_signal=0.1)

Series prices and volumes are back-adjusted for splits and dividends (the last bar is the
raw price), so close-to-close returns are total returns; ``corporate_actions`` lists the
events. Without a planted signal nothing in the database predicts future returns beyond
their unconditional mean. The ground truth (parameters, the regime spells the generator
used, the planted signal) is in ``metadata``. See docs/fixtures.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from .fixture_alt import (
    funding_table,
    implied_vol_table,
    macro_table,
    onchain_table,
    sentiment_table,
)
from .fixture_calendar import Calendar, build_calendar, instrument, parse_freq
from .fixture_config import ALT_TABLES, DEFAULT_SYMBOLS, FixtureConfig
from .fixture_market import (
    REGIMES,
    SymbolPath,
    class_shocks,
    corporate_actions,
    equal_weight_benchmarks,
    simulate_symbol,
)
from .store import StoreError, write_database

__all__ = [
    "ALT_TABLES",
    "FixtureConfig",
    "fixture_metadata",
    "generate_fixture",
    "write_fixture",
]


def _config(**params: object) -> FixtureConfig:
    """Validate parameters, naming the CLI flag of any bad one."""
    try:
        return FixtureConfig.model_validate(params)
    except ValidationError as err:
        lines = []
        for item in err.errors():
            flag = "--" + str(item["loc"][0]).replace("_", "-") if item["loc"] else "fixture"
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{flag}: {message} (got {item.get('input')!r})")
        raise ValueError("invalid fixture parameters:\n  " + "\n  ".join(lines)) from None


def _start_date(cfg: FixtureConfig) -> pd.Timestamp:
    stamp = pd.Timestamp(cfg.start)
    return (stamp.tz_convert("UTC").tz_localize(None) if stamp.tz else stamp).normalize()


def _series_frame(symbol: str, cal: Calendar, path: SymbolPath) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": cal.timestamps,
            "symbol": symbol,
            "open": path.open,
            "high": path.high,
            "low": path.low,
            "close": path.close,
            "volume": path.volume,
        }
    )


def _alt_tables(cfg: FixtureConfig) -> list[str]:
    chosen = list(ALT_TABLES[: cfg.alt_features])
    if cfg.planted_signal is not None and "alt_sentiment" not in chosen:
        chosen.append("alt_sentiment")
    return chosen


def _concat(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Concatenate non-empty frames, sorted by the table's key for sequential inserts."""
    kept = [f for f in frames if len(f)]
    if not kept:
        return frames[0].iloc[0:0] if frames else pd.DataFrame()
    return pd.concat(kept, ignore_index=True).sort_values(keys, kind="stable", ignore_index=True)


def _generate(cfg: FixtureConfig) -> dict[str, pd.DataFrame]:
    freq = parse_freq(cfg.freq)
    start = _start_date(cfg)
    insts = {s: instrument(s, cfg.seed) for s in cfg.symbols}
    classes = {s: inst.asset_class for s, inst in insts.items()}
    cals = {c: build_calendar(c, cfg.rows, freq, start) for c in sorted(set(classes.values()))}
    shocks = {c: class_shocks(c, cal, cfg.seed) for c, cal in cals.items()}
    alt = _alt_tables(cfg)
    ic = cfg.planted_signal or 0.0
    per_symbol = {
        "alt_funding": funding_table,
        "alt_implied_vol": implied_vol_table,
        "alt_onchain": onchain_table,
    }
    parts: dict[str, list[pd.DataFrame]] = {
        name: [] for name in ("series", "corporate_actions", *alt)
    }
    for symbol, inst in insts.items():
        cal = cals[inst.asset_class]
        path = simulate_symbol(
            inst, cal, shocks[inst.asset_class], cfg.seed, cfg.regime_drift, cfg.autocorr
        )
        parts["series"].append(_series_frame(symbol, cal, path))
        parts["corporate_actions"].append(corporate_actions(inst, cal, path.close, cfg.seed))
        for name in alt:
            if name == "alt_sentiment":
                parts[name].append(sentiment_table(inst, cal, path, cfg.seed, ic))
            elif name in per_symbol:
                parts[name].append(per_symbol[name](inst, cal, path, cfg.seed))

    series = _concat(parts["series"], ["symbol", "timestamp"])
    tables: dict[str, pd.DataFrame] = {
        "assets": pd.DataFrame(
            {
                "asset_id": np.arange(1, len(insts) + 1),
                "symbol": [i.symbol for i in insts.values()],
                "name": [i.name for i in insts.values()],
                "sector": [i.sector for i in insts.values()],
                "asset_class": [i.asset_class for i in insts.values()],
                "currency": [i.currency for i in insts.values()],
                "exchange": [i.exchange for i in insts.values()],
            }
        ),
        "series": series,
        "corporate_actions": _concat(parts["corporate_actions"], ["symbol", "timestamp", "kind"]),
        "benchmarks": equal_weight_benchmarks(series, classes).sort_values(
            ["name", "timestamp"], kind="stable", ignore_index=True
        ),
    }
    for name in alt:
        if name == "alt_macro":
            stamps = series["timestamp"]
            tables[name] = macro_table(stamps.min(), stamps.max(), cfg.seed)
        else:
            frame = _concat(parts[name], ["symbol", "timestamp"])
            if len(frame):  # no crypto symbol → no funding / on-chain table
                tables[name] = frame
    return tables


def generate_fixture(
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rows: int = 32768,
    freq: str = "15min",
    alt_features: int = 4,
    seed: int = 7,
    planted_signal: float | None = None,
    start: str = "2019-01-01",
    *,
    regime_drift: float = 0.0,
    autocorr: float = 0.0,
) -> dict[str, pd.DataFrame]:
    """Generate the tables of a synthetic database, ready for ``write_database``.

    Every symbol gets ``rows`` bars of ``freq``. Returns ``{table: frame}`` with
    ``assets``, ``series``, ``corporate_actions``, ``benchmarks`` and the chosen
    ``alt_*`` tables (``alt_funding`` / ``alt_onchain`` only when a crypto symbol is
    present); timestamps are tz-aware UTC. The same arguments give identical frames.
    The ``metadata`` rows come from :func:`fixture_metadata` with the same arguments.
    """
    return _generate(_config(**_params(locals())))


def _params(args: dict[str, object]) -> dict[str, object]:
    """The generation parameters out of a public function's arguments."""
    params = {name: args[name] for name in FixtureConfig.model_fields}
    params["symbols"] = list(params["symbols"])  # type: ignore[call-overload]
    return params


def _regime_spells(cfg: FixtureConfig) -> dict[str, list[list[str]]]:
    """Per asset class, ``[start timestamp, regime]`` of every regime spell the generator used."""
    freq = parse_freq(cfg.freq)
    spells: dict[str, list[list[str]]] = {}
    for cls in sorted({instrument(s, cfg.seed).asset_class for s in cfg.symbols}):
        cal = build_calendar(cls, cfg.rows, freq, _start_date(cfg))
        regime = class_shocks(cls, cal, cfg.seed).regime[: cfg.rows]
        starts = np.flatnonzero(np.diff(regime, prepend=-1) != 0)
        stamps = cal.timestamps[starts].strftime("%Y-%m-%dT%H:%M:%SZ")
        spells[cls] = [[t, REGIMES[r]] for t, r in zip(stamps, regime[starts], strict=True)]
    return spells


def _metadata(cfg: FixtureConfig) -> dict[str, str]:
    params = cfg.model_dump()
    params.update(
        generator="market_nn_plus_ultra.data.fixtures",
        alt_tables=_alt_tables(cfg),
        prices="back-adjusted for splits and dividends; close-to-close returns are total returns",
        bar_timestamp="intraday bars are stamped with their open time; daily bars with their "
        "date at 00:00 UTC",
    )
    meta = {
        "fixture": json.dumps(params, sort_keys=True),
        "regime_truth": json.dumps(_regime_spells(cfg)),
    }
    if cfg.autocorr:
        meta["planted_autocorr"] = json.dumps(
            {"target": "next_return", "lag": 1, "autocorr": cfg.autocorr}, sort_keys=True
        )
    if cfg.planted_signal is not None:
        meta["planted_signal"] = json.dumps(
            {
                "source": "alt_sentiment.sentiment_score",
                "target": "next_return",
                "ic": cfg.planted_signal,
                "horizon": 1,
            },
            sort_keys=True,
        )
    return meta


def fixture_metadata(
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rows: int = 32768,
    freq: str = "15min",
    alt_features: int = 4,
    seed: int = 7,
    planted_signal: float | None = None,
    start: str = "2019-01-01",
    *,
    regime_drift: float = 0.0,
    autocorr: float = 0.0,
) -> dict[str, str]:
    """The ``metadata`` rows (JSON text) of the fixture these arguments generate.

    ``fixture``: the parameters and conventions; ``regime_truth``: per asset class the
    ``[start, regime]`` spells of the hidden bull / bear / high_vol chain;
    ``planted_signal`` (only when planted): ``{"source": "alt_sentiment.sentiment_score",
    "target": "next_return", "ic": IC, "horizon": 1}``.
    """
    return _metadata(_config(**_params(locals())))


def write_fixture(
    path: str | Path,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rows: int = 32768,
    freq: str = "15min",
    alt_features: int = 4,
    seed: int = 7,
    planted_signal: float | None = None,
    start: str = "2019-01-01",
    *,
    regime_drift: float = 0.0,
    autocorr: float = 0.0,
    overwrite: bool = False,
) -> Path:
    """Generate, validate and atomically write a synthetic database; returns its path.

    Nothing is written unless the tables pass
    :func:`~market_nn_plus_ultra.data.validation.validate_tables` without errors.
    """
    from .validation import validate_tables

    cfg = _config(**_params(locals()))
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists — pass overwrite=True (CLI: --overwrite)")
    tables = _generate(cfg)
    validate_tables(tables).raise_if_failed()
    return write_database(path, tables, overwrite=overwrite, metadata=_metadata(cfg))
