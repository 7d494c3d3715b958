"""Curriculum profiles: staged environment settings over a reinforcement run.

    curriculum = Curriculum.from_config(cfg.reinforcement, "easy_to_real", window=cfg.windows.window)
    curriculum.check(env)                  # every stage fits; the first is configured
    env.reset()
    for update in range(1, updates + 1):
        stats = ppo.step()
        if curriculum.observe(update, stats.mean_reward):   # the stage advanced
            curriculum.apply(env)
            ppo.reset_env()

A profile (``reinforcement.curriculum.profiles.NAME``) is a list of stages, each setting
the episode length, the cost multiplier, the observation window and the share of
high-volatility starts (null: the base config's value). ``advance: updates`` moves on
after each stage's ``updates``; ``advance: plateau`` once the mean reward has not beaten
the stage's best by more than ``min_delta`` for ``patience`` updates (or after the stage's
``updates``, when set). The last stage lasts to the end of the run. Each stage put in
force is logged (``logging`` at INFO, logger ``market_nn_plus_ultra.rl.curriculum``).
"""

from __future__ import annotations

import difflib
import logging
import math
from typing import Any

from ..config.reinforcement import CurriculumProfile, CurriculumStage, ReinforcementConfig
from .starts import UNIFORM_STARTS

__all__ = ["STAGE_SETTINGS", "Curriculum"]

logger = logging.getLogger(__name__)

#: The environment settings a stage sets, as ``env.configure`` keywords.
STAGE_SETTINGS = ("episode_length", "cost_multiplier", "window", "high_vol_share")


