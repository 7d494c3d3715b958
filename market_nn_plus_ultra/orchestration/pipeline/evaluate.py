"""The evaluate stage: the candidate beside the baselines and the champion, same bars.

1. The candidate (this run's RL policy when fine-tuned, else its trained model) predicts
   every bar of the database with :meth:`~market_nn_plus_ultra.inference.Agent.predict`;
   the ``sample`` column says which bars it trained or validated on
   (``candidate_predictions.parquet``).
2. The current champion (``champion.json`` under ``--output-dir``), when there is one,
   predicts the same database with its own checkpoint (``champion_predictions.parquet``
   holds the rows scored).
3. Only rows out of sample for **both** models are scored: the candidate's
   ``test``/``unseen`` rows that the champion also predicts as ``test``/``unseen``. Every
   other out-of-sample row of the candidate is dropped and counted by why
   (``metrics.json`` → ``rows``). The candidate's earlier bars stay in
   ``predictions.parquet`` as the baselines' training history, never scored.
4. :func:`~market_nn_plus_ultra.evaluation.walkforward_io.walkforward_from_files` scores
   ``predictions.parquet`` with the baselines on purged folds (``per_split.parquet``,
   ``summary.json``); the champion is scored on exactly those folds' test bars with the
   same costs and the candidate's realised returns.
5. The promotion decision is computed here, on the folds' test bars of both models
   (``decision.json``), so the report can show it; the promote stage applies it.

A champion that cannot predict this database (a feature it reads is gone) is recorded
with the error, and the decision is then taken without a champion.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..._io import atomic_path, write_json
from ...evaluation.sample import OUT_OF_SAMPLE, SAMPLE_COLUMN
from ...evaluation.walkforward import WalkForwardBacktester
from ...evaluation.walkforward_io import walkforward_from_files, write_walkforward
from ...inference.agent import Agent
from .champion import champion_checkpoint, current_champion, promotion_api
from .context import StagePlan, StageResult, checkpoint_file
from .stages_model import device_of

if TYPE_CHECKING:
    from ...evaluation.baselines import TimeSplit
    from .context import RetrainRun

__all__ = ["in_tests", "plan_evaluate", "run_evaluate"]

log = logging.getLogger(__name__)
_KEYS = ["timestamp", "symbol"]


def _champion(run: RetrainRun) -> Any | None:
    """The champion to compare against (None when there is none or it is this run)."""
    champion = current_champion(run.options.output_dir)
    if champion is None or Path(champion.run_dir).resolve() == run.run_dir.resolve():
        return None
    return champion


def _inputs(run: RetrainRun, candidate: Path, champion_file: Path | None) -> dict[str, str]:
    inputs = {
        **run.database_input("evaluate"),
        **run.sections("train", "evaluation", "orchestration", "seed"),
    }
    inputs.update(run.files(checkpoint_file(candidate), champion_file))
    return inputs


def _recorded_champion(run: RetrainRun) -> Path | None:
    """The champion checkpoint a finished evaluate stage compared with (None: none)."""
    path = run.folder("evaluate") / "metrics.json"
    champion = (
        json.loads(path.read_text(encoding="utf-8")).get("champion") if path.is_file() else None
    )
    return checkpoint_file(Path(champion["checkpoint"])) if champion else None


def plan_evaluate(run: RetrainRun) -> StagePlan:
    candidate = run.candidate()
    if candidate is None:
        return StagePlan(
            {}, skip="no candidate model: the train stage was skipped and no RL fine-tune ran"
        )
    if run.settled("evaluate"):  # the champion it was compared with stands
        return StagePlan(_inputs(run, candidate, _recorded_champion(run)))
    return StagePlan(_inputs(run, candidate, champion_checkpoint(_champion(run))))


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _predict(checkpoint: Path, run: RetrainRun) -> pd.DataFrame:
    cfg = run.config
    agent = Agent.from_checkpoint(checkpoint, device=device_of(cfg))
    batch = cfg.training.eval_batch_size or cfg.training.batch_size
    return agent.predict(run.database, batch_size=batch)


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return pd.MultiIndex.from_arrays([stamps, frame["symbol"].astype(str)])


def common_rows(
    candidate: pd.DataFrame, champion: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, int]]:
    """``(candidate rows to walk forward, champion rows scored, counts)``.

    The candidate's rows keep its in-sample history before the first scored bar; the
    scored rows are out of sample for both models. The champion's rows carry the
    candidate's realised returns, so both are scored on the same returns.
    """
    oos = candidate[SAMPLE_COLUMN].isin(OUT_OF_SAMPLE).to_numpy()
    counts = {"candidate_rows": len(candidate), "candidate_out_of_sample": int(oos.sum())}
    if champion is None:
        counts["scored"] = int(oos.sum())
        return candidate, None, counts
    champ_oos = champion[SAMPLE_COLUMN].isin(OUT_OF_SAMPLE).to_numpy()
    keys, champ_keys = _keys(candidate), _keys(champion)
    predicted = keys.isin(champ_keys)
    both = oos & keys.isin(champ_keys[champ_oos])
    counts.update(
        {
            "scored": int(both.sum()),
            "dropped_champion_in_sample": int((oos & predicted & ~both).sum()),
            "dropped_champion_missing": int((oos & ~predicted).sum()),
            "champion_rows": len(champion),
            "champion_out_of_sample": int(champ_oos.sum()),
        }
    )
    if not both.any():
        return candidate.iloc[:0], champion.iloc[:0], counts
    first = pd.to_datetime(candidate["timestamp"], utc=True)[both].min()
    history = ~oos & (pd.to_datetime(candidate["timestamp"], utc=True) < first).to_numpy()
    kept = candidate[history | both].reset_index(drop=True)
    kept.attrs = dict(candidate.attrs)
    scored = candidate.loc[both, [*_KEYS, "realised_return"]]
    scored = scored.assign(timestamp=pd.to_datetime(scored["timestamp"], utc=True))
    rows = champion.drop(columns=["realised_return"]).assign(
        timestamp=pd.to_datetime(champion["timestamp"], utc=True)
    )
    rows = rows.merge(scored, on=_KEYS, how="inner").sort_values(_KEYS, ignore_index=True)
    return kept, rows, counts


def in_tests(frame: pd.DataFrame, splits: list[TimeSplit]) -> pd.DataFrame:
    """The rows of ``frame`` on the folds' test bars (what the walk-forward scores)."""
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    keep = np.zeros(len(frame), dtype=bool)
    for split in splits:
        keep |= ((stamps >= split.test_start) & (stamps <= split.test_end)).to_numpy()
    return frame[keep].reset_index(drop=True)


