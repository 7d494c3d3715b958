"""Request and response bodies of the HTTP API (pydantic; all of them in the OpenAPI schema).

Inputs are validated here, once, where they enter: numbers must be finite, prices
positive, timestamps within pandas' range (1678..2261) and time-zone aware or UTC.
Limits that depend on the config (rows, symbols) are checked by the routes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Bar",
    "Breach",
    "ConfigResponse",
    "CurriculumResponse",
    "CurriculumUpdate",
    "DriftResponse",
    "ErrorResponse",
    "FeatureDriftItem",
    "GuardrailsReport",
    "HealthResponse",
    "LiveStats",
    "Outcome",
    "OutcomesRequest",
    "OutcomesResponse",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "ReadyResponse",
    "ReloadRequest",
    "ReloadResponse",
    "Telemetry",
    "UnmatchedOutcome",
]

Symbol = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^\S+$", description="Ticker, e.g. SPY.")
]
_YEARS = (1678, 2261)  # pandas' nanosecond timestamps


def _utc(value: datetime | None) -> datetime | None:
    """Naive timestamps are UTC; every timestamp must fit pandas' nanosecond range."""
    if value is None:
        return None
    if not _YEARS[0] <= value.year <= _YEARS[1]:
        raise ValueError(f"year {value.year} is outside {_YEARS[0]}..{_YEARS[1]}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Bar(BaseModel):
    """One OHLCV bar; any further field is a numeric column of the bar (alternative data,
    indicators), null where the value is unknown (such a bar is not predicted from)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    timestamp: datetime = Field(description="Bar time, ISO-8601 (naive = UTC).")
    symbol: Symbol
    open: float = Field(gt=0, description="Opening price.")
    high: float = Field(gt=0, description="Highest price.")
    low: float = Field(gt=0, description="Lowest price.")
    close: float = Field(gt=0, description="Closing price.")
    volume: float = Field(ge=0, description="Traded volume.")

    _stamp = field_validator("timestamp")(_utc)


class PredictRequest(_Body):
    """Either ``symbols`` (read the configured database) or ``bars`` (the caller's bars)."""

    symbols: list[Symbol] | None = Field(
        None, min_length=1, description="Predict these symbols from the service's database."
    )
    as_of: datetime | None = Field(
        None, description="With symbols: the newest bar read (ISO-8601); null = the latest."
    )
    bars: list[Bar] | None = Field(
        None,
        min_length=1,
        description="Recent bars of each symbol: at least the window plus the features' "
        "warm-up (GET /ready says how many).",
    )

    _stamp = field_validator("as_of")(_utc)

    @model_validator(mode="after")
    def _one_mode(self) -> PredictRequest:
        if (self.symbols is None) == (self.bars is None):
            raise ValueError(
                "send either `symbols` (read the service's database) or `bars` (your recent "
                "bars), exactly one of them"
            )
        if self.as_of is not None and self.symbols is None:
            raise ValueError("`as_of` goes with `symbols`; in bars mode the last bar is the time")
        return self


class Prediction(BaseModel):
    """One symbol's target position for the bar after ``timestamp`` (a predictions-file row).

    Heads with probabilities add ``prob_down/prob_flat/prob_up``; quantile heads add one
    field per level (``q05``, ``q50``, ``q95`` by default; ``q97_5`` for 0.975).
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    __pydantic_extra__: dict[str, float] = Field(init=False)

    timestamp: datetime = Field(description="The bar predicted from (the symbol's last bar).")
    symbol: str
    position: float = Field(description="Target exposure in [-1, 1] after the guardrails.")
    model_position: float = Field(description="The model's position before the guardrails.")
    forecast: float | None = Field(
        description="Expected simple return to the next bar (null: a policy without a head)."
    )
    prob_down: float | None = None
    prob_flat: float | None = None
    prob_up: float | None = None
    q05: float | None = None
    q50: float | None = None
    q95: float | None = None


class Breach(BaseModel):
    """One guardrail limit that changed a position."""

    timestamp: datetime
    symbol: str
    rule: str = Field(description="max_position, sector_cap, factor_cap, max_gross, … .")
    before: float
    after: float
    detail: str


class GuardrailsReport(BaseModel):
    """What the guardrails did to this prediction."""

    action: Literal["none", "cap", "flatten", "reject"] = Field(
        description="none: no breach; else guardrails.on_breach."
    )
    positions: dict[str, float] = Field(description="Served position per symbol.")
    breaches: list[Breach]


class Telemetry(BaseModel):
    """How the prediction was made."""

    mode: Literal["bars", "database"]
    feature_columns: list[str]
    window: int
    horizon: int
    min_bars: int = Field(description="Bars per symbol a request needs (window + warm-up).")
    latency_ms: dict[str, float] = Field(description="Milliseconds per stage, and total.")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    guardrails: GuardrailsReport
    model_version: str
    request_id: str
    telemetry: Telemetry


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model_version: str | None
    uptime_s: float


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None
    detail: str = Field(description="Why not ready, or what is served.")
    min_bars: int | None = Field(None, description="Bars per symbol a bars request needs.")


class ConfigResponse(BaseModel):
    config: dict[str, Any] = Field(description="The service's resolved config, secrets redacted.")
    run_config: dict[str, Any] | None = Field(
        None, description="The served run's own config (model, features, windows), redacted."
    )


class CurriculumResponse(BaseModel):
    profile: str | None = Field(description="The profile in force; null = no curriculum.")
    stage: dict[str, Any] | None = Field(description="The stage in force, with its settings.")
    stage_index: int | None
    profiles: dict[str, Any] = Field(description="Every profile, as the config holds them.")


class CurriculumUpdate(_Body):
    """A new profile in force (and optionally a new set of profiles), validated by the config."""

    profile: str | None = Field(description="Profile name in force; null = none.")
    profiles: dict[str, Any] | None = Field(
        None, description="Replace the profiles too (same shape as the config's)."
    )


class Outcome(_Body):
    """The realised return of an earlier prediction: by request id, or timestamp + symbol."""

    request_id: str | None = Field(None, max_length=64, description="From the /predict response.")
    symbol: Symbol | None = None
    timestamp: datetime | None = Field(None, description="The predicted bar's timestamp.")
    realised_return: float = Field(
        gt=-1, description="Simple return from the predicted bar to the next one."
    )

    _stamp = field_validator("timestamp")(_utc)

    @model_validator(mode="after")
    def _key(self) -> Outcome:
        if self.request_id is None and (self.timestamp is None or self.symbol is None):
            raise ValueError("name the prediction: `request_id`, or `timestamp` and `symbol`")
        return self


class OutcomesRequest(_Body):
    outcomes: list[Outcome] = Field(min_length=1)


class UnmatchedOutcome(BaseModel):
    index: int = Field(description="Position of the outcome in the request.")
    reason: str


class LiveStats(BaseModel):
    """Live performance of the model in service against its backtest (docs/service.md)."""

    model_version: str | None
    n: int = Field(description="Outcomes matched to this model's predictions.")
    pnl: float = Field(description="Sum of position x realised return.")
    mean_return: float | None
    expected_return: float | None = Field(description="Backtest mean of position x return.")
    roi_drift: float | None = Field(description="mean_return - expected_return.")
    roi_drift_z: float | None = Field(description="roi_drift over the live mean's std error.")
    hit_rate: float | None
    expected_hit_rate: float | None
    hit_rate_drift: float | None
    coverage: float | None = Field(description="Share of returns inside the q05..q95 band.")
    expected_coverage: float | None
    calibration_n: int = Field(0, description="Newest outcomes the calibration is measured on.")
    ece: float | None = Field(None, description="Expected calibration error of prob_*.")
    expected_ece: float | None = Field(None, description="The run's last validation ECE.")
    ece_drift: float | None = Field(None, description="ece - expected_ece.")
    quantile_coverage_error: float | None = Field(
        None, description="Mean |share of returns <= q_tau - tau| over the quantile levels."
    )
    expected_quantile_coverage_error: float | None = Field(
        None, description="The run's last validation quantile coverage error."
    )
    quantile_coverage_error_drift: float | None = Field(
        None, description="quantile_coverage_error - expected_quantile_coverage_error."
    )


class OutcomesResponse(BaseModel):
    matched: int
    unmatched: list[UnmatchedOutcome]
    live: LiveStats


class ReloadRequest(_Body):
    checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Run folder or .ckpt to load; null = the configured service.checkpoint.",
    )


class ReloadResponse(BaseModel):
    model_version: str
    checkpoint: str
    previous_version: str | None
    seconds: float = Field(description="Load, validation and warm-up time.")


class FeatureDriftItem(BaseModel):
    feature: str
    psi: float = Field(description="Population stability index against the training bins.")
    ks: float = Field(description="Two-sample KS statistic against the training quantiles.")


class DriftResponse(BaseModel):
    """Drift of the served inputs against the served run's training distribution."""

    available: bool
    reason: str | None = Field(description="Why drift is not measured (null when it is).")
    source: Literal["checkpoint", "source_checkpoint", "training_split"] | None = Field(
        description="Where the training distribution came from: the run's "
        "drift_reference.json, that of the run a policy was fine-tuned from, or a refit."
    )
    rows: int = Field(description="Served feature rows in the window.")
    window: int = Field(description="service.drift_window.")
    min_rows: int = Field(description="service.drift_min_rows.")
    psi_threshold: float
    regime_shift: bool = Field(
        description="At least service.regime_shift_share of the features beyond psi_threshold."
    )
    drifted: list[str] = Field(description="Features beyond psi_threshold.")
    features: list[FeatureDriftItem] = Field(description="Every feature, the largest PSI first.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, where, and the fix.")
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="Each invalid field.")
    breaches: list[Breach] | None = Field(None, description="With 409 reject: the breaches.")
