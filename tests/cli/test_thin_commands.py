"""The commands that used to carry logic are thin: parse, call one function, print."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "market_nn_plus_ultra" / "cli"
COMMANDS = [("backtest.py", "backtest"), ("predict.py", "predict"), ("bench.py", "profile")]
# How a module writes a file or computes a backtest itself, rather than asking the library.
WRITING = ("atomic_path", "atomic_write", "json.dumps", "to_parquet", "to_csv", "csv.writer")
EVALUATING = ("convention_backtest", "simulate_backtest", "run_stress", "select_sample")


def _body_lines(source: str, name: str) -> int:
    func = next(
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == name
    )
    body = func.body[1:] if isinstance(func.body[0], ast.Expr) else func.body  # docstring
    return body[-1].end_lineno - body[0].lineno + 1


@pytest.mark.parametrize(("module", "command"), COMMANDS)
def test_command_bodies_are_at_most_40_lines(module, command):
    assert _body_lines((CLI / module).read_text(), command) <= 40


@pytest.mark.parametrize("module", sorted({m for m, _ in COMMANDS}))
def test_no_writing_or_evaluation_logic_in_the_module(module):
    source = (CLI / module).read_text()
    found = [word for word in (*WRITING, *EVALUATING, "_frictions_off") if word in source]
    assert found == []
