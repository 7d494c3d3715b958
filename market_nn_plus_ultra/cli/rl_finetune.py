"""``plus-ultra rl-finetune``: PPO fine-tuning of a supervised run into an RL run folder."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel
from rich.table import Table

from ..config import PPOConfig, ReinforcementConfig, field_help
from ..config.reinforcement import EnvConfig, RLCurriculumConfig
from ._common import ConfigOption, SetOption, console, load, out, progress, user_errors, wrote

if TYPE_CHECKING:
    from ..rl.finetune import FinetuneUpdate

# Library modules are imported inside the command so `plus-ultra --help` stays fast.

#: (header, width, UpdateStats field or None for the stage, format): fits 80 columns
_COLUMNS = (
    ("update", 6, "update", "d"),
    ("reward", 9, "mean_reward", "+.2e"),
    ("pi_loss", 9, "policy_loss", "+.2e"),
    ("v_loss", 8, "value_loss", ".2e"),
    ("entropy", 7, "entropy", ".3g"),
    ("kl", 7, "approx_kl", ".1e"),
    ("clip", 4, "clip_fraction", ".2f"),
    ("ev", 5, "explained_variance", "+.2f"),
    ("steps/s", 7, "steps_per_second", ".0f"),
    ("stage", 8, None, ""),
)


def _cfg(section: type[BaseModel], prefix: str, name: str) -> typer.models.OptionInfo:
    """An option that sets ``prefix.name``; its help the field's description and default."""
    return typer.Option(help=f"{prefix}.{name}: {field_help(section, name)}")


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, fmt) if fmt else str(value)


def _row(update: FinetuneUpdate, header: bool) -> Table:
    """One update as a table row, the same column widths every time (a header on the first)."""
    table = Table(box=None, show_header=header, padding=(0, 0, 0, 1), header_style="bold")
    for name, width, _, _ in _COLUMNS:
        justify = "left" if name == "stage" else "right"
        table.add_column(name, width=width, justify=justify, no_wrap=True)
    stats = update.stats
    table.add_row(
        *(
            _cell(getattr(stats, field), fmt) if field else (update.curriculum_stage or "—")
            for _, _, field, fmt in _COLUMNS
        )
    )
    return table


def _default_config(checkpoint: Path, output_dir: Path | None, resume: bool) -> Path:
    """A resumed run's own config.yaml, else the supervised run's."""
    if resume and output_dir is not None and (output_dir / "config.yaml").is_file():
        return output_dir / "config.yaml"
    from ..inference.predict_io import run_config_path

    return run_config_path(checkpoint)


def rl_finetune(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="Run folder of `plus-ultra train` (or a .ckpt in it) to start from: its "
            "model, feature columns and splits; backbone and head warm-start the policy.",
        ),
    ],
    warm_start_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--warm-start-checkpoint",
            help="A `plus-ultra pretrain` backbone (backbone.pt or its .ckpt) to start the "
            "policy's backbone from instead of the supervised one; actor and critic then "
            "start fresh and predictions have no forecast.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda:0, … or auto (a GPU when visible).")
    ] = "auto",
    updates: Annotated[int | None, _cfg(ReinforcementConfig, "reinforcement", "updates")] = None,
    steps_per_rollout: Annotated[
        int | None, _cfg(PPOConfig, "reinforcement.ppo", "steps_per_rollout")
    ] = None,
    num_envs: Annotated[int | None, _cfg(EnvConfig, "reinforcement.env", "num_envs")] = None,
    curriculum_profile: Annotated[
        str | None, _cfg(RLCurriculumConfig, "reinforcement.curriculum", "profile")
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="reinforcement.output_dir: the run folder to write. [config: default "
            f"{ReinforcementConfig().output_dir}]"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --output-dir from its state.pt (the finished run equals "
            "an uninterrupted one); --updates may raise the total.",
        ),
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Fine-tune a supervised run's policy with PPO on the execution simulator and write an
    RL run folder: policy.pt, config.yaml, model_info.json, state.pt, rollouts.parquet (one
    row per update) and TensorBoard events. Prints one table row per update.

    Episodes are drawn from reinforcement.env.split (the purged training split by
    default); --curriculum-profile stages episode length, costs, window and volatility.
    The model comes from --checkpoint; --config (default: the supervised run's
    config.yaml, or the run's own with --resume) must produce the same features.
    `plus-ultra predict --checkpoint DIR` then predicts with the policy.

    Example: plus-ultra rl-finetune --checkpoint outputs/train_desktop --updates 20
    --num-envs 16 --steps-per-rollout 64 --device cpu --output-dir outputs/rl_desktop

    Example: plus-ultra rl-finetune --checkpoint outputs/train_desktop --output-dir
    outputs/rl_desktop --updates 40 --resume"""
    from ..inference import resolve_device
    from ..rl.finetune import finetune

    with user_errors():
        flags = {
            "reinforcement.updates": updates,
            "reinforcement.ppo.steps_per_rollout": steps_per_rollout,
            "reinforcement.env.num_envs": num_envs,
            "reinforcement.curriculum.profile": curriculum_profile,
            "reinforcement.output_dir": output_dir,
        }
        cfg = load(config or _default_config(checkpoint, output_dir, resume), overrides, **flags)
        resolved = str(resolve_device(device))
        started = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("fine-tuning", total=cfg.reinforcement.updates)
            shown = [False]

            def show(update: FinetuneUpdate) -> None:
                bar.console.print(_row(update, header=not shown[0]), highlight=False)
                shown[0] = True
                bar.update(task, completed=update.stats.update)

            result = finetune(
                cfg,
                checkpoint,
                warm_start_checkpoint=warm_start_checkpoint,
                device=resolved,
                resume=resume,
                on_update=show,
            )
    seconds = time.perf_counter() - started
    ran = len(result.history) - result.resumed_from
    resumed = f" (resumed after update {result.resumed_from})" if result.resumed_from else ""
    out.print(
        f"{ran} updates in {seconds:.1f} s on {result.device}{resumed}; "
        f"{result.final.env_steps:,} env steps in all; last reward/bar "
        f"{result.final.mean_reward:+.4g}",
        highlight=False,
    )
    for summary in result.warm_starts:
        console.print(summary.summary(), highlight=False)
    wrote("policy", result.policy_path)
    wrote("rollouts", result.rollouts_path)
    if result.tensorboard_dir is not None:
        wrote("TensorBoard events", result.tensorboard_dir)
    wrote("resume state", result.state_path)
    wrote("run folder", result.run_dir)
