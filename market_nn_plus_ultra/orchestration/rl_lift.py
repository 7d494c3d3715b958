"""Honest RL lift: does PPO fine-tuning beat the supervised policy it starts from?

``plus-ultra bench rl-lift`` answers on bars neither model ever saw. The database's
calendar is cut into the purged walk-forward folds of :func:`~.retrain.retrain_folds`
(``evaluation.train_window`` / ``test_window`` / ``step`` / ``embargo``, purged by the
model's window and horizon). For every fold:

1. **The supervised model.** The given run when its last validation bar lies before the
   fold's first test bar (it never trained, validated or early-stopped on the fold's test
   bars); otherwise a fresh model of the run's config trained on the fold's past only,
   exactly as ``walkforward --retrain`` trains a fold (:func:`~.retrain.fit_fold`).
2. **The fine-tunes.** For each seed, PPO fine-tunes that model
   (:func:`~market_nn_plus_ultra.rl.finetune.finetune`) on episodes drawn from the fold's
   past only: ``data.end`` is the fold's last training row and ``reinforcement.env.split``
   is ``all`` of those rows.
3. **The test.** The supervised model and every fine-tune predict the fold's test bars
   (each prediction reads bars up to the one predicted); buy-and-hold holds every symbol
   long. All three are scored with the same costs: the execution simulator when
   ``simulation.enabled``, else the backtest convention at ``evaluation.cost_bps``.

The folds' test bars are stitched. Per seed, the statistic is ``Sharpe(fine-tune) −
Sharpe(supervised)`` (annualised) with a paired stationary-bootstrap interval
(:func:`~market_nn_plus_ultra.evaluation.paired.sharpe_differences`); pooled, the mean of
that difference over the seeds, bootstrapped with one index set for every seed and the
supervised returns (:func:`~market_nn_plus_ultra.evaluation.paired.mean_sharpe_lift`).
One catalogue row per seed and one pooled row (``kind`` ``rl_lift`` / ``rl_lift_pooled``,
linked by ``comparison``) are appended to the benchmark catalogue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path, atomic_write
from ..config import Config
from ..evaluation.backtest import backtest
from ..evaluation.metrics import infer_periods_per_year, sharpe_ratio
from ..evaluation.paired import mean_sharpe_lift, sharpe_differences
from ..evaluation.sample import OUT_OF_SAMPLE, label_samples, select_sample
from ..evaluation.stress import simulate_backtest
from ..features.compute import compute_features
from ..inference.agent import Agent
from .catalogue import append_catalogue, config_json, hardware
from .retrain import RetrainFold, fit_fold, retrain_folds
from .sweep import new_run_id

__all__ = ["LIFT_COLUMNS", "RLLiftResult", "run_rl_lift"]

#: Columns of the lift table (one row per seed, then the pooled row).
LIFT_COLUMNS = (
    "seed",
    "n_bars",
    "supervised_sharpe",
    "finetune_sharpe",
    "buy_and_hold_sharpe",
    "delta_sharpe",
    "delta_low",
    "delta_high",
    "p_value",
    "prob_beat",
)
_PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class RLLiftResult:
    """``table``: :data:`LIFT_COLUMNS`, one row per seed and a last ``pooled`` row;
    ``folds``: each fold's bounds and where its supervised model came from."""

    lift_id: str
    output: Path
    table: pd.DataFrame
    folds: tuple[dict[str, Any], ...]
    catalogue_path: Path | None
    level: float
    cost: str

    @property
    def pooled(self) -> dict[str, Any]:
        """The pooled row (mean lift over the seeds) as a dict."""
        return self.table.iloc[-1].to_dict()


