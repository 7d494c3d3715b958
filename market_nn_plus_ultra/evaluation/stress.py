"""The execution simulator on a predictions frame, and stress tests over scenario paths.

:func:`simulate_backtest` runs the predictions through
:func:`~market_nn_plus_ultra.simulation.execution.simulate_execution` and returns the same
:class:`~market_nn_plus_ultra.evaluation.backtest.BacktestResult` (and metrics JSON) as
the plain convention — identical to it when every friction is off.

:func:`run_stress` simulates N scenario paths at once (chunks of ``[B, T, S]`` tensors):
bars resampled in stationary blocks (Politis & Romano 1994, random block lengths with
mean ``scenario_block``, Politis–White optimal by default), optionally with returns'
deviations from their mean scaled by ``scenario_vol_scale`` and one crash bar of
``scenario_crash`` injected at a random time per path. Positions travel with their bars
(the strategy's decision and the outcome it met), so block joins trade and pay costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..config import SimulationConfig
from ..simulation.execution import COST_KINDS, ExecutionResult, simulate_execution
from .backtest import BacktestResult, require_columns
from .metrics import compute_metrics, infer_periods_per_year

__all__ = [
    "PATH_METRICS",
    "PredictionTensors",
    "StressResult",
    "path_metrics",
    "prediction_tensors",
    "run_stress",
    "shock_returns",
    "simulate_backtest",
    "stationary_bootstrap_indices",
]

#: Metrics computed for every stress path (vectorised over paths).
PATH_METRICS = ("total_return", "cagr", "volatility", "sharpe", "max_drawdown")


@dataclass
class PredictionTensors:
    """A predictions frame on the union calendar: ``[T, S]`` float64 arrays."""

    timestamps: pd.DatetimeIndex
    symbols: pd.Index
    ts_codes: np.ndarray  # row → bar index
    sym_codes: np.ndarray  # row → symbol index
    targets: np.ndarray  # position, carried over bars where the symbol is absent
    returns: np.ndarray  # NaN where absent or unknown
    present: np.ndarray  # bool
    optional: dict[str, np.ndarray] = field(default_factory=dict)  # volatility, dollar_volume…

    def tensors(self, device: str | torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """Every array as a ``[1, T, S]`` tensor (keys: simulate_execution's arguments)."""
        arrays = {
            "targets": self.targets,
            "returns": self.returns,
            "present": self.present,
            **self.optional,
        }
        return {
            k: torch.as_tensor(
                np.array(v), device=device, dtype=torch.bool if v.dtype == bool else dtype
            )[None]
            for k, v in arrays.items()
        }


def _grid(values: np.ndarray, ts: np.ndarray, sym: np.ndarray, shape: tuple[int, int]):
    out = np.full(shape, np.nan)
    out[ts, sym] = values
    return out


def prediction_tensors(
    predictions: pd.DataFrame,
    cfg: SimulationConfig,
    *,
    position_column: str = "position",
    return_column: str = "realised_return",
) -> PredictionTensors:
    """Pivot a long predictions frame to ``[T, S]`` arrays the simulator takes.

    Volatility comes from ``cfg.volatility_column`` or, causally, the std of the past
    ``vol_window`` realised returns (those known at t: up to t−1). Dollar volume is
    ``cfg.volume_column`` or ``volume × close``; ADV is the mean of the past
    ``adv_window`` bars (the bar's own value before any history).
    """
    frame = (
        predictions.reset_index() if isinstance(predictions.index, pd.MultiIndex) else predictions
    )
    require_columns(frame, ["timestamp", "symbol", position_column, return_column])
    ts_codes, ts_levels = pd.factorize(frame["timestamp"], sort=True)
    sym_codes, sym_levels = pd.factorize(frame["symbol"], sort=True)
    shape = (len(ts_levels), len(sym_levels))
    if pd.Series(ts_codes * shape[1] + sym_codes).duplicated().any():
        raise ValueError(
            "predictions: duplicate (timestamp, symbol) rows — keep one row per bar, e.g. "
            "frame.drop_duplicates(['timestamp', 'symbol'], keep='last')"
        )
    pos = frame[position_column].to_numpy(dtype=np.float64)
    if np.isnan(pos).any():
        raise ValueError(f"predictions.{position_column}: {int(np.isnan(pos).sum())} NaN positions")
    present = np.zeros(shape, dtype=bool)
    present[ts_codes, sym_codes] = True
    targets = pd.DataFrame(_grid(pos, ts_codes, sym_codes, shape)).ffill().fillna(0.0)
    returns = _grid(frame[return_column].to_numpy(dtype=np.float64), ts_codes, sym_codes, shape)

    def column(name: str) -> np.ndarray:
        return _grid(frame[name].to_numpy(dtype=np.float64), ts_codes, sym_codes, shape)

    optional: dict[str, np.ndarray] = {}
    if cfg.volatility_column in frame.columns:
        optional["volatility"] = column(cfg.volatility_column)
    else:
        past = pd.DataFrame(returns).shift(1)
        optional["volatility"] = past.rolling(cfg.vol_window, min_periods=2).std().to_numpy()
    volume = None
    if cfg.volume_column in frame.columns:
        volume = column(cfg.volume_column)
    elif {"volume", "close"} <= set(frame.columns):
        volume = column("volume") * column("close")
    if volume is not None:
        dv = pd.DataFrame(volume)
        optional["dollar_volume"] = volume
        optional["adv"] = (
            dv.shift(1).rolling(cfg.adv_window, min_periods=1).mean().fillna(dv).to_numpy()
        )
    if cfg.funding_column in frame.columns:
        optional["funding"] = column(cfg.funding_column)
    return PredictionTensors(
        timestamps=pd.DatetimeIndex(ts_levels, name="timestamp"),
        symbols=pd.Index(sym_levels, name="symbol"),
        ts_codes=ts_codes,
        sym_codes=sym_codes,
        targets=targets.to_numpy(),
        returns=returns,
        present=present,
        optional=optional,
    )


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"simulation.device={name!r} but no CUDA device is available — "
            "use --set simulation.device=cpu"
        )
    return device


