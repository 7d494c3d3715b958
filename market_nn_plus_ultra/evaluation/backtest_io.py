"""A predictions file → one backtest run: what ``plus-ultra backtest`` computes and writes.

:func:`backtest_file` reads the file, enforces its contract, keeps the out-of-sample bars
(:func:`~.sample.select_sample`), backtests them under the convention or through the
execution simulator, optionally stress-tests them, and returns a frozen
:class:`BacktestRun`; :meth:`BacktestRun.to_dict` is the metrics JSON.

The cost comes from one place: ``cost_bps`` when given, else ``simulation.cost_bps`` with
the simulator on and ``evaluation.cost_bps`` with it off. Neither config is changed.
Stress paths of a convention run go through ``simulation.frictions_off()`` at that cost,
so they carry the convention's cost only — whatever frictions the config declares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import write_json
from ..config import EvaluationConfig, SimulationConfig
from .backtest import BacktestResult, backtest
from .sample import ScoredSample
from .stress import StressResult, run_stress, simulate_backtest
from .walkforward_io import load_predictions

__all__ = ["BacktestRun", "backtest_file"]


@dataclass(frozen=True)
class BacktestRun:
    """One backtest of a predictions file.

    ``result``: per-bar returns and the metrics (``result.metrics``); ``sample``: which bars
    were scored; ``simulator``: whether the execution simulator ran (else the convention);
    ``cost_bps``: the cost charged per unit |Δposition| (bps); ``stress``: the stress paths
    when scenarios were asked for.
    """

    result: BacktestResult
    sample: ScoredSample
    simulator: bool
    cost_bps: float
    stress: StressResult | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of the scored bars (``METRIC_KEYS`` plus ``cost_*``)."""
        return self.result.metrics

    @property
    def title(self) -> str:
        """What these numbers are, for a table title."""
        if self.simulator:
            return f"Backtest (execution simulator; {self.sample.label})"
        return f"Backtest (convention, {self.cost_bps:g} bps; {self.sample.label})"

    def to_dict(self) -> dict[str, Any]:
        """The metrics JSON: every metric, ``simulator``, ``sample`` and, with stress
        paths, ``scenarios`` (their percentiles). NaN stays NaN here; write_json nulls it."""
        payload: dict[str, Any] = {
            **self.result.metrics,
            "simulator": self.simulator,
            "sample": self.sample.as_dict(),
        }
        if self.stress is not None:
            payload["scenarios"] = self.stress.summary
        return payload

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as strict JSON (NaN → null), atomically; returns ``path``."""
        return write_json(path, self.to_dict())


def backtest_file(
    path: str | Path,
    evaluation: EvaluationConfig,
    simulation: SimulationConfig,
    *,
    cost_bps: float | None = None,
    include_in_sample: bool = False,
    clip_positions: bool = False,
    return_column: str = "realised_return",
    on_chunk: Callable[[int], None] | None = None,
) -> BacktestRun:
    """Backtest the predictions file at ``path`` (.parquet or .csv).

    The simulator runs when ``simulation.enabled``; stress paths are simulated when
    ``simulation.scenarios > 0`` (``on_chunk(k)`` after each chunk of k paths, for a
    progress bar). ``cost_bps`` overrides the cost of whichever mode runs. Errors name the
    file and the fix (missing columns, positions outside [-1, 1] unless
    ``clip_positions``, duplicated or unsorted keys).
    """
    frame, _, sample = load_predictions(
        path,
        include_in_sample=include_in_sample,
        clip_positions=clip_positions,
        return_column=return_column,
    )
    if simulation.enabled:
        cost = simulation.cost_bps if cost_bps is None else cost_bps
        sim = simulation.model_copy(update={"cost_bps": cost})
        result, _ = simulate_backtest(frame, sim, return_column=return_column)
    else:
        cost = evaluation.cost_bps if cost_bps is None else cost_bps
        result = backtest(frame, cost_bps=cost, return_column=return_column)
        sim = simulation.frictions_off().model_copy(update={"cost_bps": cost})
    stress = None
    if sim.scenarios:
        stress = run_stress(frame, sim, return_column=return_column, on_chunk=on_chunk)
    return BacktestRun(
        result=result, sample=sample, simulator=simulation.enabled, cost_bps=cost, stress=stress
    )
