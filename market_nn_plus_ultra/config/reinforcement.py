"""Config section of reinforcement learning (``reinforcement``): the trading environment,
its reward shaping, the PPO learner, the run and its curriculum profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ._base import _Section
from .ppo import PPOConfig

__all__ = [
    "CVaRPenaltyConfig",
    "CurriculumProfile",
    "CurriculumStage",
    "DifferentialRatioConfig",
    "EntropicRiskConfig",
    "EnvConfig",
    "PenaltyConfig",
    "RLCurriculumConfig",
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
    high_vol_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of episode starts drawn from high-volatility start rows (the top "
        "third by mean sigma at the start); null = uniform starts.",
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


class CurriculumStage(_Section):
    """One stage of a curriculum profile: environment settings held for a stretch of updates.

    A null setting keeps the base config's value (``reinforcement.env``, ``windows.window``).
    """

    name: str = Field(
        "stage", min_length=1, description="Name of the stage in logs and the run's records."
    )
    updates: int | None = Field(
        None,
        ge=1,
        description="PPO updates the stage lasts (advance=plateau: at most); null on the last "
        "stage: it lasts to the end of the run.",
    )
    episode_length: int | None = Field(
        None, ge=1, description="Bars per episode in this stage; null = reinforcement.env's."
    )
    cost_multiplier: float | None = Field(
        None, ge=0, description="Scale of every execution charge rate; null = reinforcement.env's."
    )
    window: int | None = Field(
        None,
        ge=1,
        description="Bars of history per observation (at most windows.window); null = "
        "windows.window.",
    )
    high_vol_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of episode starts in high-volatility rows; null = reinforcement.env's.",
    )


class CurriculumProfile(_Section):
    """A named schedule of stages, advanced by update count or by a reward plateau."""

    advance: Literal["updates", "plateau"] = Field(
        "updates",
        description="updates: each stage lasts its `updates`; plateau: a stage ends once the "
        "mean reward has not improved for `patience` updates (or after its `updates`).",
    )
    patience: int = Field(
        5, ge=1, description="advance=plateau: updates without improvement that end a stage."
    )
    min_delta: float = Field(
        0.0,
        ge=0,
        description="advance=plateau: a mean reward must beat the stage's best by more than "
        "this to count as an improvement.",
    )
    stages: list[CurriculumStage] = Field(
        min_length=1, description="The stages in order; the last lasts to the end of the run."
    )

    @model_validator(mode="after")
    def _check(self) -> CurriculumProfile:
        names = [stage.name for stage in self.stages]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"curriculum stage names {repeated} repeat: give every stage its own name"
            )
        if self.advance == "updates":
            open_ended = [s.name for s in self.stages[:-1] if s.updates is None]
            if open_ended:
                raise ValueError(
                    f"advance=updates: stages {open_ended} have updates=null but are not the "
                    "last stage — set how many updates each lasts"
                )
        return self


def _preset_profiles() -> dict[str, CurriculumProfile]:
    """The shipped profiles: short, cost-free, calm episodes first, then the real market."""
    stages = [
        CurriculumStage(
            name="calm", updates=10, episode_length=64, cost_multiplier=0.0, high_vol_share=0.0
        ),
        CurriculumStage(
            name="costs", updates=10, episode_length=128, cost_multiplier=0.5, high_vol_share=0.2
        ),
        CurriculumStage(name="real"),
    ]
    on_plateau = [s.model_copy(update={"updates": 50}) for s in stages[:-1]] + [stages[-1]]
    return {
        "easy_to_real": CurriculumProfile(advance="updates", stages=stages),
        "easy_to_real_plateau": CurriculumProfile(
            advance="plateau", patience=5, min_delta=0.0, stages=on_plateau
        ),
    }


class RLCurriculumConfig(_Section):
    """Curriculum profiles of reinforcement fine-tuning (``--curriculum-profile NAME``)."""

    profile: str | None = Field(
        None,
        description="The profile in force (--curriculum-profile); null = no curriculum, the "
        "environment keeps reinforcement.env's settings.",
    )
    profiles: dict[str, CurriculumProfile] = Field(
        default_factory=_preset_profiles,
        description="Named profiles, each a list of stages of environment settings.",
    )

    @model_validator(mode="after")
    def _known(self) -> RLCurriculumConfig:
        if self.profile is not None and self.profile not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none defined"
            raise ValueError(
                f"reinforcement.curriculum.profile={self.profile!r} is not a profile; "
                f"reinforcement.curriculum.profiles has: {known}"
            )
        return self


class ReinforcementConfig(_Section):
    """Reinforcement fine-tuning: environment, reward shaping, PPO and the run (docs/rl.md)."""

    env: EnvConfig = Field(
        default_factory=EnvConfig, description="Episodes, actions and costs of the environment."
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="Reward shaping terms and their weights."
    )
    ppo: PPOConfig = Field(
        default_factory=PPOConfig, description="The PPO learner and its off-policy option."
    )
    updates: int = Field(50, ge=1, description="PPO updates of a run (rl-finetune --updates).")
    output_dir: Path = Field(
        Path("outputs/rl"), description="Run folder of rl-finetune (--output-dir)."
    )
    rollout_workers: int = Field(
        0,
        ge=0,
        description="Ray actors holding shards of the environments; 0 = in this process (no "
        "Ray needed).",
    )
    curriculum: RLCurriculumConfig = Field(
        default_factory=RLCurriculumConfig,
        description="Staged schedules of episode length, costs, window and volatility share.",
    )
