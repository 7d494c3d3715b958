"""The Dagster definitions: stage assets materialised in-process, the dump sensor."""

from __future__ import annotations

import importlib
import json
import shutil
import sys

import pytest

dg = pytest.importorskip("dagster")

from market_nn_plus_ultra.orchestration import dagster_defs  # noqa: E402
from market_nn_plus_ultra.orchestration.pipeline import STAGES  # noqa: E402

from .test_pipeline import TINY, tiny_db  # noqa: E402


def test_one_asset_per_stage_in_order():
    assets = dagster_defs.stage_assets()
    assert [a.key.path[-1] for a in assets] == list(STAGES)
    deps = {a.key.path[-1]: {k.path[-1] for k in a.dependency_keys} for a in assets}
    assert deps["validate"] == set() and deps["train"] == {"pretrain"}
    defs = dagster_defs.build_definitions()
    assert defs.resolve_job_def("retrain") is not None


def test_materialising_the_first_assets_runs_those_stages(tmp_path):
    db = tiny_db(tmp_path / "market.db")
    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 7\n")
    resource = dagster_defs.RetrainResource(
        dataset=str(db),
        train_config=str(config),
        overrides=list(TINY),
        output_dir=str(tmp_path / "runs"),
        skip_pretraining=True,
    )
    result = dg.materialize(dagster_defs.stage_assets()[:2], resources={"retrain": resource})
    assert result.success
    meta = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta["validate"]["status"].text == "done"
    assert meta["regimes"]["status"].text == "skipped"
    run_dir = meta["validate"]["run_dir"].text
    manifest = json.loads(
        (tmp_path / "runs" / run_dir.rsplit("/", 1)[-1] / "manifest.json").read_text()
    )
    assert [s["status"] for s in manifest["stages"][:3]] == ["done", "skipped", "pending"]


def test_the_sensor_asks_for_one_run_per_new_complete_dump(tmp_path):
    folder = tmp_path / "dumps"
    folder.mkdir()
    shutil.copy(tiny_db(tmp_path / "source.db"), folder / "monday.db")
    (folder / "notes.txt").write_text("not a dump")
    job = dg.define_asset_job("retrain", selection=dg.AssetSelection.groups("retrain"))
    sensor = dagster_defs.dump_sensor(folder, job)
    context = dg.build_sensor_context()
    requests = list(sensor(context))
    assert [r.run_config["resources"]["retrain"]["config"]["dataset"] for r in requests] == [
        str(folder / "monday.db")
    ]
    again = dg.build_sensor_context(cursor=context.cursor)
    assert list(sensor(again)) == []  # the same dump does not run twice


def test_importing_without_dagster_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster", None)
    monkeypatch.delitem(sys.modules, "market_nn_plus_ultra.orchestration.dagster_defs")
    with pytest.raises(ImportError, match=r"pip install 'market-nn-plus-ultra\[dagster\]'"):
        importlib.import_module("market_nn_plus_ultra.orchestration.dagster_defs")