def simulate_backtest(
    predictions: pd.DataFrame,
    cfg: SimulationConfig,
    *,
    position_column: str = "position",
    return_column: str = "realised_return",
    benchmark_column: str | None = "benchmark_return",
    periods_per_year: float | None = None,
) -> tuple[BacktestResult, ExecutionResult]:
    """Backtest ``predictions`` through the execution simulator (float64, one path).

    Returns the :class:`BacktestResult` (metrics JSON keys as the convention, plus
    ``cost_<kind>``: the summed per-bar portfolio charge of each friction) and the raw
    :class:`ExecutionResult` ``[1, T, S]``.
    """
    panel = prediction_tensors(
        predictions, cfg, position_column=position_column, return_column=return_column
    )
    valid_rows = ~np.isnan(panel.returns).all(axis=1)
    ppy = periods_per_year or infer_periods_per_year(panel.timestamps[valid_rows])
    t = panel.tensors(_device(cfg.device), torch.float64)
    generator = torch.Generator().manual_seed(cfg.seed)
    sim = simulate_execution(
        t.pop("targets"),
        t.pop("returns"),
        cfg,
        **t,
        periods_per_year=ppy,
        generator=generator,
    )
    as_np = {
        "net": sim.portfolio[0].cpu().numpy(),
        "gross": sim.portfolio_gross[0].cpu().numpy(),
        "cost": sim.portfolio_costs[0].cpu().numpy(),
        "turnover": sim.turnover[0].cpu().numpy(),
    }
    index = panel.timestamps
    result = BacktestResult(
        returns=pd.Series(as_np["net"], index=index, name="net_return"),
        gross=pd.Series(as_np["gross"], index=index, name="gross_return"),
        costs=pd.Series(as_np["cost"], index=index, name="cost"),
        turnover=pd.Series(as_np["turnover"], index=index, name="turnover"),
        net_by_row=np.where(sim.known[0].cpu().numpy(), sim.net[0].cpu().numpy(), np.nan)[
            panel.ts_codes, panel.sym_codes
        ],
    )
    valid = result.returns.notna().to_numpy()
    frame = (
        predictions.reset_index() if isinstance(predictions.index, pd.MultiIndex) else predictions
    )
    bench = None
    if benchmark_column and benchmark_column in frame.columns:
        b = frame[benchmark_column].to_numpy(dtype=np.float64)
        bench_t = pd.Series(b, index=panel.ts_codes).groupby(level=0).mean()
        bench = bench_t.reindex(range(len(index))).to_numpy()[valid]
    result.metrics = compute_metrics(
        result.returns[valid].to_numpy(),
        periods_per_year=ppy,
        turnover=float(result.turnover[valid].mean()) if valid.any() else float("nan"),
        benchmark=bench,
    )
    result.metrics["cost_bps"] = float(cfg.cost_bps)
    for kind in COST_KINDS:
        charge = sim.portfolio_cost(kind)[0].cpu().numpy()[valid]
        result.metrics[f"cost_{kind}"] = float(charge.sum())
    return result, sim