def _champion_predictions(run: RetrainRun, champion: Any | None) -> tuple[pd.DataFrame | None, str]:
    if champion is None:
        return None, ""
    ckpt = champion_checkpoint(champion)
    try:
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint in {champion.checkpoint}")
        return _predict(ckpt, run), ""
    except (ValueError, KeyError, OSError) as err:
        log.warning("the champion %s cannot predict %s: %s", ckpt, run.database, err)
        return None, f"{type(err).__name__}: {err}"


def _stitched(result: Any, name: str) -> dict[str, Any] | None:
    strategy = result.summary.strategies.get(name)
    return None if strategy is None else dict(strategy.stitched)


def _score_champion(
    run: RetrainRun, rows: pd.DataFrame, splits: list[TimeSplit], folder: Path
) -> tuple[pd.DataFrame, dict[str, Any] | None, list[Path]]:
    """The champion's rows on the folds' test bars, and its stitched metrics there."""
    tested = in_tests(rows, splits)
    if tested.empty:
        return tested, None, []
    tester = WalkForwardBacktester.from_config(run.config.evaluation)
    result = tester.run(
        tested, config=run.config.evaluation, baselines=[], bootstrap=False, splits=splits
    )
    per_split = result.per_split.assign(strategy="champion")
    outputs = [
        _parquet(tested, folder / "champion_predictions.parquet"),
        _parquet(per_split, folder / "champion_per_split.parquet"),
    ]
    return tested, _stitched(result, "model"), outputs


def run_evaluate(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    cfg = run.config
    candidate_dir = run.candidate()
    frame = _predict(checkpoint_file(candidate_dir), run)
    outputs = [_parquet(frame, folder / "candidate_predictions.parquet")]
    champion = _champion(run)
    champ_frame, champion_error = _champion_predictions(run, champion)
    kept, champ_rows, counts = common_rows(frame, champ_frame)
    if counts["scored"] == 0:
        if champion is None or champ_frame is None:
            raise ValueError(
                f"evaluate: the candidate {candidate_dir} has no out-of-sample bar to score "
                f"({counts}) — keep windows.test_fraction above 0 or add newer bars"
            )
        raise ValueError(
            f"evaluate: no bar is out of sample for both the candidate and the champion "
            f"{champion.run_dir} ({counts}) — the champion trained or validated on every bar "
            "the candidate tests; retrain on newer data, or `plus-ultra retrain rollback`"
        )
    scored_path = _parquet(kept, folder / "predictions.parquet")
    result = walkforward_from_files(scored_path, cfg.evaluation, cfg.data, seed=cfg.seed)
    paths = write_walkforward(
        result,
        folder / "per_split.parquet",
        folder / "summary.json",
        folder / "regimes.parquet",
    )
    outputs += [scored_path, *paths.values()]
    candidate_tested = in_tests(kept, result.splits)
    counts["in_folds"] = len(candidate_tested)  # whole folds only: a short tail is left out
    champ_tested, champ_metrics = None, None
    if champ_rows is not None:
        champ_tested, champ_metrics, written = _score_champion(
            run, champ_rows, result.splits, folder
        )
        outputs += written
    decision = promotion_api().decide(
        candidate_tested, champ_tested if champ_metrics is not None else None, cfg
    )
    outputs.append(write_json(folder / "decision.json", decision.to_dict()))
    metrics = {
        "candidate": {"run": str(candidate_dir), "metrics": _stitched(result, "model")},
        "champion": None
        if champion is None
        else {
            "run": str(champion.run_dir),
            "checkpoint": str(champion.checkpoint),
            "metrics": champ_metrics,
            "error": champion_error or None,
        },
        "baselines": {
            name: dict(s.stitched)
            for name, s in result.summary.strategies.items()
            if name != "model"
        },
        "rows": counts,
        "folds": len(result.splits),
        "cost_bps": cfg.evaluation.cost_bps,
        "scored": result.summary.sample.description if result.summary.sample else None,
        "decision": {"promote": decision.promote, "reasons": list(decision.reasons)},
    }
    outputs.append(write_json(folder / "metrics.json", metrics))
    verdict = "promote" if decision.promote else "do not promote"
    note = (
        f"{counts['in_folds']:,} rows scored on {len(result.splits)} folds "
        f"({counts['scored']:,} out of sample); decision: {verdict}"
    )
    inputs = _inputs(run, candidate_dir, champion_checkpoint(champion))
    return StageResult(tuple(outputs), note=note, inputs=inputs)
