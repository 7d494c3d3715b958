"""Running the stages: skip what is unchanged, resume what was cut, record everything.

For each stage in :data:`~.manifest.STAGES` order, :func:`execute_stage`:

1. asks the stage's plan for the content hashes of what it will read, or why it is
   skipped (a ``--skip-*`` flag, no ``--run-reinforcement``, no ``--push``);
2. leaves a stage alone when its record is ``done``, its inputs hash the same and every
   output it recorded still exists ("unchanged": its files are not touched);
3. otherwise marks it ``running`` (the manifest is rewritten atomically), empties its
   folder — except a train or RL stage cut while running on unchanged inputs, which
   continues from its own checkpoint — runs it, and records ``done`` with its outputs
   and timings, ``skipped`` with the reason, or ``failed`` with the error.

A run killed at any point (``kill -9`` included) leaves a manifest whose finished stages
are ``done``; ``--resume`` then continues at the first stage that is not, and
``--from-stage NAME`` reruns NAME and every stage after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import RetrainRun, StagePlan, StageResult
from .evaluate import plan_evaluate, run_evaluate
from .manifest import STAGES, StageRecord, utc_now
from .options import RetrainOptions, check_stage_name
from .publish import plan_promote, plan_push, plan_report, run_promote, run_push, run_report
from .stages_data import plan_regimes, plan_validate, run_regimes, run_validate
from .stages_model import (
    plan_pretrain,
    plan_rl_finetune,
    plan_train,
    run_pretrain,
    run_rl_finetune,
    run_train,
)

__all__ = ["STAGE_FUNCTIONS", "RetrainResult", "StageEvent", "execute_stage", "run_pipeline"]

log = logging.getLogger(__name__)

Plan = Callable[[RetrainRun], StagePlan]
Run = Callable[[RetrainRun, Path, StagePlan], StageResult]

#: stage name → (plan, run), in pipeline order.
STAGE_FUNCTIONS: dict[str, tuple[Plan, Run]] = {
    "validate": (plan_validate, run_validate),
    "regimes": (plan_regimes, run_regimes),
    "pretrain": (plan_pretrain, run_pretrain),
    "train": (plan_train, run_train),
    "rl_finetune": (plan_rl_finetune, run_rl_finetune),
    "evaluate": (plan_evaluate, run_evaluate),
    "report": (plan_report, run_report),
    "promote": (plan_promote, run_promote),
    "push": (plan_push, run_push),
}
assert tuple(STAGE_FUNCTIONS) == STAGES  # a programming error, not user input


@dataclass(frozen=True)
class StageEvent:
    """A stage starting or ending: ``status`` is ``running`` or its final status;
    ``unchanged`` when a finished stage was left alone."""

    name: str
    index: int
    status: str
    message: str
    unchanged: bool = False


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain run did: the run folder, every stage's record, and the outcome.

    ``promoted``: this run is now the champion. ``decision``: the promotion decision
    (``promote``, ``reasons``, ``metrics``) or None when nothing was evaluated;
    ``why_not``: why there is no new champion, in words (None when promoted).
    """

    run_dir: Path
    manifest: Path
    stages: tuple[StageRecord, ...]
    report: Path | None
    decision: Mapping[str, Any] | None
    promoted: bool
    champion_json: Path | None
    why_not: str | None

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)


