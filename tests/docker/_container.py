"""Paths and parsers shared by the container tests (not a test module)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile.gpu"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCS = ROOT / "docs" / "containerization.md"

#: The sub-commands the issue asks the container for.
EXPECTED_COMMANDS = ("train", "pretrain", "predict", "rl-finetune", "serve", "retrain")


def tool(name: str) -> str | None:
    """The venv's copy of a linter (installed by the dev extra), else one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction of a stage (ARG values resolved by dockerfile-parse)."""

    name: str
    value: str
    line: int


def stages() -> list[list[Instruction]]:
    """The Dockerfile's stages, each the list of its instructions from its FROM on."""
    with DOCKERFILE.open("rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    out: list[list[Instruction]] = []
    for item in structure:
        if item["instruction"] == "COMMENT":
            continue
        ins = Instruction(item["instruction"], item["value"], item["startline"] + 1)
        if ins.name == "FROM":
            out.append([ins])
        elif out:
            out[-1].append(ins)
    return out


def parent_images() -> list[str]:
    """The FROM images with the ARG defaults before the first FROM substituted."""
    with DOCKERFILE.open("rb") as handle:
        return DockerfileParser(fileobj=handle).parent_images


def arg_defaults() -> dict[str, str]:
    """Every ``ARG NAME=default`` of the Dockerfile, in any stage."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^ARG\s+(\w+)(?:=(\S*))?", DOCKERFILE.read_text(), re.M):
        found[match.group(1)] = match.group(2) or ""
    return found


def exec_form(value: str) -> list[str]:
    """An instruction's JSON (exec-form) argument list; an error for the shell form."""
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise ValueError(f"not an exec-form list of strings: {value!r}")
    return parsed


def entrypoint_commands() -> tuple[str, ...]:
    """The command list the entrypoint declares in ``PLUS_ULTRA_COMMANDS="..."``."""
    match = re.search(r'^PLUS_ULTRA_COMMANDS="([^"]*)"', ENTRYPOINT.read_text(), re.M)
    if match is None:
        raise ValueError(f"{ENTRYPOINT} declares no PLUS_ULTRA_COMMANDS")
    return tuple(match.group(1).split())


def dispatch_labels() -> set[str]:
    """The labels of the entrypoint's top-level ``case "$command" in`` dispatch."""
    text = ENTRYPOINT.read_text()
    block = text[text.rindex('case "$command" in') : text.rindex("esac")]
    labels: set[str] = set()
    for match in re.finditer(r"^ {4}([^\s(#][^)]*)\)\s*$", block, re.M):
        labels.update(label.strip() for label in match.group(1).split("|"))
    return labels


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus ``**``, as Docker does)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(relative: str) -> bool:
    """Whether the build context leaves out ``relative`` (a path under the repo root).

    Docker's rule: patterns apply in order, the last one that matches the path or one of
    its parent folders wins, and ``!`` lets a path back in.
    """
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded
