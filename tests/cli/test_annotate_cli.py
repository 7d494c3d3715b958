"""`plus-ultra annotate add | list | export` through the real entry point."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.store import read_table
from market_nn_plus_ultra.rl.feedback import read_feedback
from market_nn_plus_ultra.service.log import PredictionLog


@pytest.fixture
def dbs(tmp_path):
    market = write_fixture(tmp_path / "market.db", symbols=("AAA", "BBB"), rows=60, freq="1D")
    stamps = sorted(read_table(market, "series")["timestamp"].unique())[40:45]
    log = PredictionLog(tmp_path / "service.db")
    log.append(
        [
            (f"req{i}", "1-abc", t, s, t, 0.5, 0.5, 0.0, "{}", "none", "[]", t)
            for i, stamp in enumerate(stamps)
            for t in [pd.Timestamp(stamp).isoformat()]
            for s in ("AAA", "BBB")
        ]
    )
    log.flush()
    log.close()
    return market, tmp_path / "service.db"


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_add_list_export(dbs, tmp_path):
    market, service = dbs
    where = ["--set", f"service.database={service}", "--set", f"data.sqlite_path={market}"]
    added = _run("annotate", "add", "--request-id", "req2", "--symbol", "AAA", "--kind", "veto",
                 "--rationale", "halted", "--author", "ana", *where)  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "annotation 1 (veto) on AAA" in added.output and "request req2" in added.output
    assert f"annotations: {service}" in " ".join(added.output.split())
    noted = _run("annotate", "add", "--timestamp", "2030-01-01", "--symbol", "BBB", "--kind",
                 "note", "--text", "later", *where)  # fmt: skip
    assert noted.exit_code == 0, noted.output
    listed = _run("annotate", "list", "--json", "--kind", "veto", *where)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["kind"], r["symbol"], r["rationale"], r["author"]) for r in rows] == [
        ("veto", "AAA", "halted", "ana")
    ]
    table = _run("annotate", "list", *where)
    assert table.exit_code == 0 and "2 annotations" in table.output and "halted" in table.output
    out = tmp_path / "feedback.parquet"
    exported = _run("annotate", "export", "--output", str(out), "--cost-bps", "0", *where)
    assert exported.exit_code == 0, exported.output
    assert "10 rows (1 vetoed" in exported.output and f"feedback dataset: {out}" in exported.output
    frame, meta = read_feedback(out)
    assert frame["veto"].sum() == 1 and frame.loc[frame["veto"], "request_id"].item() == "req2"
    assert meta["market_db"] == str(market.resolve()) and meta["cost_bps"] == 0.0
    assert (frame["reward_source"] == "market").all()  # no outcome: priced from the closes
    # the 2030 note names no logged prediction: said, not silently dropped
    assert "left out: 1 annotations matching no logged prediction" in exported.output


def test_errors_are_one_message_and_exit_2(dbs):
    _, service = dbs
    where = ["--set", f"service.database={service}"]
    result = _run("annotate", "add", "--request-id", "req1", "--symbol", "AAA", "--kind", "veto",
                  *where)  # fmt: skip
    assert result.exit_code == 2 and "a veto must say why" in result.output
    result = _run("annotate", "add", "--request-id", "req1", "--kind", "note", "--text", "x",
                  *where)  # fmt: skip
    assert result.exit_code == 2 and "served AAA, BBB — pass --symbol" in result.output
    result = _run("annotate", "list", "--database", str(service.parent / "none.db"))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_help_explains_every_option():
    for command, options in (
        ("add", ["--request-id", "--timestamp", "--symbol", "--model-version", "--trade-id",
                 "--kind", "--text", "--rationale", "--author", "--database", "--service-db",
                 "--market-db", "--config", "--set"]),
        ("list", ["--kind", "--symbol", "--since", "--until", "--limit", "--json", "--database"]),
        ("export", ["--output", "--market-db", "--cost-bps", "--annotated-only", "--database"]),
    ):  # fmt: skip
        text = " ".join(_run("annotate", command, "--help").output.split())
        assert all(o in text for o in options), command
        assert "[config: service.database" in text or command == "list" or "Example" in text
