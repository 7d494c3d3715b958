"""The config mechanism: YAML, dotted overrides, hints for unknown keys, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from market_nn_plus_ultra.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    field_help,
    load_config,
    save_config,
)


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    found = [(prefix or "<root>", model)]
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _sections(annotation, f"{prefix}{name}.")
    return found


def test_every_field_is_documented() -> None:
    for where, model in _sections(Config):
        for name, info in model.model_fields.items():
            assert info.description and len(info.description) > 10, f"{where}{name}"


def test_defaults_load_without_a_file() -> None:
    assert load_config() == Config()


def test_dotted_overrides_parse_yaml_values(tmp_path) -> None:
    cfg = load_config(
        None,
        [
            "data.sqlite_path=other.db",
            "data.symbols=[SPY, QQQ]",
            "data.read_threads=4",
            "data.cache=false",
            "seed=11",
        ],
    )
    assert cfg.data.sqlite_path == Path("other.db")
    assert cfg.data.symbols == ["SPY", "QQQ"]
    assert cfg.data.read_threads == 4 and cfg.data.cache is False and cfg.seed == 11


def test_overrides_apply_on_top_of_the_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sqlite_path: a.db\n  read_threads: 3\n")
    cfg = load_config(path, ["data.sqlite_path=b.db"])
    assert cfg.data.sqlite_path == Path("b.db") and cfg.data.read_threads == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"sqlite_pth": "x.db"}}, "did you mean `data.sqlite_path`"),
        ({"dta": {}}, "did you mean `data`"),
        ({"data": {"read_threads": 0}}, "data.read_threads"),
        ({"data": {"read_threads": "many"}}, "data.read_threads"),
    ],
)
def test_bad_keys_and_values_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(raw)


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["data.sqlite_path"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_and_invalid_yaml_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_reloads_identically(tmp_path) -> None:
    cfg = load_config(None, ["data.symbols=[SPY]", "data.gap_tolerance=8.5", "seed=3"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    assert not list(path.parent.glob(".*.tmp"))


def test_shipped_default_yaml_is_the_default_tree() -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert load_config(path) == Config()


def test_field_help_reuses_the_description() -> None:
    from market_nn_plus_ultra.config import DataConfig

    text = field_help(DataConfig, "gap_tolerance")
    assert DataConfig.model_fields["gap_tolerance"].description in text and "5.0" in text
