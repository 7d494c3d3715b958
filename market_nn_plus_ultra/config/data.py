"""Config sections of the data, features and windows layers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import _Section

__all__ = [
    "AlternativeDataSpec",
    "CrossAssetConfig",
    "DataConfig",
    "FeaturesConfig",
    "RegimeConfig",
    "WindowsConfig",
]


class AlternativeDataSpec(_Section):
    """One alternative-data side table ``alt_<name>``, joined as of each bar (never ahead)."""

    name: str = Field(
        "sentiment", min_length=1, description="Side table name without the prefix: `alt_<name>`."
    )
    join: Literal["per_symbol", "global"] = Field(
        "per_symbol",
        description="per_symbol: match rows by symbol; global: one series joined to every symbol.",
    )
    columns: list[str] | None = Field(
        None, description="Value columns to join; null joins every column except the keys."
    )
    max_staleness: str = Field(
        "1D",
        description="Oldest observation still joined, a pandas Timedelta ('8h', '3D'); older → NaN.",
    )
    feature_names: dict[str, str] = Field(
        default_factory=dict,
        description="Column → panel column name; unnamed columns become `<name>_<column>`.",
    )
    asset_classes: list[str] | None = Field(
        None,
        description="Asset classes (assets.asset_class) the table exists for; other classes get "
        "0.0 (not applicable) instead of NaN. null = every symbol.",
    )
    enabled: bool = Field(True, description="Join this table (false keeps the spec but skips it).")
    required: bool = Field(
        False, description="Fail when the table is missing instead of skipping it with a log line."
    )

    @field_validator("max_staleness")
    @classmethod
    def _timedelta(cls, value: str) -> str:
        import pandas as pd

        try:
            delta = pd.Timedelta(value)
        except (ValueError, TypeError):
            raise ValueError(
                f"{value!r} is not a pandas Timedelta string — use e.g. '8h', '3D' or '30min'"
            ) from None
        if delta <= pd.Timedelta(0):
            raise ValueError(f"{value!r} must be a positive duration, e.g. '1D'")
        return value

    @field_validator("asset_classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not c.strip() for c in value)):
            raise ValueError(
                f"{value!r}: list the asset classes the table exists for, e.g. [crypto], or "
                "use null for every symbol"
            )
        return value


def _default_alternative_data() -> list[AlternativeDataSpec]:
    """The side tables the fixture generator writes (skipped when a database lacks them).

    Funding rates and on-chain activity exist for crypto only: equities get 0.0 (not
    applicable) in those columns rather than NaN, which would mask every equity bar.
    """
    spec = AlternativeDataSpec
    return [
        spec(
            name="macro",
            join="global",
            columns=["rate_10y", "cpi_surprise", "event_flag"],
            max_staleness="7D",
        ),
        spec(
            name="funding",
            columns=["funding_rate"],
            max_staleness="1D",
            feature_names={"funding_rate": "funding_rate"},
            asset_classes=["crypto"],
        ),
        spec(
            name="sentiment",
            columns=["sentiment_score", "news_volume"],
            max_staleness="3D",
            feature_names={"sentiment_score": "sentiment_score"},
        ),
        spec(name="implied_vol", columns=["iv_30d", "iv_skew"], max_staleness="4D"),
        spec(
            name="onchain",
            columns=["active_addresses", "exchange_netflow"],
            max_staleness="3D",
            asset_classes=["crypto"],
        ),
    ]


class RegimeConfig(_Section):
    """Causal regime labellers written to the `regimes` table by `plus-ultra data build`."""

    labellers: list[Literal["volatility", "liquidity", "sector_rotation"]] = Field(
        default_factory=lambda: ["volatility", "liquidity", "sector_rotation"],
        description="Which labels to compute (rows of `regimes` with this name).",
    )
    bands: list[float] = Field(
        default_factory=lambda: [0.33, 0.66],
        description="Increasing quantile cut points in (0, 1); k cut points give k+1 labels.",
    )
    labels: list[str] | None = Field(
        None, description="Label per band, low to high; null = low/mid/high (or band_0, band_1…)."
    )
    vol_window: int = Field(20, ge=2, description="Bars of log returns in the realised volatility.")
    liquidity_window: int = Field(20, ge=1, description="Bars averaged in the liquidity measure.")
    liquidity_measure: Literal["dollar_volume", "amihud"] = Field(
        "dollar_volume",
        description="dollar_volume: mean close·volume; amihud: mean |return| / dollar volume.",
    )
    sector_window: int = Field(
        20, ge=1, description="Bars of return in the sector relative-strength measure."
    )
    quantile_window: int | None = Field(
        None,
        ge=2,
        description="Bars of each symbol's history the quantiles use; null = all history so far.",
    )
    min_history: int = Field(
        60, ge=2, description="Measure values a symbol needs before it gets a label."
    )

    @field_validator("bands")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < b < 1.0 for b in value):
            raise ValueError(
                f"{value}: every band must lie strictly between 0 and 1, e.g. [0.33, 0.66]"
            )
        if value != sorted(set(value)):
            raise ValueError(f"{value}: bands must be strictly increasing, e.g. [0.33, 0.66]")
        return value


class CrossAssetConfig(_Section):
    """Context columns from other symbols aligned onto each symbol's calendar."""

    view: str = Field(
        "context", min_length=1, description="Name of the view in `cross_asset_views`."
    )
    columns: list[str] = Field(
        default_factory=list,
        description="Context columns as SYMBOL:column, e.g. [SPY:close, QQQ:close].",
    )
    fill_limit: int = Field(
        5, ge=0, description="Most consecutive bars a context value is carried forward."
    )
    min_overlap: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Least share of a symbol's bars (over the shared span) a context symbol must "
        "also have.",
    )


