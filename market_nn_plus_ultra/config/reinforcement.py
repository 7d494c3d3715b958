"""Config section of reinforcement learning (``reinforcement``): the trading environment,
its reward shaping and the PPO learner."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import _Section
from .ppo import PPOConfig

__all__ = [
    "CVaRPenaltyConfig",
    "DifferentialRatioConfig",
    "EntropicRiskConfig",
    "EnvConfig",
    "PenaltyConfig",
    "ReinforcementConfig",
    "RewardConfig",
]


class EnvConfig(_Section):
    """The batched trading environment (``VectorTradingEnv``, docs/rl.md)."""

    episode_length: int = Field(
        256, ge=1, description="Bars (steps) in an episode before it is truncated."
    )
    action: Literal["continuous", "discrete"] = Field(
        "continuous",
        description="continuous: target position per symbol in [-1, 1]; discrete: 0 = short, "
        "1 = flat, 2 = long.",
    )
    num_envs: int = Field(64, ge=1, description="Environments stepped together as one batch.")
    split: Literal["train", "val", "test", "all"] = Field(
        "train",
        description="Rows episodes are drawn from: a purged split of the windows, or all rows.",
    )
    cost_multiplier: float = Field(
        1.0,
        ge=0,
        description="Scale every execution charge rate (commission, fixed, spread, impact, "
        "borrow, financing); funding rates are market data and stay as they are.",
    )
    stop_equity: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="End an episode (terminated) once equity falls to this fraction of its "
        "start; 0 = only at ruin.",
    )
    check_actions: bool = Field(
        True,
        description="Check every action's shape and range (one host sync per step on a GPU).",
    )
    seed: int | None = Field(
        None, description="Seed of episode starts and latency draws; null = the config's seed."
    )


class DifferentialRatioConfig(_Section):
    """A differential risk-adjusted ratio (Moody & Saffell 2001), added to the reward."""

    enabled: bool = Field(False, description="Add this term to the reward.")
    weight: float = Field(1.0, ge=0, description="Weight of the term in the reward.")
    eta: float = Field(
        0.01, gt=0, le=1, description="Adaptation rate of the moving moments (about 1/bars)."
    )
    clip: float = Field(10.0, gt=0, description="Bound the term to [-clip, clip] per bar.")


class PenaltyConfig(_Section):
    """A penalty subtracted from the reward, ``weight × term``."""

    enabled: bool = Field(False, description="Subtract this term from the reward.")
    weight: float = Field(1.0, ge=0, description="Weight of the term in the reward.")


class CVaRPenaltyConfig(PenaltyConfig):
    """Conditional value at risk of the episode's recent net returns, as a penalty."""

    alpha: float = Field(0.05, gt=0, le=1, description="Tail share: the worst alpha of returns.")
    window: int = Field(64, ge=1, description="Recent bars of the episode the CVaR is taken over.")


class EntropicRiskConfig(_Section):
    """Exponential utility ``(1 − exp(−λ·r))/λ`` in place of part of the net return."""

    enabled: bool = Field(False, description="Add weight × (utility − net return) to the reward.")
    weight: float = Field(1.0, ge=0, description="1 = the reward's net return becomes its utility.")
    risk_aversion: float = Field(
        10.0, gt=0, description="λ: larger values punish losses more than gains reward."
    )


class RewardConfig(_Section):
    """Reward = net portfolio return + switched, weighted shaping terms (docs/rl.md)."""

    scale: float = Field(
        1.0, gt=0, description="Multiply the whole reward (returns of ~1e-3 learn slowly)."
    )
    differential_sharpe: DifferentialRatioConfig = Field(
        default_factory=DifferentialRatioConfig,
        description="Differential Sharpe ratio of the net returns (Moody et al. 1998).",
    )
    differential_sortino: DifferentialRatioConfig = Field(
        default_factory=DifferentialRatioConfig,
        description="Differential downside deviation ratio (Moody & Saffell 2001).",
    )
    drawdown: PenaltyConfig = Field(
        default_factory=PenaltyConfig,
        description="Penalty on the current drawdown 1 − equity / peak equity.",
    )
    cvar: CVaRPenaltyConfig = Field(
        default_factory=CVaRPenaltyConfig,
        description="Penalty on the CVaR (expected tail loss) of recent net returns.",
    )
    entropic: EntropicRiskConfig = Field(
        default_factory=EntropicRiskConfig,
        description="Entropic risk: exponential utility of each bar's net return.",
    )
    turnover: PenaltyConfig = Field(
        default_factory=PenaltyConfig,
        description="Penalty on the bar's turnover (mean |fill| over the symbols).",
    )


class ReinforcementConfig(_Section):
    """Reinforcement fine-tuning: environment, reward shaping and PPO (docs/rl.md)."""

    env: EnvConfig = Field(
        default_factory=EnvConfig, description="Episodes, actions and costs of the environment."
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="Reward shaping terms and their weights."
    )
    ppo: PPOConfig = Field(
        default_factory=PPOConfig, description="The PPO learner and its off-policy option."
    )
