"""What the CLI says when something fails: known errors are messages (exit 2), bugs exit 3.

OS and SQLite failures are simulated where a root test runner cannot cause them (a full
disk, a permission refused): the exception is raised where the real one would be.
"""

from __future__ import annotations

import errno
import os
import sqlite3

import pandas as pd
import pytest
from typer.testing import CliRunner

import market_nn_plus_ultra.features as features_pkg
from market_nn_plus_ultra.cli._errors import BUG_EXIT_CODE, user_message
from market_nn_plus_ultra.cli.main import app
from tests.training._train_cases import fixture_db


def _flat(text: str) -> str:
    """``text`` with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("errors"), rows=120)


def _compute(db, output, *extra: str):
    args = ["features", "compute", str(db), "-o", str(output), "--features", "log_return_1"]
    return CliRunner().invoke(app, [*args, *extra])


def test_a_bug_prints_a_short_traceback_and_exits_3(db, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        return {}["close"]  # a KeyError from a lookup: a bug, not the user's input

    monkeypatch.setattr(features_pkg, "compute_features", broken)
    result = _compute(db, tmp_path / "f.parquet")
    assert result.exit_code == BUG_EXIT_CODE == 3
    text = _flat(result.output)
    assert "internal error" in text and "Traceback" in text and "KeyError: 'close'" in text
    assert "This is a bug in plus-ultra" in text and "test_errors.py" in text


def test_a_value_error_from_a_library_is_a_bug_too(db, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        return int("n/a")  # Python raises it, not a `raise` statement of the package

    monkeypatch.setattr(features_pkg, "compute_features", broken)
    result = _compute(db, tmp_path / "f.parquet")
    assert result.exit_code == 3 and "invalid literal for int()" in _flat(result.output)


def test_errors_the_package_raises_on_purpose_stay_messages(db, tmp_path):
    result = CliRunner().invoke(
        app, ["features", "compute", str(db), "--features", "rsi_15", "-o", str(tmp_path / "f")]
    )
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert text.startswith("error:") and "rsi_15" in text and "Traceback" not in text


def test_full_disk_names_the_output_and_the_fix(db, tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # write() names no file

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    output = tmp_path / "out" / "f.parquet"
    result = _compute(db, output)
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert f"no space left on the disk holding {output.parent}" in text
    assert f"while writing {output} " in text and "df -h" in text  # the target, not a temp
    assert not output.exists() and not list(output.parent.glob(".*.tmp"))


def test_output_that_is_a_folder(db, tmp_path):
    folder = tmp_path / "features.parquet"
    folder.mkdir()
    result = _compute(db, folder)
    assert result.exit_code == 2, result.output
    assert f"{folder} is a folder, not a file" in _flat(result.output)


def test_permission_refused_names_the_folder_and_the_fix(db, tmp_path, monkeypatch):
    def refused(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(src), str(dst))

    monkeypatch.setattr(os, "replace", refused)
    output = tmp_path / "ro" / "f.parquet"
    result = _compute(db, output)
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert f"{output}: permission denied" in text and f"chmod u+w {output.parent}" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_real_read_only_folder(db, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = _compute(db, folder / "f.parquet")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2 and "permission denied" in _flat(result.output)


@pytest.mark.slow  # SQLite waits out its 5 s busy timeout before it reports the lock
def test_a_locked_database_says_who_holds_it_and_what_to_do(db, tmp_path):
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = _compute(db, tmp_path / "f.parquet")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert str(db) in text and "locked" in text and "another process" in text
    assert "then re-run" in text


def test_sqlite_errors_map_to_messages_and_unknown_ones_are_bugs():
    locked = user_message(sqlite3.OperationalError("database is locked"))
    assert locked is not None and "another process" in locked
    full = user_message(sqlite3.OperationalError("database or disk is full"))
    assert full is not None and "free space" in full
    assert user_message(sqlite3.OperationalError('near "SELCT": syntax error')) is None
    assert user_message(TypeError("unsupported operand")) is None


def test_unknown_option_in_a_list_section_lists_its_fields(db, tmp_path):
    stage = "curriculum.stages=[{epoch: 1, windo: 3}]"
    result = _compute(db, tmp_path / "f.parquet", "--set", stage)
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert "unknown option `curriculum.stages[0].windo`" in text
    assert "did you mean `curriculum.stages[0].window`?" in text
    assert "Known options here: epoch, horizon, window." in text
    spec = "data.alternative_data=[{name: macro, bogus: 1}]"
    text = _flat(_compute(db, tmp_path / "f.parquet", "--set", spec).output)
    assert "Known options here: asset_classes, columns, enabled," in text
    assert "Known options here: ." not in text
