"""Reinforcement learning: a batched trading environment on the execution simulator, PPO.

    env = VectorTradingEnv.from_config(cfg, num_envs=1024, device="cuda")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(actions)   # actions: (N, S)
    single = TradingEnv.from_config(cfg)                           # gymnasium.Env, numpy
    policy = ActorCritic.from_config(cfg.model, env.n_features, "continuous")
    ppo = PPO(env, policy, cfg.reinforcement.ppo, total_updates)   # see docs/rl.md

See docs/rl.md.
"""

from .buffer import (
    TRANSITION_COLUMNS,
    AWRStats,
    ReplayBuffer,
    RolloutBuffer,
    TransitionError,
    Transitions,
    awr_update,
    load_transitions,
    save_transitions,
)
from .curriculum import STAGE_SETTINGS, Curriculum
from .distributed import RayRollouts
from .env import VectorTradingEnv
from .feedback import FeedbackError, export_feedback, load_feedback
from .finetune import FinetuneError, FinetuneResult, FinetuneUpdate, finetune
from .market import EnvMarket
from .observe import PORTFOLIO_FIELDS
from .policy import (
    ActorCritic,
    PolicyOutput,
    WarmStartError,
    WarmStartSummary,
    load_pretrained_backbone,
    load_supervised,
    read_supervised,
)
from .ppo import PPO, PPOLoss, UpdateStats, explained_variance, gae, ppo_loss
from .reward import REWARD_TERMS, RewardShaper
from .rollout import EnvRollouts, Played
from .starts import HIGH_VOL_FRACTION, UNIFORM_STARTS
from .trading_env import TradingEnv

__all__ = [
    "HIGH_VOL_FRACTION",
    "PORTFOLIO_FIELDS",
    "PPO",
    "REWARD_TERMS",
    "STAGE_SETTINGS",
    "TRANSITION_COLUMNS",
    "UNIFORM_STARTS",
    "AWRStats",
    "ActorCritic",
    "Curriculum",
    "EnvMarket",
    "EnvRollouts",
    "FeedbackError",
    "FinetuneError",
    "FinetuneResult",
    "FinetuneUpdate",
    "PPOLoss",
    "Played",
    "PolicyOutput",
    "RayRollouts",
    "ReplayBuffer",
    "RewardShaper",
    "RolloutBuffer",
    "TradingEnv",
    "TransitionError",
    "Transitions",
    "UpdateStats",
    "VectorTradingEnv",
    "WarmStartError",
    "WarmStartSummary",
    "awr_update",
    "explained_variance",
    "export_feedback",
    "finetune",
    "gae",
    "load_feedback",
    "load_pretrained_backbone",
    "load_supervised",
    "load_transitions",
    "ppo_loss",
    "read_supervised",
    "save_transitions",
]
