"""Benchmark sweeps and the pretraining comparison, recorded in the catalogue.

A **sweep** trains every scenario of a grid (the Cartesian product of the swept values,
e.g. architectures × widths × depths × horizons), each into its own checkpoint folder,
and appends one catalogue row per scenario right after it finishes (so an interrupted
sweep keeps the rows of the scenarios it completed). :func:`run_sweep` runs the
scenarios one after another in this process; ``sweep_ray.run_sweep_ray`` runs each as
a Ray Tune trial. Both train a scenario with :func:`run_scenario` and keep its row with
:meth:`SweepResult.record`, and both end with :meth:`SweepResult.close`. A scenario that
fails — an invalid combination, a run that diverges, a shape error — is recorded with
its error and the sweep goes on. When the last scenario is done, every row of the sweep
gets its deflated Sharpe ratio (Bailey & López de Prado 2014) with the number of
trials, the sweep's successful scenarios: picking the best of many configurations by
Sharpe is a selection the plain Sharpe ratio does not account for.

A **pretraining comparison** pretrains the backbone once, then trains the same model on
the same data with the same seed and budget twice: from scratch and warm-started from
the pretrained backbone. Both rows share a ``comparison`` id and carry the deltas
(warm-started minus scratch) of validation loss, IC, Sharpe and training time.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import Config, apply_overrides, config_from_dict, config_to_dict
from ..training.pretrain import PretrainResult, pretrain
from ..training.train import train
from .catalogue import (
    DEFLATION_COLUMNS,
    RunTimer,
    append_catalogue,
    config_json,
    dataset_stats,
    deflate_catalogue,
    hardware,
    read_catalogue,
    run_metrics,
)

__all__ = [
    "COMPARED_METRICS",
    "SWEEP_AXES",
    "ComparisonResult",
    "Scenario",
    "SweepResult",
    "begin_sweep",
    "expand_scenarios",
    "failed_row",
    "new_run_id",
    "parse_values",
    "run_pretraining_comparison",
    "run_scenario",
    "run_sweep",
    "scenario_dir",
]

#: Named sweep axes → the config keys each value is written to. Any other dotted config
#: key (``training.learning_rate``) is an axis of its own.
SWEEP_AXES: dict[str, tuple[str, ...]] = {
    "architecture": ("model.architecture",),
    "d_model": ("model.d_model",),
    "depth": ("model.depth",),
    "horizon": ("model.horizon", "windows.horizon"),  # the windows must hold H targets
}
#: Figures the pretraining comparison subtracts (warm-started minus scratch).
COMPARED_METRICS: tuple[str, ...] = ("val_loss", "val_ic", "test_ic", "sharpe", "runtime_s")


@dataclass(frozen=True)
class Scenario:
    """One point of a sweep grid: axis → value (axes as in :data:`SWEEP_AXES`)."""

    values: tuple[tuple[str, Any], ...]

    @property
    def slug(self) -> str:
        """A folder-safe name: the values joined by ``-`` (``hybrid_transformer-64-2-1``)."""
        text = "-".join(str(v) for _, v in self.values) or "base"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text)

    def overrides(self) -> list[str]:
        """``key=value`` config overrides setting every axis of this scenario."""
        # JSON is valid YAML, so strings stay strings and numbers stay numbers
        return [
            f"{key}={json.dumps(value)}"
            for axis, value in self.values
            for key in SWEEP_AXES.get(axis, (axis,))
        ]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def parse_values(items: Sequence[str] | str | None) -> list[Any]:
    """Comma lists and repeated options → one list of values, each parsed as YAML.

    ``["64,128", "256"]`` → ``[64, 128, 256]``; order kept, duplicates dropped.
    """
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    values: list[Any] = []
    for item in items:
        for text in str(item).split(","):
            text = text.strip()
            if not text:
                continue
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            if value not in values:
                values.append(value)
    return values


def _check_axis(axis: str) -> None:
    if axis in SWEEP_AXES or "." in axis:
        return
    guess = difflib.get_close_matches(axis, list(SWEEP_AXES), n=1)
    hint = f" — did you mean `{guess[0]}`?" if guess else ""
    raise ValueError(
        f"sweep axis `{axis}` is unknown{hint} Use one of {', '.join(SWEEP_AXES)} or a dotted "
        "config key such as training.learning_rate"
    )


def expand_scenarios(grid: Mapping[str, Sequence[Any]]) -> list[Scenario]:
    """The Cartesian product of ``grid`` (axis → values), in the order the axes are given.

    Axes with no values are left out (the base config's value is used); an empty grid
    is one scenario, the base config itself.
    """
    axes = [(axis, list(values)) for axis, values in grid.items() if len(values)]
    for axis, _ in axes:
        _check_axis(axis)
    names = [axis for axis, _ in axes]
    return [
        Scenario(tuple(zip(names, combo, strict=True)))
        for combo in itertools.product(*(values for _, values in axes))
    ]


def new_run_id(prefix: str = "sweep") -> str:
    """A sortable, unique id: ``sweep-20250101T120000Z-1a2b``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


def _resolve(base: Config, overrides: list[str]) -> Config:
    return config_from_dict(apply_overrides(config_to_dict(base), overrides), "sweep scenario")


def _axis_columns(cfg: Config | None, scenario: Scenario) -> dict[str, Any]:
    """architecture / d_model / depth / horizon of the run (the scenario's when unresolved)."""
    if cfg is not None:
        m = cfg.model
        return dict(
            architecture=m.architecture, d_model=m.d_model, depth=m.depth, horizon=m.horizon
        )
    values = scenario.as_dict()
    return {axis: values.get(axis) for axis in ("architecture", "d_model", "depth", "horizon")}


def _row_header(scenario: Scenario, checkpoint_dir: Path, run_id: str, kind: str) -> dict:
    return {
        "timestamp": pd.Timestamp.now(tz="UTC"),
        "sweep_id": run_id,
        "scenario_id": f"{run_id}/{checkpoint_dir.name}",
        "kind": kind,
        "swept": json.dumps(scenario.as_dict(), sort_keys=True),
        "checkpoint_dir": str(checkpoint_dir),
        **hardware(),
    }


def run_scenario(
    base: Config,
    scenario: Scenario,
    checkpoint_dir: Path,
    *,
    run_id: str,
    kind: str = "sweep",
    pretrain_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Train ``base`` with ``scenario``'s values into ``checkpoint_dir``; one catalogue row.

    Never raises for a failing run: the row's ``status`` is ``failed`` and ``error``
    holds the exception's type and message.
    """
    started = time.perf_counter()
    row = _row_header(scenario, checkpoint_dir, run_id, kind)
    cfg: Config | None = None
    try:
        cfg = _resolve(base, [*scenario.overrides(), f"training.checkpoint_dir={checkpoint_dir}"])
        row["config"] = config_json(cfg)
        timer = RunTimer()
        result = train(cfg, pretrain_checkpoint=pretrain_checkpoint, callbacks=[timer])
        row.update(dataset_stats(cfg, result.model_info_path))
        row.update(timer.figures())
        row.update(run_metrics(cfg, result))
        row.update(global_step=result.global_step, epochs=result.epochs, status="ok")
    except Exception as err:  # any failure of one scenario is recorded, not fatal
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    row.update(_axis_columns(cfg, scenario))
    row["runtime_s"] = time.perf_counter() - started
    return row


def failed_row(
    scenario: Scenario,
    checkpoint_dir: Path,
    *,
    run_id: str,
    error: str,
    kind: str = "sweep",
    cfg: Config | None = None,
) -> dict[str, Any]:
    """The catalogue row of a run that never produced figures: ``status = failed``, ``error``.

    ``cfg`` (when known) gives the model columns; otherwise the scenario's values do.
    """
    row = _row_header(scenario, checkpoint_dir, run_id, kind)
    row.update(status="failed", error=error, **_axis_columns(cfg, scenario))
    return row


def scenario_dir(folder: Path, index: int, scenario: Scenario) -> Path:
    """The run folder of a sweep's ``index``-th scenario: ``<folder>/007-<slug>``."""
    return Path(folder) / f"{index:03d}-{scenario.slug}"


@dataclass
class SweepResult:
    """A sweep's id, run folder and catalogue, the rows it appended, and the catalogue after.

    Every engine keeps each finished scenario's row with :meth:`record` (in the process
    that drives the sweep) and ends with :meth:`close`.
    """

    sweep_id: str
    output: Path
    catalogue_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    catalogue: pd.DataFrame | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]

    def record(self, row: dict[str, Any]) -> None:
        """Append ``row`` to the catalogue now (atomically, under its lock) and keep it."""
        self.catalogue = append_catalogue(self.catalogue_path, [row])
        self.rows.append(row)

    def close(self) -> SweepResult:
        """Fill :data:`~.catalogue.DEFLATION_COLUMNS` of the sweep's rows over its trials.

        In the catalogue and in :attr:`rows` (plain Python values: ``None`` where a row is
        not a trial). Returns ``self``.
        """
        self.catalogue = deflate_catalogue(self.catalogue_path, self.sweep_id)
        figures = self.catalogue.set_index("scenario_id")[list(DEFLATION_COLUMNS)]
        for row in self.rows:
            for column in DEFLATION_COLUMNS:
                value = figures.at[row["scenario_id"], column]
                row[column] = None if pd.isna(value) else float(value)
            if row["n_trials"] is not None:
                row["n_trials"] = int(row["n_trials"])
        return self


def begin_sweep(
    scenarios: Sequence[Scenario], output: str | Path, catalogue: str | Path
) -> SweepResult:
    """A new sweep id and its folder ``output/<sweep id>``; checks the catalogue reads.

    Raises ``ValueError`` for an empty grid or an unreadable catalogue, before any training.
    """
    if not scenarios:
        raise ValueError("the sweep has no scenarios — give at least one value per axis")
    read_catalogue(catalogue)  # a foreign or damaged file is named now, not after a run
    sweep_id = new_run_id("sweep")
    return SweepResult(sweep_id, Path(output) / sweep_id, Path(catalogue))


def run_sweep(
    base: Config,
    scenarios: Sequence[Scenario],
    output: str | Path,
    catalogue: str | Path,
    *,
    on_start: Callable[[int, Scenario], None] | None = None,
    on_done: Callable[[int, Scenario, dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Train every scenario in turn under ``output/<sweep id>/``; append each row to ``catalogue``.

    ``on_start(i, scenario)`` and ``on_done(i, scenario, row)`` report progress. At the
    end, the sweep's rows (in the catalogue and in ``SweepResult.rows``) get
    :data:`~.catalogue.DEFLATION_COLUMNS` over the sweep's trials.
    """
    sweep = begin_sweep(scenarios, output, catalogue)
    for i, scenario in enumerate(scenarios):
        if on_start is not None:
            on_start(i, scenario)
        folder = scenario_dir(sweep.output, i, scenario)
        row = run_scenario(base, scenario, folder, run_id=sweep.sweep_id)
        sweep.record(row)
        if on_done is not None:
            on_done(i, scenario, row)
    return sweep.close()


@dataclass
class ComparisonResult:
    """The two linked rows of a pretraining comparison and their deltas."""

    comparison_id: str
    output: Path
    catalogue_path: Path
    scratch: dict[str, Any]
    warm_start: dict[str, Any]
    pretrain: PretrainResult | None
    deltas: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.scratch.get("status") == "ok" and self.warm_start.get("status") == "ok"


def _deltas(scratch: dict[str, Any], warm: dict[str, Any]) -> dict[str, float]:
    """Warm-started minus scratch for each of :data:`COMPARED_METRICS` (NaN where missing)."""
    out = {}
    for key in COMPARED_METRICS:
        a, b = scratch.get(key), warm.get(key)
        ok = a is not None and b is not None
        out[key] = float(b) - float(a) if ok else np.nan
    return out


def run_pretraining_comparison(
    base: Config,
    output: str | Path,
    catalogue: str | Path,
    *,
    step: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Pretrain, then train from scratch and warm-started with the same seed and budget.

    Writes ``output/<id>/{pretrain,scratch,warm_start}``; appends both rows, linked by
    ``comparison``, with ``delta_*`` = warm-started minus scratch. ``step(label)`` is
    called before each of the three stages. A failing pretraining is recorded on the
    warm-started row, which then is not trained.
    """
    step = step or (lambda _label: None)
    run_id = new_run_id("compare")
    folder = Path(output) / run_id
    scenario = Scenario(())
    step("pretrain")
    pretrained: PretrainResult | None = None
    pretrain_error = ""
    try:
        pre_cfg = _resolve(base, [f"pretraining.checkpoint_dir={folder / 'pretrain'}"])
        pretrained = pretrain(pre_cfg)
    except Exception as err:  # recorded on the warm-started row below
        pretrain_error = f"pretraining failed: {type(err).__name__}: {err}"
    step("train from scratch")
    scratch = run_scenario(base, scenario, folder / "scratch", run_id=run_id, kind="scratch")
    step("train warm-started")
    if pretrained is not None:
        warm = run_scenario(
            base,
            scenario,
            folder / "warm_start",
            run_id=run_id,
            kind="warm_start",
            pretrain_checkpoint=pretrained.backbone_path,
        )
        warm.update(
            pretrain_s=pretrained.seconds,
            pretrain_loss_before=pretrained.loss_before,
            pretrain_loss_after=pretrained.loss_after,
        )
    else:
        warm = failed_row(
            scenario,
            folder / "warm_start",
            run_id=run_id,
            error=pretrain_error,
            kind="warm_start",
            cfg=base,
        )
        warm["config"] = scratch.get("config")
    deltas = _deltas(scratch, warm)
    for row in (scratch, warm):
        row["comparison"] = run_id
        row.update({f"delta_{key}": value for key, value in deltas.items()})
    append_catalogue(catalogue, [scratch, warm])
    return ComparisonResult(run_id, folder, Path(catalogue), scratch, warm, pretrained, deltas)
