"""The data stages: strict validation, then the regime labels.

- **validate** runs the checks of ``plus-ultra data validate --strict`` (every table, raw
  stored values, gaps, weekend bars; warnings fail too) and writes ``report.json`` and
  ``failures.csv`` into ``validate/`` before it fails or passes.
- **regimes** never changes the database unless ``--regenerate-regimes``: without it the
  stage records the labels the database already holds (``labels.json``: rows per
  labeller and label) or is skipped, saying that the report's regime attribution will
  be left out. With it, the labels of ``data.regimes`` are rebuilt in place (as
  ``plus-ultra data build --regime-labels``, in one transaction) and the manifest
  records the database's hash before and after.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..._io import atomic_write, write_json
from ...data.build import build_database
from ...data.store import connect, list_tables, read_table
from ...data.validation import validate_database
from .context import StagePlan, StageResult
from .manifest import file_sha256

if TYPE_CHECKING:
    from .context import RetrainRun

__all__ = ["plan_regimes", "plan_validate", "run_regimes", "run_validate"]


def plan_validate(run: RetrainRun) -> StagePlan:
    return StagePlan({**run.database_input("validate"), **run.sections("train", "data")})


def run_validate(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    """Strict validation of the database; the report is written before a failure is raised."""
    report = validate_database(run.database, gap_tolerance=run.config.data.gap_tolerance)
    passed = report.passed(strict=True)
    payload = {
        "database": str(run.database),
        "strict": True,
        "passed": passed,
        "summary": report.summary(),
        "rows": report.rows,
        "failures": report.to_frame().to_dict(orient="records"),
    }
    outputs = (write_json(folder / "report.json", payload), _csv(report.to_frame(), folder))
    report.raise_if_failed(strict=True)  # DataValidationError: every failure and its fix
    return StageResult(outputs, note=report.summary())


def _csv(frame: pd.DataFrame, folder: Path) -> Path:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return atomic_write(folder / "failures.csv", buffer.getvalue())


def _has_regimes(db: Path) -> bool:
    with contextlib.closing(connect(db)) as con:
        return "regimes" in list_tables(con)


def _label_counts(db: Path) -> list[dict[str, object]]:
    """Rows per (labeller, label) of the database's ``regimes`` table ([] when none)."""
    if not _has_regimes(db):
        return []
    labels = read_table(db, "regimes", parse_time=False)
    if labels.empty:
        return []
    counts = labels.groupby(["name", "value"]).size().rename("rows").reset_index()
    return [
        {"labeller": str(r.name), "label": str(r.value), "rows": int(r.rows)}
        for r in counts.itertuples(index=False)
    ]


def plan_regimes(run: RetrainRun) -> StagePlan:
    inputs = {**run.database_input("regimes"), **run.sections("train", "data")}
    inputs.update(run.files(run.folder("validate") / "report.json"))
    return StagePlan(inputs)


def run_regimes(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    """Record the database's regime labels, or rebuild them with ``--regenerate-regimes``."""
    db = run.database
    key = run.relative(db)
    if not run.options.regenerate_regimes:
        counts = _label_counts(db)
        if not counts:
            return StageResult(
                skipped=f"{db} has no `regimes` rows and --regenerate-regimes was not given "
                "(the database is never changed without it): the report leaves regime "
                "attribution out; pass --regenerate-regimes to write the labels of "
                "data.regimes into the database"
            )
        path = write_json(
            folder / "labels.json",
            {"database": str(db), "regenerated": False, "labels": counts},
        )
        names = sorted({c["labeller"] for c in counts})
        return StageResult(
            (path,), note=f"recorded existing labels ({', '.join(names)}); database unchanged"
        )
    result = build_database(run.config.data.model_copy(update={"sqlite_path": db}), regimes=True)
    counts = [
        {"labeller": str(r.name), "label": str(r.value), "rows": int(r.rows)}
        for r in result.label_counts.itertuples(index=False)
    ]
    after = file_sha256(db)
    path = write_json(
        folder / "labels.json",
        {
            "database": str(db),
            "regenerated": True,
            "sha256_before": plan.inputs[key],
            "sha256_after": after,
            "labels": counts,
            "summary": result.summary(),
        },
    )
    note = f"wrote {result.regime_rows:,} labels into {db} (--regenerate-regimes)"
    return StageResult((path,), note=note, external_writes={key: after})
