"""Config sections of evaluation and simulation: walk-forward, baselines, guardrails, execution."""

from __future__ import annotations

import copy
import difflib
from typing import Any, Literal

from pydantic import Field, model_validator

from ._base import _Section

__all__ = [
    "BASELINE_NAMES",
    "BaselineName",
    "EvaluationConfig",
    "GuardrailsConfig",
    "SimulationConfig",
]


BaselineName = Literal["buy_and_hold", "momentum", "mean_reversion", "ridge", "lightgbm"]

#: Every baseline, in the order the reports list them.
BASELINE_NAMES: tuple[BaselineName, ...] = (
    "buy_and_hold",
    "momentum",
    "mean_reversion",
    "ridge",
    "lightgbm",
)


class EvaluationConfig(_Section):
    """Backtest costs, baselines, walk-forward folds and bootstrap intervals (docs/evaluation.md)."""

    cost_bps: float = Field(
        5.0, ge=0, description="Proportional cost in basis points per unit of |Δposition|."
    )
    baselines: list[BaselineName] = Field(
        default_factory=lambda: list(BASELINE_NAMES),
        description="Baselines run beside the model on the same splits and costs.",
    )
    momentum_lookback: int = Field(
        20, ge=1, description="momentum: position = sign of the past L-bar return."
    )
    mean_reversion_window: int = Field(
        20, ge=2, description="mean_reversion: bars of the rolling mean and std of the close."
    )
    baseline_features: list[str] | None = Field(
        None, description="Features of the ridge/lightgbm baselines; null = the default set."
    )
    ridge_alpha: float = Field(1.0, gt=0, description="ridge: L2 penalty of the regression.")
    lightgbm_estimators: int = Field(
        100, ge=1, description="lightgbm: boosting rounds of the gradient-boosted trees."
    )
    lightgbm_learning_rate: float = Field(
        0.05, gt=0, description="lightgbm: shrinkage of each boosting round."
    )
    lightgbm_leaves: int = Field(15, ge=2, description="lightgbm: leaves per tree.")
    forecast_scale: float = Field(
        1.0,
        gt=0,
        description="ML baselines: position = clip(forecast / (scale × std of train forecasts)).",
    )
    train_window: int = Field(
        252, ge=1, description="Walk-forward: bars in each fold's training window."
    )
    test_window: int = Field(63, ge=1, description="Walk-forward: bars in each fold's test window.")
    step: int | None = Field(
        None, ge=1, description="Walk-forward: bars between fold starts; null = test_window."
    )
    embargo: int = Field(
        1, ge=0, description="Walk-forward: bars skipped between training and test windows."
    )
    expanding: bool = Field(
        False, description="Walk-forward: training windows grow from the first bar."
    )
    regime_column: str | None = Field(
        "regime", description="Predictions column of regime labels for per-regime metrics."
    )
    bootstrap_reps: int = Field(
        1000, ge=10, description="Stationary-bootstrap replications for confidence intervals."
    )
    bootstrap_level: float = Field(
        0.95, gt=0, lt=1, description="Confidence level of the percentile intervals."
    )
    bootstrap_block: float | None = Field(
        None, gt=0, description="Mean block length in bars; null = Politis–White optimal."
    )
    bootstrap_seed: int = Field(0, ge=0, description="Seed of the bootstrap resamples.")


