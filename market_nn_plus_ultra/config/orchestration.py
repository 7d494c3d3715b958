"""Config section of the retraining workflow (``orchestration``): promotion, push and watch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ._base import _Section

__all__ = ["OrchestrationConfig", "PromotionConfig"]

# Storage-option names that hold credentials. The resolved config is saved beside every
# artefact (and pushed with it), so a secret written here would travel with every run.
_SECRET_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "passwd",
        "session_token",
        "access_key",
        "secret_key",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "account_key",
        "sas_token",
        "client_secret",
        "connection_string",
    }
)


def _secret_paths(options: Any, prefix: str = "") -> list[str]:
    """Dotted names of the credential-like keys anywhere in ``options``."""
    if not isinstance(options, dict):
        return []
    found = []
    for name, value in options.items():
        dotted = f"{prefix}{name}"
        if str(name).lower() in _SECRET_OPTIONS:
            found.append(dotted)
        found += _secret_paths(value, f"{dotted}.")
    return found


class PromotionConfig(_Section):
    """When a retrained candidate replaces the champion (docs/promotion.md).

    Every rule compares the two on the same out-of-sample bars, net of
    ``evaluation.cost_bps``; the candidate is promoted only when no rule fails.
    """

    min_sharpe_diff_low: float = Field(
        0.0,
        description="The lower end of the paired-bootstrap interval of Sharpe(candidate) − "
        "Sharpe(champion) (annualised) must exceed this; 0 = better with confidence.",
    )
    confidence: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="Two-sided level of that interval: its lower end is a one-sided bound "
        "at (1 + confidence) / 2 (0.9 → 95%).",
    )
    bootstrap_samples: int = Field(
        2000, ge=100, description="Paired stationary-bootstrap resamples of the Sharpe difference."
    )
    block_length: float | None = Field(
        None, gt=0, description="Mean bootstrap block length in bars; null = Politis–White optimal."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the bootstrap resamples (same seed, same interval)."
    )
    min_periods: int = Field(
        30,
        ge=10,
        description="Fewest scored bars the comparison needs; fewer and the candidate is not "
        "promoted.",
    )
    max_drawdown_tolerance: float | None = Field(
        0.02,
        ge=0,
        description="How much deeper (fraction of wealth, 0.02 = 2 points) the candidate's "
        "max drawdown may be than the champion's; null = not checked.",
    )
    max_turnover_ratio: float | None = Field(
        1.5,
        gt=0,
        description="Most the candidate's mean turnover per bar may be, as a multiple of the "
        "champion's; null = not checked.",
    )
    calibration_metric: Literal["ece", "brier"] = Field(
        "ece",
        description="Calibration score of prob_down/prob_flat/prob_up: ece (top-label "
        "expected calibration error) or brier (multi-class Brier score).",
    )
    max_calibration_worsening: float | None = Field(
        0.02,
        ge=0,
        description="Most the calibration score may rise from champion to candidate; skipped "
        "when either lacks probabilities; null = not checked.",
    )
    first_baseline: Literal["buy_and_hold", "flat", "none"] = Field(
        "buy_and_hold",
        description="With no champion yet, the candidate must beat: buy_and_hold (long every "
        "symbol, same bars and costs), flat (cash: Sharpe above the bar) or none (promote).",
    )


class OrchestrationConfig(_Section):
    """`plus-ultra retrain`: promotion rules, where runs are pushed, how a folder is watched."""

    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig,
        description="Rules a candidate must pass to replace the champion.",
    )
    push_url: str | None = Field(
        None,
        min_length=1,
        description="fsspec URL each promoted run is copied under (a folder, memory://…, "
        "s3://bucket/prefix); null = no push.",
    )
    push_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of push_url, e.g. {client_kwargs: {endpoint_url: "
        "...}}; credentials belong in the environment, never here.",
    )
    watch_debounce_s: float = Field(
        5.0,
        gt=0,
        description="--watch: seconds a dump's size and mtime must stay unchanged before it "
        "counts as landed.",
    )
    watch_patterns: list[str] = Field(
        default_factory=lambda: ["*.db", "*.sqlite", "*.sqlite3"],
        min_length=1,
        description="--watch: file-name patterns of the SQLite dumps that start a run.",
    )
    watch_polling: bool = Field(
        False,
        description="--watch: poll the folder instead of OS file events (for network file "
        "systems, where events may not arrive).",
    )

    @field_validator("push_storage_options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        secrets = _secret_paths(options)
        if secrets:
            raise ValueError(
                f"credential option(s) {secrets} in orchestration.push_storage_options: the "
                "config is saved beside every run, so secrets must not live in it — set them "
                "in the environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
                "AWS_SESSION_TOKEN or AWS_PROFILE for s3://)"
            )
        return options
