"""PPO fine-tuning of a supervised run: ``finetune(cfg, checkpoint)`` writes an RL run folder.

    result = finetune(cfg, "outputs/train_desktop", output_dir="outputs/rl")
    result.final.mean_reward, result.policy_path        # outputs/rl/policy.pt

The supervised run (``checkpoint``: its folder or a ``.ckpt``) fixes the model (its
``model`` section replaces the config's), the feature columns the config must produce
and the split bounds its predictions are labelled with. The policy starts from it: the
backbone exactly, the head where shapes allow (:func:`~.policy.load_supervised`).
``warm_start_checkpoint`` (a ``plus-ultra pretrain`` backbone) replaces that backbone;
the actor and critic then start fresh and no supervised head is kept.

Episodes come from ``reinforcement.env`` (the purged training split by default) on
``reinforcement.env.num_envs`` environments, in this process or on
``reinforcement.rollout_workers`` Ray actors; the curriculum profile in force
(``reinforcement.curriculum.profile``) is applied before the first update and after each
stage change. After every update the run folder (:mod:`.run_folder`) holds the config,
``policy.pt``, ``state.pt``, ``rollouts.parquet`` (one row per update: the
:class:`~.ppo.UpdateStats` fields and ``curriculum_stage``) and TensorBoard events
(``tracking.tensorboard``, when a writer is importable), each file written atomically.
``resume=True`` continues from ``state.pt``: the finished run equals an uninterrupted one.
With ``reinforcement.ppo.off_policy.dataset`` (an ``plus-ultra annotate export`` file) the
replay buffer starts with the analysts' feedback, resolved on this run's market
(:func:`~.feedback.load_feedback`); the buffer is not saved, so a resumed run seeds it again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .._io import atomic_path, write_json
from ..config import Config, config_to_dict, save_config
from .curriculum import Curriculum
from .env import VectorTradingEnv
from .market import EnvMarket
from .policy import ActorCritic, WarmStartSummary, load_pretrained_backbone, load_supervised
from .ppo import PPO, UpdateStats
from .run_folder import (
    POLICY_FILE,
    POLICY_FORMAT,
    ROLLOUTS_FILE,
    STATE_FILE,
    STATE_FORMAT,
    FinetuneError,
    Source,
    check_features,
    check_folder,
    check_same_run,
    normaliser_state,
    read_source,
    resolve_device,
    save,
    tensorboard_writer,
)

__all__ = ["FinetuneError", "FinetuneResult", "FinetuneUpdate", "finetune"]

log = logging.getLogger(__name__)

_VERSION = 1  # of policy.pt and state.pt


@dataclass(frozen=True)
class FinetuneUpdate:
    """One update of a run: the PPO statistics and the curriculum stage it trained in."""

    stats: UpdateStats
    curriculum_stage: str | None = None

    def as_row(self) -> dict[str, Any]:
        """One row of ``rollouts.parquet``."""
        return {**self.stats.as_row(), "curriculum_stage": self.curriculum_stage}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FinetuneUpdate:
        """The update a row of ``rollouts.parquet`` (or of ``state.pt``'s history) holds."""
        names = [f.name for f in fields(UpdateStats)]
        return cls(UpdateStats(**{k: row[k] for k in names}), row.get("curriculum_stage"))


@dataclass(frozen=True)
class FinetuneResult:
    """Where a run wrote what, and every update's statistics (``history``, in order)."""

    run_dir: Path
    policy_path: Path
    state_path: Path
    rollouts_path: Path
    config_path: Path
    tensorboard_dir: Path | None
    history: tuple[FinetuneUpdate, ...]
    warm_starts: tuple[WarmStartSummary, ...]
    resumed_from: int  # updates done before this call (0 for a fresh run)
    device: str

    @property
    def final(self) -> UpdateStats:
        """The last update's statistics."""
        return self.history[-1].stats


def _policy(
    cfg: Config, source: Source, warm_start: str | Path | None, resumed: bool
) -> tuple[ActorCritic, list[WarmStartSummary], dict[str, torch.Tensor] | None]:
    """The warm-started policy, what was copied, and the supervised head kept for predict
    (a resumed run's weights come from its state: no copy)."""
    rl = cfg.reinforcement
    torch.manual_seed(cfg.seed)  # the fresh tensors' initial values
    policy = ActorCritic.from_config(
        source.model, source.n_features, rl.env.action, init_log_std=rl.ppo.init_log_std
    )
    if warm_start is not None:  # the pretraining backbone wins; the heads start fresh
        return policy, [] if resumed else [load_pretrained_backbone(policy, warm_start)], None
    head = {k: v.clone() for k, v in source.weights.items() if not k.startswith("backbone.")}
    return policy, [] if resumed else [load_supervised(policy, source.file)], head


def _policy_fields(
    cfg: Config,
    source: Source,
    head: dict[str, torch.Tensor] | None,
    market: EnvMarket,
    warm_start: str | Path | None,
) -> dict[str, Any]:
    """What ``policy.pt`` holds besides the weights and the update's counters."""
    return {
        "format": POLICY_FORMAT,
        "version": _VERSION,
        "action_mode": cfg.reinforcement.env.action,
        "model": config_to_dict(source.model),
        "n_features": source.n_features,
        "feature_columns": list(source.info["feature_columns"]),
        "head": head,  # the supervised head's tensors; None from a pretraining backbone
        "normaliser": normaliser_state(market),
        "source_checkpoint": str(source.file),
        "warm_start_checkpoint": None if warm_start is None else str(warm_start),
    }


def _check_warm_start(out: Path, warm_start: str | Path | None) -> None:
    """A resumed run keeps the start it was made from."""
    saved = json.loads((out / "model_info.json").read_text()).get("warm_start_checkpoint")
    given = None if warm_start is None else str(warm_start)
    if given != saved:
        started = f"--warm-start-checkpoint {saved}" if saved else "the supervised backbone"
        fix = f"--warm-start-checkpoint {saved}" if saved else "no --warm-start-checkpoint"
        raise FinetuneError(
            f"--resume: the run in {out} started from {started} — resume with {fix}"
        )


def _seed_replay(cfg: Config, ppo: PPO, market: EnvMarket, collector: Any) -> None:
    """Fill the replay buffer with the feedback dataset of ``off_policy.dataset``, if any."""
    off = cfg.reinforcement.ppo.off_policy
    if off.dataset is None or ppo.replay is None:
        return
    from .feedback import load_feedback

    seeded = load_feedback(
        off.dataset,
        market,
        cfg.windows,
        action_mode=cfg.reinforcement.env.action,
        gamma=cfg.reinforcement.ppo.gamma,
        window=int(collector.stage_settings.get("window") or cfg.windows.window),
        market_state=cfg.model.market_state_embedding,
        num_regimes=cfg.model.num_regimes,
        device=ppo.device,
        market_db=cfg.data.sqlite_path,
    )
    ppo.replay.add(seeded.transitions)
    log.info(seeded.summary(), extra={"fields": {"event": "feedback_seeded", "used": seeded.used}})


def _collector(cfg: Config, source: Source, device: torch.device) -> tuple[Any, EnvMarket]:
    """The rollout source (a local env or Ray rollouts) and the market it trades."""
    rl = cfg.reinforcement
    if rl.rollout_workers == 0:
        env = VectorTradingEnv.from_config(cfg, rl.env.num_envs, device)
        return env, env.market
    from .distributed import RayRollouts  # imports Ray

    market = EnvMarket.from_config(cfg)  # the feature check and the normaliser, here
    rollouts = RayRollouts.from_config(
        cfg, rl.env.num_envs, rl.rollout_workers, str(device), cfg.seed, model=source.model
    )
    return rollouts, market


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


class _Recorder:
    """After each update: the curriculum's turn, then every file of the run folder."""

    def __init__(
        self,
        out: Path,
        ppo: PPO,
        collector: Any,
        curriculum: Curriculum | None,
        history: list[FinetuneUpdate],
        policy_fields: dict[str, Any],
        writer: Any | None,
        on_update: Callable[[FinetuneUpdate], None] | None,
    ) -> None:
        self.out, self.ppo, self.collector, self.curriculum = out, ppo, collector, curriculum
        self.history, self.policy_fields, self.writer = history, policy_fields, writer
        self.on_update = on_update

    def __call__(self, stats: UpdateStats) -> None:
        curriculum, ppo = self.curriculum, self.ppo
        stage, stage_index = None, 0
        if curriculum is not None:
            stage, stage_index = curriculum.stage_name, curriculum.stage_index  # trained in
            if curriculum.observe(stats.update, stats.mean_reward):
                curriculum.apply(self.collector)
                ppo.reset_env()  # the next update's episodes run under the new stage
        update = FinetuneUpdate(stats, stage)
        self.history.append(update)
        rows = [u.as_row() for u in self.history]
        with atomic_path(self.out / ROLLOUTS_FILE) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        policy = {k: v.detach().cpu().clone() for k, v in ppo.policy.state_dict().items()}
        save(
            {
                **self.policy_fields,
                "policy": policy,
                "updates": ppo.update_count,
                "env_steps": ppo.env_steps,
                "stage_settings": dict(self.collector.stage_settings),
                "curriculum_stage": stage,
            },
            self.out / POLICY_FILE,
        )
        state = {
            "format": STATE_FORMAT,
            "version": _VERSION,
            "ppo": ppo.state_dict(),
            "curriculum": None if curriculum is None else curriculum.state_dict(),
            "history": rows,
        }
        save(state, self.out / STATE_FILE)  # last: a crash before it resumes one update back
        if self.writer is not None:
            for name, value in stats.as_row().items():
                if name != "update" and math.isfinite(value):  # NaN: nothing this update
                    self.writer.add_scalar(f"rl/{name}", float(value), stats.update)
            self.writer.add_scalar("rl/curriculum_stage", stage_index, stats.update)
            self.writer.flush()
        if self.on_update is not None:
            self.on_update(update)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _restore(out: Path, ppo: PPO, curriculum: Curriculum | None) -> list[FinetuneUpdate]:
    """Put a saved run back where it stopped; its history so far."""
    path = out / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged, truncated, or a pickle asking for code: refused
        raise FinetuneError(
            f"--resume: {path} is not readable as plain tensors ({type(err).__name__}) — the "
            "file is damaged; start the run again in a new --output-dir"
        ) from None
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise FinetuneError(f"--resume: {path} is not an rl-finetune state file")
    ppo.load_state_dict(state["ppo"])  # the env's state and settings too
    if curriculum is not None and state.get("curriculum") is not None:
        curriculum.load_state_dict(state["curriculum"])
    return [FinetuneUpdate.from_row(row) for row in state["history"]]


def _start(out: Path, cfg: Config, source: Source, warm_start: str | Path | None) -> None:
    """A new run folder: the resolved config and the model info."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    info = {
        **source.info,
        "kind": "rl_policy",
        "source_checkpoint": str(source.file),
        "warm_start_checkpoint": None if warm_start is None else str(warm_start),
        "action": cfg.reinforcement.env.action,
        "window": cfg.windows.window,
    }
    write_json(out / "model_info.json", info)


def finetune(
    cfg: Config,
    checkpoint: str | Path,
    *,
    warm_start_checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    output_dir: str | Path | None = None,
    resume: bool = False,
    on_update: Callable[[FinetuneUpdate], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the supervised run ``checkpoint`` with PPO for ``reinforcement.updates``
    updates and write the run folder (``output_dir``, default ``reinforcement.output_dir``).

    ``on_update`` sees each update after its files are written (a progress display).
    Raises :class:`FinetuneError` (or :class:`~.policy.WarmStartError`) naming what does
    not fit: a missing or foreign checkpoint, features that differ from the checkpoint's,
    ``resume`` without ``state.pt``, a folder holding another run without ``resume``.
    """
    dev = resolve_device(device)
    out = Path(output_dir) if output_dir is not None else Path(cfg.reinforcement.output_dir)
    check_folder(out, resume)
    source = read_source(checkpoint)
    cfg = cfg.model_copy(deep=True)
    cfg.model = source.model  # the policy is the checkpoint's architecture
    cfg.reinforcement.output_dir = out
    if resume:
        check_same_run(cfg, out)
        _check_warm_start(out, warm_start_checkpoint)
    rl = cfg.reinforcement
    curriculum = Curriculum.from_config(rl, window=cfg.windows.window)
    collector, market = _collector(cfg, source, dev)
    try:
        check_features(list(market.tensors.feature_names), source, cfg)
        policy, warm, head = _policy(cfg, source, warm_start_checkpoint, resume)
        if curriculum is not None:
            curriculum.check(collector)  # every stage fits; the first is in force at the reset
        local = collector if rl.rollout_workers == 0 else None
        rollouts = None if rl.rollout_workers == 0 else collector
        ppo = PPO(local, policy, rl.ppo, rl.updates, seed=cfg.seed, rollouts=rollouts)
        _seed_replay(cfg, ppo, market, collector)
        history: list[FinetuneUpdate] = []
        if resume:
            history = _restore(out, ppo, curriculum)
        else:
            _start(out, cfg, source, warm_start_checkpoint)
        resumed_from = len(history)
        policy_fields = _policy_fields(cfg, source, head, market, warm_start_checkpoint)
        writer = tensorboard_writer(cfg.tracking.tensorboard, out / "tensorboard", resumed_from + 1)
        recorder = _Recorder(
            out, ppo, collector, curriculum, history, policy_fields, writer, on_update
        )
        try:
            ppo.learn(updates=max(0, rl.updates - ppo.update_count), callback=recorder)
        finally:
            recorder.close()
    finally:
        if rl.rollout_workers > 0:
            collector.close()
    if not history:
        raise FinetuneError(f"{out}: the run made no update — raise --updates")
    return FinetuneResult(
        run_dir=out,
        policy_path=out / POLICY_FILE,
        state_path=out / STATE_FILE,
        rollouts_path=out / ROLLOUTS_FILE,
        config_path=out / "config.yaml",
        tensorboard_dir=out / "tensorboard" if writer is not None else None,
        history=tuple(history),
        warm_starts=tuple(warm),
        resumed_from=resumed_from,
        device=str(dev),
    )