def _walk(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        return ()
    found = []
    for root, _, files in os.walk(folder):
        found += [Path(root) / f for f in files if not f.startswith(".")]
    return tuple(sorted(found))


def _unchanged(run: RetrainRun, name: str, plan: StagePlan) -> bool:
    record = run.manifest.stages[name]
    return (
        record.status == "done"
        and record.inputs == plan.inputs
        and run.manifest.outputs_exist(name)
    )


def _prepare(run: RetrainRun, name: str, plan: StagePlan) -> Path:
    """The stage folder: kept for an interrupted resumable stage, else emptied."""
    record = run.manifest.stages[name]
    cut = record.status == "running" and record.inputs == plan.inputs
    if plan.resumable and cut and run.folder(name).is_dir():
        return run.folder(name)
    return run.clear(name)


def execute_stage(
    run: RetrainRun,
    name: str,
    *,
    force: bool = False,
    on_event: Callable[[StageEvent], None] | None = None,
) -> StageRecord:
    """Plan, then skip, leave unchanged or run stage ``name``; returns its new record.

    ``force``: run it even when unchanged (``--from-stage``). A stage that raises is
    recorded ``failed`` (its error in ``note``, any files it wrote in ``outputs``) and
    the error propagates.
    """
    tell = on_event or (lambda _event: None)
    index = STAGES.index(name)
    plan_fn, run_fn = STAGE_FUNCTIONS[name]
    manifest = run.manifest
    started, clock = utc_now(), time.perf_counter()
    if force:
        run.forced.add(name)
    try:
        plan = plan_fn(run)
    except Exception as err:
        manifest.update(
            name,
            status="failed",
            started=started,
            finished=utc_now(),
            seconds=0.0,
            note=str(err),
            outputs=[],
        )
        tell(StageEvent(name, index, "failed", str(err)))
        raise
    if plan.skip is not None:
        record = manifest.update(
            name,
            status="skipped",
            reason=plan.skip,
            inputs=plan.inputs,
            started=None,
            finished=None,
            seconds=None,
            note=None,
        )
        tell(StageEvent(name, index, "skipped", plan.skip))
        return record
    if not force and _unchanged(run, name, plan):
        record = manifest.stages[name]
        tell(StageEvent(name, index, "done", "unchanged", unchanged=True))
        return record
    folder = _prepare(run, name, plan)
    manifest.update(
        name,
        status="running",
        inputs=plan.inputs,
        outputs=[],
        started=started,
        finished=None,
        seconds=None,
        reason=None,
        note=None,
        external_writes={},
    )
    tell(StageEvent(name, index, "running", f"running {name}"))
    try:
        result = run_fn(run, folder, plan)
    except BaseException as err:
        manifest.update(
            name,
            status="failed",
            finished=utc_now(),
            seconds=round(time.perf_counter() - clock, 3),
            outputs=[run.relative(p) for p in _walk(folder)],
            note=f"{type(err).__name__}: {err}",
        )
        tell(StageEvent(name, index, "failed", str(err)))
        raise
    status = "skipped" if result.skipped else "done"
    record = manifest.update(
        name,
        status=status,
        outputs=[run.relative(p) for p in result.outputs],
        inputs=plan.inputs if result.inputs is None else result.inputs,
        finished=utc_now(),
        seconds=round(time.perf_counter() - clock, 3),
        reason=result.skipped,
        note=result.note,
        external_writes=dict(result.external_writes),
    )
    tell(StageEvent(name, index, status, result.skipped or result.note or "done"))
    return record


def _result(run: RetrainRun) -> RetrainResult:
    import json

    stages = tuple(run.manifest.stages[name] for name in STAGES)
    report = run.folder("report") / "report.html"
    promoted_file = run.folder("promote") / "decision.json"
    evaluated = run.folder("evaluate") / "decision.json"
    decision = None
    if run.done("evaluate") and evaluated.is_file():
        decision = json.loads(evaluated.read_text(encoding="utf-8"))
    promoted, champion_json, why = False, None, None
    if run.done("promote") and promoted_file.is_file():
        applied = json.loads(promoted_file.read_text(encoding="utf-8"))
        promoted = bool(applied["promoted"])
        champion_json = Path(applied["champion_json"]) if applied.get("champion_json") else None
        why = None if promoted else f"not promoted: {applied.get('reason')}"
    else:
        record = run.manifest.stages["promote"]
        why = f"the promote stage is {record.status}" + (
            f" ({record.reason})" if record.reason else ""
        )
    return RetrainResult(
        run_dir=run.run_dir,
        manifest=run.manifest.path,
        stages=stages,
        report=report if run.done("report") and report.is_file() else None,
        decision=decision,
        promoted=promoted,
        champion_json=champion_json,
        why_not=why,
    )


def open_run(
    options: RetrainOptions | None = None,
    *,
    resume: Path | None = None,
    changes: Mapping[str, Any] | None = None,
) -> RetrainRun:
    """A new run folder for ``options``, or the run in ``resume`` (``changes`` replace
    recorded options)."""
    if resume is not None:
        if options is not None:
            raise ValueError("pass either options (a new run) or resume (a run folder), not both")
        return RetrainRun.resume(Path(resume), **dict(changes or {}))
    if options is None:
        raise ValueError("a new retrain run needs its options (--dataset, --train-config)")
    return RetrainRun.create(options)


def run_pipeline(
    options: RetrainOptions | None = None,
    *,
    resume: Path | None = None,
    from_stage: str | None = None,
    changes: Mapping[str, Any] | None = None,
    stages: Sequence[str] | None = None,
    on_event: Callable[[StageEvent], None] | None = None,
) -> RetrainResult:
    """Run the retrain pipeline into a new run folder, or continue one with ``resume``.

    ``from_stage``: with ``resume``, rerun this stage and every later one even when
    unchanged. ``changes``: options to replace in a resumed run (e.g. ``{"push": URL}``).
    ``stages``: run only these (default all, in order). ``on_event`` sees every stage
    start and end. Raises the first failing stage's error after recording it.
    """
    if from_stage is not None and resume is None:
        raise ValueError(
            f"--from-stage {from_stage} needs --resume RUN_DIR: a new run runs every stage"
        )
    first = STAGES.index(check_stage_name(from_stage)) if from_stage else len(STAGES)
    chosen = [check_stage_name(s) for s in stages] if stages else list(STAGES)
    if resume is not None:
        with _sole(Path(resume)):
            run = open_run(options, resume=resume, changes=changes)
            return _run_stages(run, chosen, first, on_event)
    run = open_run(options, resume=resume, changes=changes)
    with _sole(run.run_dir):
        return _run_stages(run, chosen, first, on_event)


def _run_stages(
    run: RetrainRun,
    chosen: Sequence[str],
    first: int,
    on_event: Callable[[StageEvent], None] | None,
) -> RetrainResult:
    for name in STAGES:
        if name in chosen:
            execute_stage(run, name, force=STAGES.index(name) >= first, on_event=on_event)
    return _result(run)


class RunBusyError(ValueError):
    """Another process is running the same run folder."""


@contextlib.contextmanager
def _sole(run_dir: Path) -> Iterator[None]:
    """One process at a time per run folder: a second one is refused, not queued (two
    resumes of one run would write the same stage folders). The lock is an advisory
    ``flock`` on ``.retrain.lock`` in the folder, released by the OS if the holder dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    if not run_dir.is_dir():  # RetrainRun.resume names a missing folder and the fix
        yield
        return
    with open(run_dir / ".retrain.lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(
                f"{run_dir} is being run by another plus-ultra retrain right now — wait for it "
                "to finish (or stop it) before --resume"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _new_options(given: Mapping[str, Any]) -> RetrainOptions:
    missing = [f"--{k.replace('_', '-')}" for k in ("dataset", "train_config") if not given.get(k)]
    if missing:
        raise ValueError(
            f"missing {' and '.join(missing)}: a new retrain run needs the database and the "
            "training config (or --resume RUN_DIR to continue a run)"
        )
    values = {k: v for k, v in given.items() if v is not None}
    values["overrides"] = tuple(values.get("overrides") or ())
    return RetrainOptions(**values)


def run_retrain(
    given: Mapping[str, Any],
    *,
    resume: Path | None = None,
    from_stage: str | None = None,
    on_event: Callable[[StageEvent], None] | None = None,
) -> RetrainResult:
    """What ``plus-ultra retrain`` runs: a new run from the options ``given`` (None = not
    given), or, with ``resume``, the recorded run with the given options replacing its own."""
    if resume is not None:
        changes = {k: v for k, v in given.items() if v is not None}
        if "overrides" in changes:
            changes["overrides"] = tuple(changes["overrides"]) or None
        return run_pipeline(
            resume=resume, from_stage=from_stage, changes=changes, on_event=on_event
        )
    if from_stage is not None:
        raise ValueError(
            f"--from-stage {from_stage} needs --resume RUN_DIR: a new run runs every stage"
        )
    return run_pipeline(_new_options(given), on_event=on_event)