class GuardrailsConfig(_Section):
    """Risk limits applied to target positions before they trade (docs/evaluation.md)."""

    max_position: float | None = Field(
        1.0, gt=0, description="Cap on |position| of any one symbol; null = no cap."
    )
    max_gross: float | None = Field(
        None, gt=0, description="Cap on mean |position| across symbols at a bar; null = no cap."
    )
    max_net: float | None = Field(
        None, gt=0, description="Cap on |mean position| across symbols at a bar; null = no cap."
    )
    max_turnover: float | None = Field(
        None, gt=0, description="Cap on mean |Δposition| across symbols per bar; null = no cap."
    )
    max_sector_gross: float | None = Field(
        None, gt=0, description="Cap on a sector's share of gross exposure; null = no cap."
    )
    sector_caps: dict[str, float] = Field(
        default_factory=dict, description="Per-sector gross caps overriding max_sector_gross."
    )
    factor_caps: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Caps on |net factor exposure| Σ loading·position / n per bar, by factor: "
            "'market_beta' (rolling beta, causal) or a factor of factor_loadings."
        ),
    )
    factor_loadings: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Static factor loadings {factor: {symbol: loading}}; absent symbols load 0.",
    )
    beta_window: int = Field(
        63, ge=5, description="Bars of past returns in each symbol's rolling market beta."
    )
    cvar_limit: float | None = Field(
        None, gt=0, description="De-risk when the rolling CVaR loss per bar exceeds this."
    )
    cvar_window: int = Field(63, ge=5, description="Bars of past strategy returns in the CVaR.")
    cvar_alpha: float = Field(0.05, gt=0, lt=1, description="Tail share averaged by the CVaR.")
    cvar_derisk: float = Field(
        0.5, ge=0, le=1, description="Position multiplier while the CVaR limit is breached."
    )
    drawdown_stop: float | None = Field(
        None, gt=0, lt=1, description="Flatten when the strategy's drawdown exceeds this."
    )
    drawdown_resume: float = Field(
        0.0, ge=0, lt=1, description="Resume once the drawdown is back above -this (0 = new peak)."
    )
    drawdown_stop_bars: int | None = Field(
        None, ge=1, description="Stay flat exactly this many bars instead of until recovery."
    )
    on_breach: Literal["cap", "flatten", "reject"] = Field(
        "cap",
        description="Service de-risking on a breach: cap (serve the limited positions), "
        "flatten (0 for each breached symbol) or reject (refuse the prediction, 409).",
    )

    @model_validator(mode="after")
    def _check_factors(self) -> GuardrailsConfig:
        known = ["market_beta", *self.factor_loadings]
        for name, cap in self.factor_caps.items():
            if name not in known:
                guess = difflib.get_close_matches(name, known, n=1)
                hint = f" — did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(
                    f"guardrails.factor_caps: unknown factor {name!r}{hint} Factors: 'market_beta' "
                    "or a name under guardrails.factor_loadings."
                )
            if not cap > 0:
                raise ValueError(f"guardrails.factor_caps.{name} must be > 0, got {cap}")
        return self


def _friction(off: Any) -> dict[str, Any]:
    """Field marker: a simulator friction, and the value that switches it off."""
    return {"friction": True, "off": off}


#: Field marker: not a friction (a mode, an input column, a window, the stress settings).
_NOT_FRICTION: dict[str, Any] = {"friction": False}


