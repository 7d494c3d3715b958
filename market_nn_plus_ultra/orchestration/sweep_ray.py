"""The Ray engine of a benchmark sweep: each scenario is one Ray Tune trial.

A function trainable trains one scenario with :func:`~.sweep.run_scenario` (the
sequential engine's own function) on whichever Ray worker Tune places it, and reports
the scenario's catalogue row as JSON. The driver — the process that called
:func:`run_sweep_ray` — appends each row to the catalogue as its trial finishes, with
:meth:`~.sweep.SweepResult.record`, and ends with :meth:`~.sweep.SweepResult.close`
(the deflated Sharpe ratio over the sweep's trials), so the catalogue gets the same
rows as from the sequential engine; only the order of the rows (the order the trials
finish in), the timings and the ids differ. A trial Ray itself loses (a worker killed
for memory, a node gone) is recorded as a failed row with Ray's error; Tune retries
nothing.

Ray is the ``distributed`` extra: importing this module without it raises
:class:`RayUnavailableError` naming the install command.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import json_ready
from ..config import Config, config_from_dict
from .catalogue import config_json
from .sweep import Scenario, SweepResult, begin_sweep, failed_row, run_scenario, scenario_dir


class RayUnavailableError(ValueError):
    """``--engine ray`` without Ray Tune installed (or too old); the message says the fix."""


_INSTALL = "pip install 'market-nn-plus-ultra[distributed]'"
try:
    import ray
    from ray import tune
    from ray.tune import Callback, Stopper
except ImportError as err:  # names the package that is missing
    raise RayUnavailableError(
        f"--engine ray needs Ray Tune ({err}) — install it with {_INSTALL}, "
        "or use --engine sequential"
    ) from None
if not hasattr(tune, "report") or not hasattr(tune, "RunConfig"):  # ray.tune's API since 2.41
    raise RayUnavailableError(
        f"--engine ray needs Ray Tune 2.41 or newer (found ray {ray.__version__}) — "
        f"upgrade it with {_INSTALL} --upgrade, or use --engine sequential"
    )

__all__ = ["RayOptions", "RayUnavailableError", "run_sweep_ray"]

_ROW = "catalogue_row"  # the result key a trial reports its row under, as JSON text


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray sweep runs.

    ``address``: ``None`` starts a local Ray on this machine (all its cores and GPUs);
    ``"auto"`` joins the cluster this machine is a node of (``ray start``); ``host:port``
    joins the cluster whose head that is. A Ray that this process already initialised is
    used as it is. Ray Client (``ray://``) is refused: under it Tune runs on the cluster,
    away from this process and its catalogue. ``max_concurrent``: trials at once (``None``:
    as many as the resources allow). ``cpus_per_trial`` / ``gpus_per_trial``: what each
    trial reserves (fractions allowed); Ray shows a trial only its own GPUs, so with none
    ``training.accelerator: auto`` trains it on the CPU.
    """

    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        if self.address is not None and self.address.startswith("ray://"):
            raise ValueError(
                f"--ray-address {self.address}: Ray Client would run the trials' bookkeeping "
                "on the cluster, away from the catalogue — run the sweep on a node of the "
                "cluster with --ray-address auto (or the head's host:port)"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(
                f"--max-concurrent {self.max_concurrent}: run at least one trial at a time "
                "(leave it out to run as many as the resources allow)"
            )
        if not self.cpus_per_trial > 0:
            raise ValueError(
                f"--cpus-per-trial {self.cpus_per_trial}: each trial needs a share of a CPU "
                "(> 0, e.g. 1 or 0.5)"
            )
        if not self.gpus_per_trial >= 0:
            raise ValueError(
                f"--gpus-per-trial {self.gpus_per_trial}: give 0 (CPU) or a positive share "
                "of a GPU (e.g. 1 or 0.5)"
            )


def _trial(
    config: dict[str, Any],
    *,
    base_json: str,
    scenarios: list[Scenario],
    folder: str,
    sweep_id: str,
    cwd: str,
) -> None:
    """Ray Tune function trainable: train scenario ``config["index"]``, report its row."""
    if os.path.isdir(cwd):  # Tune starts trials in their own folder: resolve paths as the driver
        os.chdir(cwd)
    index = int(config["index"])
    scenario = scenarios[index]
    base = config_from_dict(json.loads(base_json), "sweep base config")
    row = run_scenario(base, scenario, scenario_dir(Path(folder), index, scenario), run_id=sweep_id)
    tune.report({_ROW: json.dumps(json_ready(row))})


def _row_from_json(text: str) -> dict[str, Any]:
    row = json.loads(text)
    row["timestamp"] = pd.Timestamp(row["timestamp"])
    return row


def _trial_error(trial: Any) -> str:
    """The last line of the traceback Ray wrote for a failed trial, and where the rest is."""
    path = getattr(trial, "error_file", None)
    if path and os.path.isfile(path):
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return f"{lines[-1]} (Ray traceback: {path})"
    return f"the Ray trial failed: {getattr(trial, 'error_msg', None) or 'no error recorded'}"


class _Recorder(Callback):
    """Runs in the driver: keeps each finished trial's row and reports progress."""

    def __init__(
        self,
        sweep: SweepResult,
        scenarios: Sequence[Scenario],
        on_start: Callable[[int, Scenario], None] | None,
        on_done: Callable[[int, Scenario, dict[str, Any]], None] | None,
    ) -> None:
        self.sweep = sweep
        self.scenarios = scenarios
        self.on_start = on_start
        self.on_done = on_done
        self.started: dict[int, float] = {}
        self.done: set[int] = set()
        self.error: Exception | None = None  # the first failure to record a row

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state (for `Tuner.restore`, which
        # a sweep never uses: a rerun is a new sweep); the caller's hooks may hold locks
        return {**self.__dict__, "on_start": None, "on_done": None}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = int(trial.config["index"])
        self.started[index] = time.perf_counter()
        if self.on_start is not None:
            self.on_start(index, self.scenarios[index])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = int(trial.config["index"])
        text = (trial.last_result or {}).get(_ROW)
        if text:
            self._record(index, _row_from_json(text))
        else:
            self._record_failure(index, "the Ray trial ended without reporting its row")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record_failure(int(trial.config["index"]), _trial_error(trial))

    def _record_failure(self, index: int, error: str) -> None:
        scenario = self.scenarios[index]
        folder = scenario_dir(self.sweep.output, index, scenario)
        row = failed_row(scenario, folder, run_id=self.sweep.sweep_id, error=error)
        row["runtime_s"] = time.perf_counter() - self.started.get(index, time.perf_counter())
        self._record(index, row)

    def _record(self, index: int, row: dict[str, Any]) -> None:
        # Tune swallows a callback's exception: keep it, stop the sweep, raise it after
        if self.error is not None or index in self.done:
            return
        try:
            self.sweep.record(row)
            self.done.add(index)
            if self.on_done is not None:
                self.on_done(index, self.scenarios[index], row)
        except Exception as err:
            self.error = err


class _StopOnError(Stopper):
    """Stops every trial once the driver could not record a row."""

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recorder.error is not None


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's newer console output prints a banner even at ``verbose=0``; the classic one
    is silent. The caller shows progress through ``on_start``/``on_done`` instead."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def _trial_dirname(trial: Any) -> str:
    return f"trial-{int(trial.config['index']):03d}"


def _connect(options: RayOptions) -> bool:
    """Start or join Ray unless this process already did; True when this call started it."""
    if ray.is_initialized():
        return False
    # worker output stays in Ray's logs (a failed run's error is in its row)
    ray.init(
        address=options.address,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    if options.address is None:  # a fixed local Ray: a trial larger than it would wait forever
        have = ray.cluster_resources()
        for flag, key, want in (
            ("--cpus-per-trial", "CPU", options.cpus_per_trial),
            ("--gpus-per-trial", "GPU", options.gpus_per_trial),
        ):
            if want > have.get(key, 0.0):
                ray.shutdown()
                raise ValueError(
                    f"{flag} {want:g}: this machine's Ray has {have.get(key, 0.0):g} {key}(s) — "
                    f"lower {flag}, or join a larger cluster with --ray-address"
                )
    return True


def run_sweep_ray(
    base: Config,
    scenarios: Sequence[Scenario],
    output: str | Path,
    catalogue: str | Path,
    *,
    options: RayOptions | None = None,
    on_start: Callable[[int, Scenario], None] | None = None,
    on_done: Callable[[int, Scenario, dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Train every scenario as a Ray Tune trial; append each row to ``catalogue`` as it ends.

    Same folders (``output/<sweep id>/<index>-<values>/``, made absolute so every worker
    writes to the same path), rows and closing deflation as :func:`~.sweep.run_sweep`;
    Tune's own records go to ``output/<sweep id>/ray/``. ``on_start(i, scenario)`` runs
    when a trial starts and ``on_done(i, scenario, row)`` when its row is in the
    catalogue, both in this process. :attr:`SweepResult.rows` is in scenario order.
    Raises ``KeyboardInterrupt`` when the sweep was stopped (Ctrl+C) before every
    trial ended: the finished rows stay in the catalogue, undeflated, as with the
    sequential engine.
    """
    options = options or RayOptions()
    sweep = begin_sweep(scenarios, Path(output).resolve(), catalogue)
    recorder = _Recorder(sweep, scenarios, on_start, on_done)
    trainable = tune.with_parameters(
        _trial,
        base_json=config_json(base),
        scenarios=list(scenarios),
        folder=str(sweep.output),
        sweep_id=sweep.sweep_id,
        cwd=os.getcwd(),
    )
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    started_ray = _connect(options)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"index": tune.grid_search(list(range(len(scenarios))))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=options.max_concurrent,
                trial_dirname_creator=_trial_dirname,
                reuse_actors=True,  # a worker imports torch once, then trains trial after trial
            ),
            run_config=tune.RunConfig(
                name="ray",
                storage_path=str(sweep.output),
                callbacks=[recorder],
                stop=_StopOnError(recorder),
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=0,
            ),
        )
        with _quiet_tune():
            tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    if recorder.error is not None:
        raise recorder.error
    missing = len(scenarios) - len(recorder.done)
    if missing:
        raise KeyboardInterrupt(
            f"sweep {sweep.sweep_id} stopped with {missing} scenario(s) unfinished; "
            f"the {len(recorder.done)} finished row(s) are in {sweep.catalogue_path}"
        )
    order = {str(scenario_dir(sweep.output, i, s)): i for i, s in enumerate(scenarios)}
    sweep.rows.sort(key=lambda row: order[row["checkpoint_dir"]])
    return sweep.close()