def stationary_bootstrap_indices(
    n_paths: int, length: int, mean_block: float, generator: torch.Generator
) -> Tensor:
    """Bar indices ``[n_paths, length]`` of stationary-bootstrap paths over ``length`` bars.

    Each step starts a new block with probability ``1/mean_block`` (the first always
    does) at a uniform random bar; otherwise it takes the next bar, wrapping around.
    """
    if length < 1 or mean_block <= 0:
        raise ValueError(
            f"stationary bootstrap needs length >= 1 and mean_block > 0, got {length}, {mean_block}"
        )
    new = torch.rand(n_paths, length, generator=generator) < 1.0 / mean_block
    new[:, 0] = True
    starts = torch.randint(0, length, (n_paths, length), generator=generator)
    steps = torch.arange(length).expand(n_paths, length)
    block_at = torch.where(new, steps, torch.zeros_like(steps)).cummax(dim=1).values  # (N, L)
    return (starts.gather(1, block_at) + steps - block_at) % length


def shock_returns(
    returns: Tensor, vol_scale: float, crash: float | None, generator: torch.Generator
) -> Tensor:
    """Stressed returns ``[B, T, S]``: deviations from each symbol's mean × ``vol_scale``;
    with ``crash``, one random bar per path where every return compounds with ``crash``."""
    out = returns
    if vol_scale != 1.0:
        mean = returns.nanmean(dim=1, keepdim=True)  # (B, 1, S) drift is kept
        out = mean + vol_scale * (returns - mean)
    if crash is not None:
        B, T, _ = returns.shape
        at = torch.randint(0, T, (B,), generator=generator).to(returns.device)
        hit = torch.zeros(B, T, 1, dtype=torch.bool, device=returns.device)
        hit[torch.arange(B, device=returns.device), at] = True
        out = torch.where(hit, (1.0 + out) * (1.0 + crash) - 1.0, out)
    return out


def path_metrics(portfolio: Tensor, periods_per_year: float) -> dict[str, np.ndarray]:
    """Total return, CAGR, volatility, Sharpe and max drawdown of every path ``[B, T]``.

    NaN bars are skipped, as :func:`~market_nn_plus_ultra.evaluation.metrics.compute_metrics`
    does; definitions are the same (ddof=1, drawdown from a starting wealth of 1).
    """
    r = portfolio.double()
    ok = ~torch.isnan(r)
    r0 = torch.where(ok, r, torch.zeros_like(r))
    n = ok.sum(dim=1).double()
    wealth = torch.cumprod(1.0 + r0, dim=1)  # (B, T)
    peak = torch.maximum(wealth.cummax(dim=1).values, torch.ones_like(wealth))
    total = wealth[:, -1] - 1.0
    mean = r0.sum(dim=1) / n
    var = torch.where(ok, (r0 - mean[:, None]) ** 2, torch.zeros_like(r0)).sum(dim=1) / (n - 1)
    sd = var.sqrt() * periods_per_year**0.5
    out = {
        "total_return": total,
        "cagr": (1.0 + total) ** (periods_per_year / n) - 1.0,
        "volatility": sd,
        "sharpe": torch.where(sd > 0, mean * periods_per_year / sd, torch.full_like(sd, np.nan)),
        "max_drawdown": (wealth / peak - 1.0).min(dim=1).values,
    }
    return {k: v.cpu().numpy() for k, v in out.items()}