class SimulationConfig(_Section):
    """Execution simulator: costs, spread, impact, fills, latency, funding, limits, stress.

    Every field says whether it is a *friction* (``json_schema_extra`` ``friction: true``
    with its ``off`` value) or not (``friction: false``): :meth:`frictions_off` switches
    every friction off, which is how a convention backtest's stress paths are simulated.
    ``cost_bps`` is not a friction there: it is the convention's own cost.
    """

    enabled: bool = Field(
        False,
        description="Backtest through the execution simulator, not the plain convention.",
        json_schema_extra=_NOT_FRICTION,
    )
    cost_bps: float = Field(
        5.0,
        ge=0,
        description="Commission in basis points per unit of |fill| (position units).",
        json_schema_extra=_NOT_FRICTION,
    )
    fixed_cost: float = Field(
        0.0,
        ge=0,
        description="Fixed charge in account currency for every non-zero fill.",
        json_schema_extra=_friction(off=0.0),
    )
    capital: float = Field(
        1_000_000.0,
        gt=0,
        description="Account capital in currency, split equally over symbols.",
        json_schema_extra=_NOT_FRICTION,
    )
    half_spread_bps: float = Field(
        0.0,
        ge=0,
        description="Half the quoted spread in basis points, paid per unit traded.",
        json_schema_extra=_friction(off=0.0),
    )
    spread_vol_mult: float = Field(
        0.0,
        ge=0,
        description="Extra half-spread per unit traded, as a multiple of bar volatility.",
        json_schema_extra=_friction(off=0.0),
    )
    impact_coef: float = Field(
        0.0,
        ge=0,
        description="Square-root impact: cost per unit traded = coef·σ·sqrt(notional/ADV).",
        json_schema_extra=_friction(off=0.0),
    )
    participation_cap: float | None = Field(
        None,
        gt=0,
        description="Max share of a bar's dollar volume filled; the rest carries over.",
        json_schema_extra=_friction(off=None),
    )
    latency_bars: list[int] = Field(
        default_factory=lambda: [0],
        description="Bars between a decision and its fill (buckets).",
        json_schema_extra=_friction(off=[0]),
    )
    latency_probs: list[float] | None = Field(
        None,
        description="Probability of each latency bucket; null = all equally likely.",
        json_schema_extra=_friction(off=None),
    )
    borrow_bps: float = Field(
        0.0,
        ge=0,
        description="Annual borrow cost in bps on short exposure, charged every bar.",
        json_schema_extra=_friction(off=0.0),
    )
    leverage_funding_bps: float = Field(
        0.0,
        ge=0,
        description="Annual financing in bps on |position| above 1 (levered part).",
        json_schema_extra=_friction(off=0.0),
    )
    funding_column: str = Field(
        "funding_rate",
        description="Predictions column of per-bar funding paid by longs, if any.",
        json_schema_extra=_friction(off=""),
    )
    volume_column: str = Field(
        "dollar_volume",
        description="Predictions column of each bar's traded value in currency.",
        json_schema_extra=_NOT_FRICTION,
    )
    volatility_column: str = Field(
        "volatility",
        description="Predictions column of per-bar return volatility, if any.",
        json_schema_extra=_NOT_FRICTION,
    )
    vol_window: int = Field(
        20,
        ge=2,
        description="Bars of past realised returns in σ when no volatility column.",
        json_schema_extra=_NOT_FRICTION,
    )
    adv_window: int = Field(
        20,
        ge=1,
        description="Bars of past dollar volume averaged into ADV.",
        json_schema_extra=_NOT_FRICTION,
    )
    max_position: float | None = Field(
        None,
        gt=0,
        description="Cap on |target position| of any one symbol; null = no cap.",
        json_schema_extra=_friction(off=None),
    )
    max_gross: float | None = Field(
        None,
        gt=0,
        description="Cap on gross leverage sum|target| / symbols; null = no cap.",
        json_schema_extra=_friction(off=None),
    )
    device: str = Field(
        "cpu",
        description="Torch device of the simulation: cpu, cuda, cuda:1.",
        json_schema_extra=_NOT_FRICTION,
    )
    seed: int = Field(
        0,
        ge=0,
        description="Seed of latency draws and stress scenarios.",
        json_schema_extra=_NOT_FRICTION,
    )
    scenarios: int = Field(
        0,
        ge=0,
        description="Stress scenarios to simulate (0 = none).",
        json_schema_extra=_NOT_FRICTION,
    )
    scenario_resample: bool = Field(
        True,
        description="Stress paths resample bars in stationary blocks (false = history).",
        json_schema_extra=_NOT_FRICTION,
    )
    scenario_block: float | None = Field(
        None,
        gt=0,
        description="Mean block length in bars; null = Politis-White optimal.",
        json_schema_extra=_NOT_FRICTION,
    )
    scenario_vol_scale: float = Field(
        1.0,
        gt=0,
        description="Stress paths multiply every realised return by this factor.",
        json_schema_extra=_NOT_FRICTION,
    )
    scenario_crash: float | None = Field(
        None,
        gt=-1,
        lt=0,
        description="Inject one bar per path where every symbol loses this.",
        json_schema_extra=_NOT_FRICTION,
    )
    scenario_chunk: int = Field(
        128,
        ge=1,
        description="Scenarios simulated together (bounds memory).",
        json_schema_extra=_NOT_FRICTION,
    )
    percentiles: list[float] = Field(
        default_factory=lambda: [5.0, 50.0, 95.0],
        description="Percentiles of the scenario metrics that are reported.",
        json_schema_extra=_NOT_FRICTION,
    )

    @model_validator(mode="after")
    def _check_latency(self) -> SimulationConfig:
        if not self.latency_bars or min(self.latency_bars) < 0:
            raise ValueError(
                f"simulation.latency_bars must be non-empty bar counts >= 0, got {self.latency_bars}"
            )
        probs = self.latency_probs
        if probs is not None and (
            len(probs) != len(self.latency_bars) or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-9
        ):
            raise ValueError(
                f"simulation.latency_probs {probs} must have one probability >= 0 per "
                f"latency_bars bucket {self.latency_bars} and sum to 1"
            )
        if any(not 0 < q < 100 for q in self.percentiles):
            raise ValueError(
                f"simulation.percentiles must lie strictly between 0 and 100, got {self.percentiles}"
            )
        return self

    @classmethod
    def frictions(cls) -> dict[str, Any]:
        """``{field: off value}`` of every friction, read from the field declarations.

        Raises ``TypeError`` naming a field that declares neither way, so a new field
        cannot slip into "convention" runs unnoticed.
        """
        offs: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or "friction" not in extra:
                raise TypeError(
                    f"SimulationConfig.{name} declares neither friction nor not: add "
                    "json_schema_extra=_friction(off=VALUE) or json_schema_extra=_NOT_FRICTION"
                )
            if extra["friction"]:
                offs[name] = extra["off"]
        return offs

    def frictions_off(self) -> SimulationConfig:
        """A copy with every friction at its off value (the rest, ``cost_bps`` included,
        unchanged): simulating it reproduces the backtest convention at ``cost_bps``."""
        return self.model_copy(update=copy.deepcopy(self.frictions()))
