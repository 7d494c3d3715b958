"""Config section of the HTTP service (``service``): address, model, limits, key, log, drift."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ._base import _Section

__all__ = ["ServiceConfig"]


class ServiceConfig(_Section):
    """`plus-ultra serve`: where it listens, what it serves and what it accepts (docs/service.md)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address the server binds (--host).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port the server listens on (--port).")
    checkpoint: Path | None = Field(
        None,
        description="Run folder (or .ckpt in it) served at start (--checkpoint); /reload "
        "without a body reloads it.",
    )
    device: str = Field("cpu", description="Torch device of the model: cpu, cuda:0 or auto.")
    torch_threads: int = Field(
        1,
        ge=1,
        description="Intra-op threads of each forward pass; requests run in parallel threads.",
    )
    api_key_env: str = Field(
        "PLUS_ULTRA_API_KEY",
        min_length=1,
        description="Environment variable holding the API key of the mutating endpoints "
        "(--api-key-env); unset = those endpoints refuse every call.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_prediction_rows: int = Field(
        20_000,
        ge=1,
        description="Most bars a /predict request may send, and outcomes per /outcomes call.",
    )
    max_symbols: int = Field(500, ge=1, description="Most symbols one /predict request may name.")
    database: Path = Field(
        Path("outputs/service/service.db"),
        description="The service's own SQLite database (prediction log, outcomes; WAL mode); "
        "never the market database.",
    )
    guardrail_history: int = Field(
        252,
        ge=1,
        description="Bars of served positions and reported outcomes the path-dependent "
        "guardrails (turnover, CVaR, drawdown, market beta) read.",
    )

    drift_window: int = Field(
        1000,
        ge=10,
        description="Newest served feature rows (one per symbol and prediction) the drift "
        "statistics compare with the training distribution.",
    )
    drift_min_rows: int = Field(
        100,
        ge=1,
        description="Rows the drift window must hold before PSI and KS are reported "
        "(at most drift_window).",
    )
    psi_bins: int = Field(
        10,
        ge=2,
        le=100,
        description="Quantile bins of each feature's training distribution for the PSI; "
        "fitted at training time into the run's drift_reference.json.",
    )
    drift_quantiles: int = Field(
        1000,
        ge=10,
        le=10_000,
        description="Training quantiles per feature kept in drift_reference.json; the KS "
        "statistic is measured against them (resolution 1/drift_quantiles).",
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="PSI above which a feature counts as drifted (0.1-0.25 moderate, above "
        "0.25 a significant shift).",
    )
    regime_shift_share: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of the features drifted beyond psi_threshold that raises the "
        "regime-shift flag.",
    )
    calibration_window: int = Field(
        2000,
        ge=10,
        description="Newest outcomes per model version the live calibration (ECE, quantile "
        "coverage) is measured over.",
    )
    max_batch: int = Field(
        32,
        ge=1,
        description="Most concurrent bars-mode requests whose windows run as one forward "
        "pass (1 = one request at a time).",
    )

    @model_validator(mode="after")
    def _drift_rows(self) -> ServiceConfig:
        if self.drift_min_rows > self.drift_window:
            raise ValueError(
                f"drift_min_rows={self.drift_min_rows} exceeds drift_window="
                f"{self.drift_window}: the window could never hold enough rows — lower "
                "service.drift_min_rows or raise service.drift_window"
            )
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or value[0].isdigit():
            raise ValueError(
                f"{value!r} is not an environment variable name — use letters, digits and "
                "underscores, e.g. PLUS_ULTRA_API_KEY"
            )
        return value
