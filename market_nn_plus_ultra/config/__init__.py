"""The typed configuration tree.

One pydantic model per section; every field has a type, a default and a one-line
description that doubles as ``--help`` text. Configs load from YAML, take dotted
overrides (``--set data.sqlite_path=other.db``) and are saved, resolved, beside every
artefact so a run can be reproduced exactly::

    cfg = load_config("configs/default.yaml", overrides=["data.symbols=[SPY,QQQ]"])
    save_config(cfg, "outputs/run/config.yaml")
    assert load_config("outputs/run/config.yaml") == cfg

Unknown keys are errors with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from .._io import atomic_write
from ._base import ConfigError, _Section
from .data import (
    AlternativeDataSpec,
    CrossAssetConfig,
    DataConfig,
    FeaturesConfig,
    RegimeConfig,
    WindowsConfig,
)
from .evaluation import (
    BASELINE_NAMES,
    BaselineName,
    EvaluationConfig,
    GuardrailsConfig,
    SimulationConfig,
)
from .model import SEQUENCE_ARCHITECTURES, LossConfig, ModelConfig
from .orchestration import OrchestrationConfig, PromotionConfig
from .ppo import OffPolicyConfig, PPOConfig
from .reinforcement import ReinforcementConfig
from .service import ServiceConfig
from .supervision import Supervision, supervision_of, training_model
from .training import (
    CurriculumConfig,
    CurriculumStage,
    DiagnosticsConfig,
    PretrainingConfig,
    TrackingConfig,
    TrainerConfig,
    TrainingConfig,
)

__all__ = [
    "BASELINE_NAMES",
    "SEQUENCE_ARCHITECTURES",
    "AlternativeDataSpec",
    "BaselineName",
    "Config",
    "ConfigError",
    "CrossAssetConfig",
    "CurriculumConfig",
    "CurriculumStage",
    "DataConfig",
    "DiagnosticsConfig",
    "EvaluationConfig",
    "FeaturesConfig",
    "GuardrailsConfig",
    "LossConfig",
    "ModelConfig",
    "OffPolicyConfig",
    "OrchestrationConfig",
    "PPOConfig",
    "PretrainingConfig",
    "PromotionConfig",
    "RegimeConfig",
    "ReinforcementConfig",
    "ServiceConfig",
    "SimulationConfig",
    "Supervision",
    "TrackingConfig",
    "TrainerConfig",
    "TrainingConfig",
    "WindowsConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "field_help",
    "load_config",
    "save_config",
    "supervision_of",
    "training_model",
]


class Config(_Section):
    """The whole configuration tree. Each section belongs to one layer of the package."""

    seed: int = Field(7, description="Global random seed (data order, initialisation, sampling).")
    data: DataConfig = Field(default_factory=DataConfig, description="Data source and reading.")
    features: FeaturesConfig = Field(
        default_factory=FeaturesConfig, description="Feature selection and parameters."
    )
    windows: WindowsConfig = Field(
        default_factory=WindowsConfig, description="Tensors, sliding windows and purged splits."
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Backbone, head and their sizes."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Supervised training and checkpoints."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment loggers (CSV, TensorBoard, W&B)."
    )
    pretraining: PretrainingConfig = Field(
        default_factory=PretrainingConfig, description="Self-supervised backbone pretraining."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Costs, baselines, walk-forward, bootstrap."
    )
    guardrails: GuardrailsConfig = Field(
        default_factory=GuardrailsConfig, description="Risk limits on target positions."
    )
    reinforcement: ReinforcementConfig = Field(
        default_factory=ReinforcementConfig, description="RL environment, reward shaping and PPO."
    )
    simulation: SimulationConfig = Field(
        default_factory=SimulationConfig, description="Execution simulator and stress scenarios."
    )
    diagnostics: DiagnosticsConfig = Field(
        default_factory=DiagnosticsConfig, description="Training diagnostics and their warnings."
    )
    service: ServiceConfig = Field(
        default_factory=ServiceConfig, description="HTTP service: address, limits, key, log."
    )
    curriculum: CurriculumConfig = Field(
        default_factory=CurriculumConfig, description="Window and horizon growth over epochs."
    )
    orchestration: OrchestrationConfig = Field(
        default_factory=OrchestrationConfig,
        description="Retraining: promotion rules, pushing runs, watching a folder.",
    )

    @model_validator(mode="after")
    def _resolve(self) -> Config:
        supervision_of(self)  # training.supervision: an explicit `all` must be able to run
        return self


# --------------------------------------------------------------------------------------
# Loading, overrides and saving
# --------------------------------------------------------------------------------------


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation: ``X``, ``list[X]``, ``X | None``, …."""
    if isinstance(annotation, type):
        return annotation if issubclass(annotation, BaseModel) else None
    for arg in typing.get_args(annotation):  # list[X], dict[str, X], X | None, Annotated
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _known_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Field names of the sub-model reached by ``path`` (list indices pass through)."""
    current: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int):
            continue  # an entry of a list section: same model as the list's items
        fields = current.model_fields if current is not None else {}
        if part not in fields:
            return []
        current = _section_model(fields[part].annotation)
    return sorted(current.model_fields) if current is not None else []


def _dotted(loc: tuple[str | int, ...]) -> str:
    """``("data", "alternative_data", 0, "name")`` → ``data.alternative_data[0].name``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        loc = tuple(item["loc"])
        dotted = _dotted(loc)
        if item["type"] == "extra_forbidden":
            known = _known_keys(Config, loc[:-1])
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" — did you mean `{_dotted((*loc[:-1], guess[0]))}`?" if guess else ""
            listing = f" Known options here: {', '.join(known)}." if known else ""
            lines.append(f"  unknown option `{dotted}`{hint}{listing}")
        else:
            lines.append(
                f"  `{dotted}`: {item['msg']} (got {item.get('input')!r})"
                if dotted
                else f"  {item['msg']}"
            )
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain mapping into a :class:`Config`, with readable errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {raw!r}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: `{part}` is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set data.sqlite_path=market.db"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key before '=' is empty")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key, value)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist — pass an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        source = str(path)
    raw = apply_overrides(raw, overrides)
    if overrides:
        source += " + --set " + " ".join(overrides)
    return config_from_dict(raw, source)


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML-able types."""
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return its path."""
    return atomic_write(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def field_help(model: type[BaseModel], name: str) -> str:
    """The description of a config field and its default, for reuse as CLI ``--help`` text.

    Plain text, e.g. ``"Walk-forward: bars in each fold's training window. [config: default
    252]"``; the CLI shows square brackets as written (it escapes rich markup).
    """
    info = model.model_fields[name]
    default = info.get_default(call_default_factory=True)  # list defaults use a factory
    shown = default.model_dump(mode="json") if isinstance(default, BaseModel) else default
    return f"{info.description} [config: default {shown!r}]"
