"""Config section of the PPO learner (``reinforcement.ppo``) and its off-policy option."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ._base import _Section

__all__ = ["OffPolicyConfig", "PPOConfig"]


class OffPolicyConfig(_Section):
    """Advantage-weighted regression of the actor on replayed transitions (docs/rl.md)."""

    enabled: bool = Field(
        False, description="Run off-policy actor updates on a replay buffer after each rollout."
    )
    buffer_size: int = Field(
        262_144, ge=1, description="Transitions the device replay buffer keeps (oldest dropped)."
    )
    batch_size: int = Field(4096, ge=1, description="Replayed transitions per AWR step.")
    updates_per_rollout: int = Field(
        4, ge=0, description="AWR gradient steps after each PPO update (0 = buffer only)."
    )
    awr_beta: float = Field(
        1.0, gt=0, description="AWR temperature: weights are exp(advantage / beta)."
    )
    max_weight: float = Field(
        20.0, gt=0, description="Clip each exp(advantage / beta) weight to this value."
    )
    learning_rate: float = Field(
        1e-4, gt=0, description="Adam learning rate of the off-policy actor steps."
    )
    min_buffer: int = Field(
        1024, ge=1, description="Skip AWR until the buffer holds this many transitions."
    )
    dataset: Path | None = Field(
        None,
        description="Feedback dataset (`plus-ultra annotate export`) that seeds the replay "
        "buffer before the first update; null = none.",
    )
    veto: Literal["exclude", "penalise"] = Field(
        "penalise",
        description="Vetoed actions: exclude = left out of AWR; penalise = also pushed away "
        "by an unlikelihood term.",
    )
    veto_penalty: float = Field(
        10.0,
        ge=0,
        description="Weight of each vetoed action's unlikelihood term −log(1 − P(vetoed action)), "
        "relative to one replayed AWR sample (penalise).",
    )


class PPOConfig(_Section):
    """Proximal policy optimisation with GAE (Schulman et al. 2017; 2016) — docs/rl.md."""

    # rollout
    steps_per_rollout: int = Field(
        128, ge=1, description="Env steps per rollout; a batch is num_envs x steps_per_rollout."
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor of future rewards.")
    gae_lambda: float = Field(
        0.95, ge=0, le=1, description="GAE lambda: 0 = one-step TD, 1 = Monte-Carlo return."
    )
    # optimiser
    learning_rate: float = Field(3e-4, gt=0, description="Adam learning rate at update 0.")
    anneal_lr: bool = Field(
        True, description="Decay the learning rate linearly to 0 over the run's updates."
    )
    adam_eps: float = Field(1e-5, gt=0, description="Adam epsilon.")
    max_grad_norm: float = Field(0.5, gt=0, description="Clip the global gradient norm to this.")
    update_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    minibatches: int = Field(4, ge=1, description="Minibatches the rollout batch splits into.")
    # loss
    clip_coef: float = Field(
        0.2, gt=0, description="Clip the probability ratio to [1 - clip_coef, 1 + clip_coef]."
    )
    clip_value_loss: bool = Field(
        True, description="Clip the value update around the rollout's value (CleanRL's clip_vloss)."
    )
    value_clip_coef: float | None = Field(
        None, gt=0, description="Value clipping range; null = clip_coef."
    )
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus in the loss.")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss in the loss.")
    normalise_advantages: bool = Field(
        True, description="Standardise advantages per minibatch (zero mean, unit variance)."
    )
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Stop an update's epochs once approximate KL exceeds this; null = off.",
    )
    # policy
    init_log_std: float = Field(
        -0.5, description="Initial log standard deviation of the Gaussian actor (continuous)."
    )
    freeze_backbone_updates: int = Field(
        0, ge=0, description="Keep the backbone frozen for the first K updates (heads train)."
    )
    # speed
    compile: bool = Field(False, description="torch.compile the policy's forward pass.")
    autocast: Literal["auto", "bf16", "off"] = Field(
        "auto", description="Mixed precision of the update: auto = bf16 on CUDA, off on CPU."
    )
    sequence_update: bool = Field(
        False,
        description="While the backbone trains, draw minibatches as groups of whole envs and "
        "encode each env's rollout as one sequence (W + T - 1 rows, not T windows of W); "
        "needs model.receptive_field <= windows.window (training.supervision=all) and no "
        "market-state embedding. Envs whose episode restarted inside the rollout are "
        "encoded window by window.",
    )
    off_policy: OffPolicyConfig = Field(
        default_factory=OffPolicyConfig, description="Advantage-weighted off-policy actor updates."
    )

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.off_policy.dataset is not None and not self.off_policy.enabled:
            raise ValueError(
                "reinforcement.ppo.off_policy.dataset seeds the off-policy replay buffer: set "
                "reinforcement.ppo.off_policy.enabled=true, or dataset=null"
            )
        if self.off_policy.enabled and self.off_policy.batch_size > self.off_policy.buffer_size:
            raise ValueError(
                f"reinforcement.ppo.off_policy.batch_size ({self.off_policy.batch_size}) exceeds "
                f"off_policy.buffer_size ({self.off_policy.buffer_size}); lower the batch or "
                "raise the buffer"
            )
        return self

    @property
    def value_clip(self) -> float:
        """The value clipping range in force (``value_clip_coef``, else ``clip_coef``)."""
        return self.clip_coef if self.value_clip_coef is None else self.value_clip_coef