class Curriculum:
    """The stage in force of profile ``name`` and when to move to the next.

    ``base`` holds the settings a stage's null fields fall back to (``reinforcement.env``'s
    episode length, cost multiplier and high-volatility share; ``windows.window``).
    """

    def __init__(
        self, name: str, profile: CurriculumProfile, base: dict[str, Any], window: int | None
    ) -> None:
        self.name, self.profile = name, profile
        self.base = {**base, "window": window}
        self.stage_index = 0
        self.stage_start = 0  # update count when the stage began
        self.best = -math.inf  # advance=plateau: the stage's best mean reward so far
        self.stale = 0  # advance=plateau: updates since that best

    @classmethod
    def from_config(
        cls, rl_cfg: ReinforcementConfig, name: str | None = None, *, window: int | None = None
    ) -> Curriculum | None:
        """The profile ``name`` (default: ``rl_cfg.curriculum.profile``); None when neither
        names one. ``window`` is ``windows.window``: stage windows are checked against it
        and stages without a window restore it (without it, the env's window at the first
        :meth:`apply` is taken)."""
        name = rl_cfg.curriculum.profile if name is None else name
        if name is None:
            return None
        profiles = rl_cfg.curriculum.profiles
        if name not in profiles:
            close = difflib.get_close_matches(name, list(profiles), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(profiles)) or "none"
            raise ValueError(
                f"curriculum profile {name!r} is not in reinforcement.curriculum.profiles "
                f"(profiles: {known}){hint}"
            )
        profile = profiles[name]
        if window is not None:
            for i, stage in enumerate(profile.stages):
                if stage.window is not None and stage.window > window:
                    raise ValueError(
                        f"{_where(name, i, stage)}.window={stage.window} exceeds "
                        f"windows.window={window}: observations are cut from the configured "
                        "windows — lower the stage's window or raise windows.window"
                    )
        env = rl_cfg.env
        base = {
            "episode_length": env.episode_length,
            "cost_multiplier": env.cost_multiplier,
            "high_vol_share": env.high_vol_share,
        }
        return cls(name, profile, base, window)

    # ----------------------------------------------------------------------------------
    # The stage in force
    # ----------------------------------------------------------------------------------

    @property
    def stage(self) -> CurriculumStage:
        return self.profile.stages[self.stage_index]

    @property
    def stage_name(self) -> str:
        return self.stage.name

    @property
    def settings(self) -> dict[str, Any]:
        """The current stage's settings, base values filled in (``high_vol_share`` None =
        uniform starts; ``window`` None only while ``windows.window`` is still unknown)."""
        return self._settings(self.stage_index)

    def _settings(self, index: int) -> dict[str, Any]:
        stage = self.profile.stages[index]
        out = {}
        for key in STAGE_SETTINGS:
            value = getattr(stage, key)
            out[key] = self.base[key] if value is None else value
        return out

    def summary(self) -> str:
        """One line for a log: the profile, the stage and its settings."""
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        n = len(self.profile.stages)
        return (
            f"curriculum {self.name}: stage {self.stage_index + 1}/{n} {self.stage_name!r} "
            f"from update {self.stage_start} ({shown})"
        )

    # ----------------------------------------------------------------------------------
    # Configuring environments
    # ----------------------------------------------------------------------------------

    def apply(self, env: Any) -> None:
        """``env.configure(...)`` with the current stage's settings (in force at its next
        ``reset()``); ``env`` is anything with a ``configure`` method (a Ray rollout too)."""
        self._configure(env, self.stage_index)
        logger.info("%s", self.summary())

    def check(self, env: Any) -> None:
        """Configure ``env`` with every stage in turn, so a stage that does not fit (an
        episode longer than the split, a window over windows.window) fails before the run;
        the current stage is configured last, as :meth:`apply` does."""
        for index in range(len(self.profile.stages)):
            self._configure(env, index)
        self.apply(env)

    def _configure(self, env: Any, index: int) -> None:
        if self.base["window"] is None and hasattr(env, "stage_settings"):
            self.base["window"] = int(env.stage_settings["window"])  # windows.window: unchanged yet
        settings = self._settings(index)
        if settings["window"] is None and any(s.window for s in self.profile.stages):
            raise ValueError(
                f"curriculum profile {self.name!r} sets windows: pass window=cfg.windows.window "
                "to Curriculum.from_config so that the other stages restore it"
            )
        if settings["high_vol_share"] is None:
            settings["high_vol_share"] = UNIFORM_STARTS  # None would keep the previous share
        try:
            env.configure(**settings)
        except ValueError as err:
            stage = self.profile.stages[index]
            raise ValueError(f"{_where(self.name, index, stage)}: {err}") from err

    # ----------------------------------------------------------------------------------
    # Advancing
    # ----------------------------------------------------------------------------------

    def observe(self, update: int, mean_reward: float) -> bool:
        """Record the result of update ``update`` (updates done so far, 1 after the first);
        True when the next stage begins (then :meth:`apply` it and reset the env).

        A non-finite ``mean_reward`` counts as no improvement.
        """
        profile, stage = self.profile, self.stage
        if profile.advance == "plateau":
            if math.isfinite(mean_reward) and mean_reward > self.best + profile.min_delta:
                self.best, self.stale = float(mean_reward), 0
            else:
                self.stale += 1
        if self.stage_index == len(profile.stages) - 1:
            return False  # the last stage lasts to the end of the run
        elapsed = update - self.stage_start
        capped = stage.updates is not None and elapsed >= stage.updates
        plateau = profile.advance == "plateau" and self.stale >= profile.patience
        if not (capped or plateau):
            return False
        why = (
            f"no gain > {profile.min_delta:g} in {self.stale} updates"
            if plateau
            else (f"{stage.updates} updates done")
        )
        self.stage_index += 1
        self.stage_start, self.best, self.stale = int(update), -math.inf, 0
        logger.info(
            "curriculum %s: stage %r ends at update %d (%s)", self.name, stage.name, update, why
        )
        return True

    # ----------------------------------------------------------------------------------
    # Saving and restoring
    # ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The stage in force and the advance counters (numbers and strings only)."""
        return {
            "profile": self.name,
            "stage_index": self.stage_index,
            "stage_start": self.stage_start,
            "best": self.best,
            "stale": self.stale,
            "window": self.base["window"],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the curriculum that saved ``state`` (the same profile)."""
        n = len(self.profile.stages)
        if state.get("profile") != self.name:
            raise ValueError(
                f"the curriculum state is of profile {state.get('profile')!r}, not {self.name!r} "
                "— resume with the run's --curriculum-profile"
            )
        if not 0 <= int(state["stage_index"]) < n:
            raise ValueError(
                f"the curriculum state is at stage {state['stage_index']} but profile "
                f"{self.name!r} has {n} stages — the profile changed since the run was saved"
            )
        self.stage_index, self.stage_start = int(state["stage_index"]), int(state["stage_start"])
        self.best, self.stale = float(state["best"]), int(state["stale"])
        if state.get("window") is not None:
            self.base["window"] = int(state["window"])


def _where(name: str, index: int, stage: CurriculumStage) -> str:
    return f"reinforcement.curriculum.profiles.{name}.stages[{index}] ({stage.name!r})"
