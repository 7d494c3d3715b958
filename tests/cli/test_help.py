"""`--help` shows config defaults (square brackets survive rich) and examples."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.config import EvaluationConfig, ModelConfig, field_help


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_walkforward_help_shows_the_config_defaults():
    text = _help("walkforward")
    assert EvaluationConfig().train_window == 252 and EvaluationConfig().test_window == 63
    assert "bars in each fold's training window. [config: default 252]" in text
    assert "[config: default 63]" in text and "[config: default 5.0]" in text


def test_train_help_shows_defaults_and_an_example():
    text = _help("train")
    assert f"[config: default {ModelConfig().d_model}]" in text
    assert "Example: plus-ultra train --config" in text


def test_data_import_help_has_an_example():
    assert "Example: plus-ultra data import data/market.db --csv" in _help("data", "import")


@pytest.mark.parametrize("command", [("features", "compute"), ("predict",), ("backtest",)])
def test_no_help_text_loses_its_brackets(command):
    # any [word ...] in a help text used to vanish as an unknown rich style
    text = _help(*command)
    assert "[config" in text or "--config" in text  # rendered at all
    if command == ("predict",):
        assert "[config: data.sqlite_path]" in text and "[evaluation.cost_bps]" in text


def test_list_defaults_are_shown_not_pydantic_placeholders():
    text = field_help(EvaluationConfig, "baselines")
    assert "PydanticUndefined" not in text and "default ['buy_and_hold', 'momentum'," in text
