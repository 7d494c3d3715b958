"""Dagster definitions of the retrain pipeline: one asset per stage, a sensor on new dumps.

Needs the ``dagster`` extra (``pip install 'market-nn-plus-ultra[dagster]'``)::

    dagster dev -m market_nn_plus_ultra.orchestration.dagster_defs

Each asset runs one stage with the same function ``plus-ultra retrain`` runs
(:func:`~.pipeline.execute_stage`), so a Dagster run and a command-line run write the same
run folder, manifest and champion: the ``validate`` asset opens a new run folder under
``output_dir`` (or continues ``run_dir``), every later asset receives that folder from the
one before and runs its stage there (a finished stage with unchanged inputs is left
alone, as with ``--resume``). The asset metadata carry each stage's status, seconds and
note.

:func:`build_definitions` takes the default options and an optional folder to watch; the
module-level ``defs`` reads them from the environment (``PLUS_ULTRA_RETRAIN_DATASET``,
``PLUS_ULTRA_RETRAIN_CONFIG``, ``PLUS_ULTRA_RETRAIN_OUTPUT``, ``PLUS_ULTRA_RETRAIN_WATCH``).
The sensor starts one run per SQLite dump that is new or changed in the watched folder
(complete files only: a copy in flight is shorter than its header says), with the
resource's ``dataset`` set to the dump.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import dagster as dg
except ImportError as err:  # pragma: no cover - exercised with dagster hidden
    raise ImportError(
        "market_nn_plus_ultra.orchestration.dagster_defs needs Dagster, which is not "
        "installed — install the extra: pip install 'market-nn-plus-ultra[dagster]'"
    ) from err

from pydantic import Field

from .pipeline import STAGES, RetrainOptions, RetrainRun, execute_stage
from .watch import sqlite_complete

__all__ = ["GROUP", "RetrainResource", "build_definitions", "defs", "dump_sensor", "stage_assets"]

GROUP = "retrain"
_PATTERNS = (".db", ".sqlite", ".sqlite3")


class RetrainResource(dg.ConfigurableResource):
    """The ``plus-ultra retrain`` options of a Dagster run (see ``docs/retrain.md``)."""

    dataset: str = "data/market.db"
    train_config: str = "configs/default_desktop.yaml"
    pretrain_config: str | None = None
    overrides: list[str] = Field(default_factory=list)
    run_reinforcement: bool = False
    warm_start: str = "auto"
    regenerate_regimes: bool = False
    skip_pretraining: bool = False
    skip_training: bool = False
    output_dir: str = "automation_runs"
    push: str | None = None
    #: continue this run folder instead of opening a new one
    run_dir: str | None = None

    def options(self) -> RetrainOptions:
        return RetrainOptions(
            dataset=Path(self.dataset),
            train_config=Path(self.train_config),
            pretrain_config=Path(self.pretrain_config) if self.pretrain_config else None,
            overrides=tuple(self.overrides),
            run_reinforcement=self.run_reinforcement,
            warm_start=self.warm_start,
            regenerate_regimes=self.regenerate_regimes,
            skip_pretraining=self.skip_pretraining,
            skip_training=self.skip_training,
            output_dir=Path(self.output_dir),
            push=self.push,
        )


def _run_stage(context: dg.AssetExecutionContext, run: RetrainRun, name: str) -> str:
    record = execute_stage(run, name)
    context.add_output_metadata(
        {
            "status": record.status,
            "seconds": record.seconds if record.seconds is not None else 0.0,
            "note": record.reason or record.note or "",
            "run_dir": str(run.run_dir),
            "outputs": json.dumps(record.outputs),
        }
    )
    return str(run.run_dir)


def _first_asset() -> dg.AssetsDefinition:
    @dg.asset(name=STAGES[0], group_name=GROUP, description="Strict validation of the database.")
    def _validate(context: dg.AssetExecutionContext, retrain: RetrainResource) -> str:
        if retrain.run_dir:
            run = RetrainRun.resume(Path(retrain.run_dir))
        else:
            run = RetrainRun.create(retrain.options())
        return _run_stage(context, run, STAGES[0])

    return _validate


def _next_asset(name: str, upstream: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=GROUP,
        ins={"run_dir": dg.AssetIn(key=upstream)},
        description=f"The retrain pipeline's {name} stage (docs/retrain.md).",
    )
    def _stage(context: dg.AssetExecutionContext, run_dir: str) -> str:
        return _run_stage(context, RetrainRun.resume(Path(run_dir)), name)

    return _stage


def stage_assets() -> list[dg.AssetsDefinition]:
    """One asset per stage, each depending on the one before (:data:`~.pipeline.STAGES`)."""
    assets = [_first_asset()]
    assets += [_next_asset(name, STAGES[i]) for i, name in enumerate(STAGES[1:])]
    return assets


def _dumps(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _PATTERNS and not p.name.startswith(".")
    )


def dump_sensor(folder: Path, job: Any, *, interval_s: int = 30) -> dg.SensorDefinition:
    """A sensor starting ``job`` once per new or changed complete SQLite dump in ``folder``."""
    folder = Path(folder)

    @dg.sensor(job=job, minimum_interval_seconds=interval_s, name="retrain_on_new_dump")
    def _sensor(context: dg.SensorEvaluationContext):
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        for path in _dumps(folder) if folder.is_dir() else []:
            stat = path.stat()
            version = f"{stat.st_size}:{stat.st_mtime_ns}"
            if seen.get(path.name) == version or not sqlite_complete(path):
                continue
            seen[path.name] = version
            yield dg.RunRequest(
                run_key=f"{path.name}:{version}",
                run_config={"resources": {"retrain": {"config": {"dataset": str(path)}}}},
            )
        context.update_cursor(json.dumps(seen, sort_keys=True))

    return _sensor


def build_definitions(
    resource: RetrainResource | None = None,
    *,
    watch_folder: Path | None = None,
    assets: Sequence[dg.AssetsDefinition] | None = None,
) -> dg.Definitions:
    """The stage assets, the retrain job and (with ``watch_folder``) the dump sensor."""
    chosen = list(assets) if assets is not None else stage_assets()
    job = dg.define_asset_job(GROUP, selection=dg.AssetSelection.groups(GROUP))
    sensors = [dump_sensor(Path(watch_folder), job)] if watch_folder is not None else []
    return dg.Definitions(
        assets=chosen,
        jobs=[job],
        sensors=sensors,
        resources={"retrain": resource or RetrainResource()},
    )


def _from_environment() -> dg.Definitions:
    env = os.environ
    resource = RetrainResource(
        dataset=env.get("PLUS_ULTRA_RETRAIN_DATASET", "data/market.db"),
        train_config=env.get("PLUS_ULTRA_RETRAIN_CONFIG", "configs/default_desktop.yaml"),
        output_dir=env.get("PLUS_ULTRA_RETRAIN_OUTPUT", "automation_runs"),
    )
    watched = env.get("PLUS_ULTRA_RETRAIN_WATCH")
    return build_definitions(resource, watch_folder=Path(watched) if watched else None)


defs = _from_environment()