@dataclass
class StressResult:
    """Per-path metrics (arrays of length N) and their percentiles."""

    paths: dict[str, np.ndarray]
    summary: dict[str, object]


def run_stress(
    predictions: pd.DataFrame,
    cfg: SimulationConfig,
    *,
    n_scenarios: int | None = None,
    position_column: str = "position",
    return_column: str = "realised_return",
    periods_per_year: float | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> StressResult:
    """Simulate ``n_scenarios`` (default ``cfg.scenarios``) stress paths in float32 chunks.

    Only bars with at least one known return are resampled. ``on_chunk(k)`` is called
    after every chunk with the number of paths it simulated (for progress bars).
    Returns the paths' metrics and ``summary`` (the metrics JSON's ``scenarios`` entry).
    """
    n = cfg.scenarios if n_scenarios is None else n_scenarios
    if n < 1:
        raise ValueError(f"stress tests need at least one scenario, got {n} (--scenarios N)")
    panel = prediction_tensors(
        predictions, cfg, position_column=position_column, return_column=return_column
    )
    bars = np.flatnonzero(~np.isnan(panel.returns).all(axis=1))
    if len(bars) < 2:
        raise ValueError(f"predictions.{return_column}: fewer than 2 bars with a known return")
    ppy = periods_per_year or infer_periods_per_year(panel.timestamps[bars])
    block = cfg.scenario_block
    if block is None:
        from arch.bootstrap import optimal_block_length

        history = np.nanmean(panel.returns[bars] * panel.targets[bars], axis=1)
        block = float(optimal_block_length(history)["stationary"].iloc[0])
    block = float(min(max(block, 1.0), len(bars)))
    device = _device(cfg.device)
    full = panel.tensors(device, torch.float32)
    full = {k: v[:, torch.as_tensor(bars, device=device)] for k, v in full.items()}
    # One stream per source of randomness: adding a crash or latency keeps the same paths.
    resample_gen, shock_gen, latency_gen = (
        torch.Generator().manual_seed(int(child.generate_state(1)[0]))
        for child in np.random.SeedSequence(cfg.seed).spawn(3)
    )
    metrics: dict[str, list[np.ndarray]] = {k: [] for k in PATH_METRICS}
    for start in range(0, n, cfg.scenario_chunk):
        b = min(cfg.scenario_chunk, n - start)
        if cfg.scenario_resample:
            idx = stationary_bootstrap_indices(b, len(bars), block, resample_gen).to(device)
        else:
            idx = torch.arange(len(bars), device=device).expand(b, len(bars))
        paths = {k: v[0][idx] for k, v in full.items()}  # (b, T, S)
        paths["returns"] = shock_returns(
            paths["returns"], cfg.scenario_vol_scale, cfg.scenario_crash, shock_gen
        )
        sim = simulate_execution(
            paths.pop("targets"),
            paths.pop("returns"),
            cfg,
            **paths,
            periods_per_year=ppy,
            generator=latency_gen,
        )
        for k, v in path_metrics(sim.portfolio, ppy).items():
            metrics[k].append(v)
        if on_chunk is not None:
            on_chunk(b)
    per_path = {k: np.concatenate(v) for k, v in metrics.items()}
    summary: dict[str, object] = {
        "n": n,
        "resample": cfg.scenario_resample,
        "mean_block": block if cfg.scenario_resample else None,
        "vol_scale": cfg.scenario_vol_scale,
        "crash": cfg.scenario_crash,
        "percentiles": {
            k: {f"p{q:g}": float(np.nanpercentile(v, q)) for q in cfg.percentiles}
            for k, v in per_path.items()
        },
    }
    return StressResult(paths=per_path, summary=summary)
