"""Every ``plus-ultra …`` example in the README, docs/ and ``--help`` parses as written.

Each example's command path must exist, every ``--flag`` it uses must be an option of that
command (or of the group it passes through), and click must parse the whole line: values
of the right type, no stray arguments. Nothing runs, so nothing needs data or a network.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from market_nn_plus_ultra.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^\s*```")


def _examples(path: Path) -> list[tuple[str, str]]:
    """``(where, command line)`` of every ``plus-ultra`` line inside a fenced code block,
    backslash continuations joined, a leading ``$ `` prompt dropped."""
    found: list[tuple[str, str]] = []
    inside, pending, start = False, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(raw):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = raw.strip().removeprefix("$ ")
        if pending:
            line = f"{pending} {line}"
        elif not line.startswith("plus-ultra "):
            continue
        else:
            start = number
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        found.append((f"{path.relative_to(ROOT)}:{start}", line))
    return found


def _all_examples() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [example for path in files for example in _examples(path)]


GROUP = typer.main.get_command(app)


def _help_examples() -> list[tuple[str, str]]:
    """The ``Example: plus-ultra …`` of every command's ``--help`` (up to a blank line)."""
    found: list[tuple[str, str]] = []
    stack = [("plus-ultra", GROUP)]
    while stack:
        path, command = stack.pop()
        for name, sub in getattr(command, "commands", {}).items():
            stack.append((f"{path} {name}", sub))
        for match in re.finditer(
            r"Example:\s*(plus-ultra.*?)(?:\n\s*\n|$)", command.help or "", re.S
        ):
            found.append((f"--help of {path}", " ".join(match.group(1).split())))
    return sorted(found)


EXAMPLES = _all_examples() + _help_examples()


def _option_names(command) -> dict[str, object]:
    return {
        name: param
        for param in command.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("-")
    }


def _resolve(args: list[str]):
    """Walk the command path: ``(command, its arguments, path as text)``; group options
    (``--log-level DEBUG``) before a subcommand are checked against the group."""
    command, path = GROUP, ["plus-ultra"]
    while hasattr(command, "commands"):
        if not args:
            return command, [], " ".join(path)
        token = args.pop(0)
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            known = _option_names(command)
            assert flag in known, f"{' '.join(path)} has no option {flag}: {sorted(known)}"
            if "=" not in token and not getattr(known[flag], "is_flag", False):
                args.pop(0)  # the option's value
            continue
        assert token in command.commands, (
            f"{' '.join(path)} has no command {token!r}: {sorted(command.commands)}"
        )
        command = command.commands[token]
        path.append(token)
    return command, args, " ".join(path)


def test_the_readme_and_docs_have_examples():
    readme = [line for where, line in EXAMPLES if where.startswith("README.md")]
    assert len(readme) >= 15, readme  # the README's command block
    assert any(line.startswith("plus-ultra backtest ") for line in readme)
    helps = {where for where, _ in EXAMPLES if where.startswith("--help of")}
    assert "--help of plus-ultra backtest" in helps and "--help of plus-ultra predict" in helps


@pytest.mark.parametrize(("where", "line"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_parses(where, line):
    args = shlex.split(line, comments=True)[1:]
    command, rest, path = _resolve(args)
    known = _option_names(command)
    for token in rest:
        flag = token.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in known, f"{where}: `{path}` has no option {flag}; it has {sorted(known)}"
    if hasattr(command, "commands"):
        return  # a bare group (`plus-ultra data`) shows its help
    try:
        context = command.make_context(path, list(rest))
    except Exception as err:  # click's usage errors: a bad value, a stray argument
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        pytest.fail(f"{where}: `{line}` does not parse: {message}")
    extra_ok = command.context_settings.get("allow_extra_args", False)
    assert extra_ok or not context.args, f"{where}: unexpected arguments {context.args}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("plus-ultra backtest -p p.parquet --cost-bp 5", "has no option --cost-bp"),
        ("plus-ultra data improt db.sqlite", "has no command 'improt'"),
        ("plus-ultra backtest -p p.parquet --scenarios many", "does not parse"),
        ("plus-ultra predict --checkpoint run stray", "does not parse"),
    ],
)
def test_a_broken_example_is_caught(line, message):
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        test_example_parses("example", line)