class DataConfig(_Section):
    """Where the market data lives and how it is read and validated."""

    sqlite_path: Path = Field(
        Path("data/market.db"), description="SQLite database holding the market data."
    )
    symbols: list[str] | None = Field(
        None, description="Symbols to load; null loads every symbol in the `series` table."
    )
    start: str | None = Field(
        None, description="First timestamp to load (ISO-8601, inclusive); null = earliest."
    )
    end: str | None = Field(
        None, description="Last timestamp to load (ISO-8601, inclusive); null = latest."
    )
    include_indicators: bool = Field(
        True, description="Pivot the long `indicators` table into wide panel columns."
    )
    cache: bool = Field(
        True,
        description="Keep a Parquet cache of each panel read, keyed by the database's version.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder for the panel cache; null = `.plus_ultra_cache/` beside the database.",
    )
    read_threads: int = Field(
        2, ge=1, le=64, description="Parallel SQLite readers used on a cold (uncached) read."
    )
    strict_validation: bool = Field(
        False,
        description="Halt on any validation failure instead of logging and dropping bad rows; "
        "every command that reads the database then runs `data validate --strict` first.",
    )
    gap_tolerance: float = Field(
        5.0,
        gt=0,
        description="Report gaps longer than this many median bar intervals as warnings.",
    )
    alternative_data: list[AlternativeDataSpec] = Field(
        default_factory=_default_alternative_data,
        description="Alternative-data side tables joined onto the panel as of each bar.",
    )
    regimes: RegimeConfig = Field(
        default_factory=RegimeConfig, description="Causal regime labellers (`data build`)."
    )
    cross_asset: CrossAssetConfig = Field(
        default_factory=CrossAssetConfig, description="Cross-asset context view (`data build`)."
    )


class WindowsConfig(_Section):
    """Panel → tensors, sliding windows and purged splits (the `windows` layer)."""

    window: int = Field(
        128, ge=1, description="Input length W: a window ending at row t sees rows t-W+1..t."
    )
    horizon: int = Field(
        5, ge=1, description="Target length H: forward returns over the next H bars t+1..t+H."
    )
    stride: int = Field(1, ge=1, description="Keep every stride-th window end row.")
    symbols_per_item: Literal["one", "all"] = Field(
        "one",
        description="one: an item is one symbol's window [W, F]; all: every symbol [S, W, F].",
    )
    calendar: Literal["union", "own"] = Field(
        "union",
        description="union: windows span the shared calendar (gaps masked); own: each "
        "symbol's last W bars (symbols_per_item=one only).",
    )
    normalise: Literal["window_zscore", "train_zscore", "none"] = Field(
        "train_zscore",
        description="train_zscore: z-score by training-split statistics (causal at every "
        "position); window_zscore: each window by its own rows (last-step supervision "
        "only); none: raw values.",
    )
    target: Literal["simple_return", "log_return"] = Field(
        "simple_return", description="Target per forward bar: close-to-close simple or log return."
    )
    feature_columns: list[str] | None = Field(
        None,
        description="Panel columns used as inputs; null = every column except context/regime.",
    )
    context_columns: list[str] = Field(
        default_factory=list,
        description="Cross-asset panel columns returned separately as `context` [W, C].",
    )
    regime_column: str | None = Field(
        None, description="Panel column of regime labels returned as `regime` at each end row."
    )
    memmap_threshold_gb: float = Field(
        4.0,
        gt=0,
        description="Build tensors larger than this (GB) in a memory-mapped cache streamed from disk.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder for memory-mapped tensor caches; null = `tensors/` in the panel cache.",
    )
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of window end rows in the validation split."
    )
    test_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of window end rows in the test split."
    )
    embargo: int | None = Field(
        None,
        ge=0,
        description="Unread rows between one split's last target row and the next split's "
        "first input row; null = max(horizon, window).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WindowsConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"windows.val_fraction + windows.test_fraction = "
                f"{self.val_fraction + self.test_fraction:g} leaves no training rows — "
                "keep their sum below 1"
            )
        if self.calendar == "own" and self.symbols_per_item == "all":
            raise ValueError(
                "windows.calendar=own needs windows.symbols_per_item=one (multi-symbol items "
                "share the union calendar)"
            )
        return self


class FeaturesConfig(_Section):
    """Which features the FeaturePipeline adds to the panel (see docs/features.md)."""

    names: list[str] | None = Field(
        None,
        description="Features to compute by name (e.g. [rsi_14, macd]); null = the default set.",
    )
    tags: list[str] | None = Field(
        None,
        description="Also compute every feature with one of these tags (technical, spectral, …).",
    )
    fft_window: int = Field(
        64, ge=6, le=4096, description="Bars of log returns in the fft_energy_* rolling window."
    )
    periods_per_year: float | None = Field(
        None,
        gt=0,
        description="Annualisation of realised_vol_20; null = inferred from bar spacing (252 daily).",
    )
    dtype: Literal["float64", "float32"] = Field(
        "float64", description="Storage type of the computed feature columns."
    )
    threads: int = Field(
        0, ge=0, description="Threads computing symbols in parallel; 0 = one per CPU core."
    )
