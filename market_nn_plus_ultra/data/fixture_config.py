"""Parameters of a synthetic database, apart from the generator.

Kept free of pandas and scipy so the CLI can build ``plus-ultra data fixture --help`` from
the field descriptions without importing the generator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .symbols import check_symbols

__all__ = ["ALT_TABLES", "DEFAULT_SYMBOLS", "FixtureConfig"]

#: Side tables in the order ``alt_features`` = N picks them (the first N).
ALT_TABLES = ("alt_macro", "alt_funding", "alt_sentiment", "alt_implied_vol", "alt_onchain")
#: Symbols of the default fixture: three equity ETFs and two crypto pairs.
DEFAULT_SYMBOLS = ("SPY", "QQQ", "IWM", "BTC-USD", "ETH-USD")


class FixtureConfig(BaseModel):
    """Parameters of one synthetic database (the field descriptions are the CLI help)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SYMBOLS),
        description="Symbols to generate; BASE-QUOTE ones (BTC-USD, ETH-USDT) are crypto and "
        "trade 24/7, the rest are equities on the New York session.",
    )
    rows: int = Field(32768, ge=2, le=5_000_000, description="Bars per symbol.")
    freq: str = Field(
        "15min", description="Bar frequency: 1min, 5min, 15min, 1h … or 1D (at most one day)."
    )
    alt_features: int = Field(
        4,
        ge=0,
        le=len(ALT_TABLES),
        description="Write the first N side tables of: " + ", ".join(ALT_TABLES) + ".",
    )
    seed: int = Field(7, ge=0, description="Random seed; the same seed gives identical tables.")
    planted_signal: float | None = Field(
        None,
        ge=-0.99,
        le=0.99,
        description="Plant a signal: alt_sentiment.sentiment_score at bar t gets this IC with "
        "the return from t to t+1 (alt_sentiment is then written even with --alt-features < 3).",
    )
    start: str = Field(
        "2019-01-01",
        description="First date (UTC); equities start at the first session on or after it.",
    )
    regime_drift: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="Annualised trend of bull/bear regimes; 0 keeps returns unpredictable.",
    )

    autocorr: float = Field(
        0.0,
        ge=-0.9,
        le=0.9,
        description="Lag-1 autocorrelation of the bars' return shocks: a known linear edge "
        "(a model reading the last return can reach an IC of about this much); 0 keeps "
        "returns unpredictable.",
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one symbol, e.g. --symbols SPY BTC-USD")
        return check_symbols(value, "--symbols")  # the same rule as `data import`

    @field_validator("freq")
    @classmethod
    def _freq(cls, value: str) -> str:
        from .fixture_calendar import parse_freq

        parse_freq(value)
        return value

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        import pandas as pd

        try:
            stamp = pd.Timestamp(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date — use ISO-8601, e.g. 2019-01-01") from None
        if stamp.year < 1971:
            raise ValueError(f"{value!r}: start on or after 1971-01-01")
        return value