def _write_parquet(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame


def _cached(path: Path, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``path``'s frame when an earlier (interrupted) run wrote it, else ``make()`` saved."""
    return pd.read_parquet(path) if path.is_file() else _write_parquet(make(), path)


def _predictor(
    run: Path, cfg: Config, fold: RetrainFold, device: str
) -> Callable[[], pd.DataFrame]:
    """Predictions of ``fold``'s test bars by the run in ``run`` (supervised or RL)."""

    def predict() -> pd.DataFrame:
        agent = Agent.from_checkpoint(run, device=device)
        start, end = fold.bound(fold.test_rows, False), fold.bound(fold.test_rows, True)
        frame = agent.predict(cfg.data.sqlite_path, start=start, end=end)
        frame.insert(2, "fold", fold.name)
        return frame

    return predict


def _scored(frame: pd.DataFrame, cfg: Config) -> pd.Series:
    """Per-bar portfolio net returns of a predictions frame, at the configured costs."""
    if cfg.simulation.enabled:
        result, _ = simulate_backtest(frame, cfg.simulation)
    else:
        result = backtest(frame, cost_bps=cfg.evaluation.cost_bps)
    return result.returns.dropna()


def _cost_label(cfg: Config) -> str:
    if cfg.simulation.enabled:
        return f"execution simulator (cost_bps {cfg.simulation.cost_bps:g} and its frictions)"
    return f"backtest convention at evaluation.cost_bps={cfg.evaluation.cost_bps:g}"


def _supervised_source(agent: Agent, fold: RetrainFold) -> bool:
    """True when every test bar of ``fold`` is out of sample for the given run (it never
    trained or validated on them, embargo rows included)."""
    stamps = fold.stamps[fold.test_rows.start : fold.test_rows.stop]
    return bool(np.isin(label_samples(stamps, agent.sample_bounds), OUT_OF_SAMPLE).all())


def _finetune_config(cfg: Config, supervised: Config, fold: RetrainFold, seed: int) -> Config:
    """The fine-tune's config: the supervised model's pipeline, the user's RL settings,
    data up to the fold's last training row, episodes over all of those rows."""
    out = supervised.model_copy(deep=True)
    out.reinforcement = cfg.reinforcement.model_copy(deep=True)
    out.simulation = cfg.simulation.model_copy(deep=True)
    out.reinforcement.env.split = "all"
    out.data.end = fold.bound(fold.read_rows, True).isoformat()
    out.seed = seed
    return out


def run_rl_lift(
    cfg: Config,
    checkpoint: str | Path,
    output: str | Path,
    *,
    seeds: int = 3,
    catalogue: str | Path | None = None,
    device: str = "cpu",
    on_step: Callable[[str], None] | None = None,
) -> RLLiftResult:
    """Fine-tune on each fold's past, score supervised vs fine-tuned vs buy-and-hold on its
    test bars, and report the Sharpe lift per seed and pooled (see the module doc).

    ``checkpoint``: a ``plus-ultra train`` run. ``output``: a folder; the run writes
    ``output/<lift id>/`` (fold folders, ``lift.parquet``, ``lift.json``).
    """
    from ..rl.finetune import finetune  # torch-heavy; imported when the lift runs

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    step = on_step or (lambda _message: None)
    started = time.perf_counter()
    lift_id = new_run_id("rl-lift")
    folder = Path(output) / lift_id
    folder.mkdir(parents=True, exist_ok=True)
    given = Agent.from_checkpoint(checkpoint, device="cpu")
    step(f"reading {cfg.data.sqlite_path} and building features")
    panel, _ = compute_features(cfg.data, cfg.features)
    calendar = pd.DatetimeIndex(panel.index.get_level_values("timestamp").unique()).sort_values()
    folds = retrain_folds(calendar, cfg)
    supervised_parts, finetune_parts = [], [[] for _ in range(seeds)]
    described = []
    for fold in folds:
        fold_dir = folder / fold.folder
        if _supervised_source(given, fold):
            source, sup_dir, sup_cfg = "checkpoint", Path(checkpoint), given.config
        else:
            source, sup_dir = "retrained", fold_dir / "supervised"
            if not (sup_dir / "model_info.json").is_file():
                step(f"{fold.name}: training the supervised model on the fold's past")
                fit_fold(given.config, panel, fold, sup_dir)
            sup_cfg = Agent.from_checkpoint(sup_dir, device="cpu").config
        described.append({**fold.describe(), "supervised": source, "supervised_run": str(sup_dir)})

        step(f"{fold.name}: supervised predictions of the test bars")
        supervised_parts.append(
            _cached(fold_dir / f"supervised_{_PREDICTIONS}", _predictor(sup_dir, cfg, fold, device))
        )
        for i in range(seeds):
            run_dir = fold_dir / f"seed_{i}"
            seed = cfg.seed + 1000 * i + fold.index
            done = run_dir / _PREDICTIONS
            if not done.is_file():
                step(f"{fold.name}: PPO fine-tune, seed {i + 1}/{seeds}")
                ft_cfg = _finetune_config(cfg, sup_cfg, fold, seed)
                resume = (run_dir / "state.pt").is_file()  # an interrupted fine-tune goes on
                finetune(ft_cfg, sup_dir, device=device, output_dir=run_dir, resume=resume)
            finetune_parts[i].append(_cached(done, _predictor(run_dir, cfg, fold, device)))
    atomic_write(folder / "folds.json", json.dumps(described, indent=2) + "\n")

    step("scoring supervised, fine-tuned and buy-and-hold on the same bars and costs")
    supervised = pd.concat(supervised_parts, ignore_index=True)
    _, sample = select_sample(supervised)
    if sample.n_left_out:  # each fold's model trained on bars before the fold's test only
        raise RuntimeError(
            f"rl-lift: {sample.n_left_out} test bars are in-sample for their supervised model"
        )
    sup_returns = _scored(supervised, cfg)
    held = supervised.assign(position=1.0)
    hold_returns = _scored(held, cfg)
    ft_returns = [_scored(pd.concat(parts, ignore_index=True), cfg) for parts in finetune_parts]
    ppy = infer_periods_per_year(sup_returns.index)
    ev = cfg.evaluation
    boot = {"periods_per_year": ppy, "level": ev.bootstrap_level, "reps": ev.bootstrap_reps}
    rows = []
    for i, series in enumerate(ft_returns):
        diff = sharpe_differences(
            series, {"supervised": sup_returns}, adjust="none", seed=cfg.seed, **boot
        )["supervised"]
        rows.append(_row(str(i), series, sup_returns, hold_returns, diff, ppy))
    pooled = mean_sharpe_lift(ft_returns, sup_returns, seed=cfg.seed, **boot)
    rows.append(_row("pooled", pd.concat(ft_returns, axis=1).mean(axis=1), sup_returns,
                     hold_returns, pooled, ppy))  # fmt: skip
    table = pd.DataFrame(rows, columns=list(LIFT_COLUMNS))
    _write_parquet(table, folder / "lift.parquet")
    summary = {
        "lift_id": lift_id,
        "checkpoint": str(checkpoint),
        "database": str(cfg.data.sqlite_path),
        "cost": _cost_label(cfg),
        "level": ev.bootstrap_level,
        "seeds": seeds,
        "scored": sample.label,
        "folds": described,
        "rows": table.to_dict(orient="records"),
    }
    atomic_write(folder / "lift.json", json.dumps(summary, indent=2, default=str) + "\n")
    catalogue_path = None
    if catalogue is not None:
        catalogue_path = Path(catalogue)
        runtime = time.perf_counter() - started
        append_catalogue(catalogue_path, _catalogue_rows(cfg, given, checkpoint, lift_id,
                                                         table, ppy, runtime, device))  # fmt: skip
    return RLLiftResult(
        lift_id,
        folder,
        table,
        tuple(described),
        catalogue_path,
        ev.bootstrap_level,
        _cost_label(cfg),
    )


def _row(
    seed: str,
    finetuned: pd.Series,
    supervised: pd.Series,
    held: pd.Series,
    diff: dict[str, Any],
    ppy: float,
) -> dict[str, Any]:
    shared = pd.concat([finetuned, supervised, held], axis=1, join="inner").dropna()
    return {
        "seed": seed,
        "n_bars": int(diff["n"]),
        "supervised_sharpe": sharpe_ratio(shared.iloc[:, 1].to_numpy(), ppy),
        "finetune_sharpe": sharpe_ratio(shared.iloc[:, 0].to_numpy(), ppy),
        "buy_and_hold_sharpe": sharpe_ratio(shared.iloc[:, 2].to_numpy(), ppy),
        "delta_sharpe": diff["estimate"],
        "delta_low": diff["low"],
        "delta_high": diff["high"],
        "p_value": diff["p_value"],
        "prob_beat": diff["prob_beat"],
    }


def _catalogue_rows(
    cfg: Config,
    agent: Agent,
    checkpoint: str | Path,
    lift_id: str,
    table: pd.DataFrame,
    ppy: float,
    runtime: float,
    device: str,
) -> list[dict[str, Any]]:
    model = agent.config.model
    common = {
        "timestamp": pd.Timestamp.now(tz="UTC"),
        "comparison": lift_id,
        "status": "ok",
        "error": "",
        "architecture": model.architecture,
        "d_model": model.d_model,
        "depth": model.depth,
        "horizon": agent.config.windows.horizon,
        "config": config_json(cfg),
        "checkpoint_dir": str(checkpoint),
        "database": str(cfg.data.sqlite_path),
        "symbols": ",".join(map(str, cfg.data.symbols or [])),
        "cost_bps": cfg.simulation.cost_bps if cfg.simulation.enabled else cfg.evaluation.cost_bps,
        "periods_per_year": ppy,
        "runtime_s": runtime,
        "device": device,
        **hardware(),
    }
    rows = []
    for record in table.to_dict(orient="records"):
        pooled = record["seed"] == "pooled"
        rows.append(
            {
                **common,
                "kind": "rl_lift_pooled" if pooled else "rl_lift",
                "sweep_id": lift_id,
                "scenario_id": f"{lift_id}/{'pooled' if pooled else 'seed_' + record['seed']}",
                "seed": None if pooled else int(record["seed"]),
                "n_periods": record["n_bars"],
                "sharpe": record["finetune_sharpe"],
                "baseline_sharpe": record["supervised_sharpe"],
                "buy_and_hold_sharpe": record["buy_and_hold_sharpe"],
                "delta_sharpe": record["delta_sharpe"],
                "delta_sharpe_low": record["delta_low"],
                "delta_sharpe_high": record["delta_high"],
                "delta_sharpe_p": record["p_value"],
            }
        )
    return rows
