"""Champion/candidate promotion: the rules, ``champion.json`` and rollback.

:func:`decide` scores a retrained candidate and the serving champion on the same
out-of-sample rows with the project's backtest (net of ``evaluation.cost_bps``) and
applies the rules of ``orchestration.promotion``:

- **sharpe** — the lower end of the paired stationary-bootstrap interval (level
  ``confidence``) of ``Sharpe(candidate) − Sharpe(champion)`` must exceed
  ``min_sharpe_diff_low``; both series are resampled with the same indices, so their
  common market exposure cancels (:func:`~market_nn_plus_ultra.evaluation.paired.sharpe_differences`);
- **max_drawdown** — the candidate's may be at most ``max_drawdown_tolerance`` deeper;
- **turnover** — the candidate's mean turnover per bar at most ``max_turnover_ratio`` ×
  the champion's;
- **calibration** — its ECE (or Brier score) of ``prob_down/prob_flat/prob_up`` may rise
  by at most ``max_calibration_worsening`` (skipped, with the reason, without probabilities).

The candidate is promoted when the Sharpe rule passes and no other rule fails. With no
champion yet it is compared, by the same rules, with ``first_baseline``: buy-and-hold on
the same rows (the default), cash, or nothing.

``champion.json`` in the retrain output folder names the champion and keeps every
earlier one; :func:`rollback` points it back one step. Paths inside that folder are kept
relative to it, so the folder can move.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import exclusive, json_ready, write_json
from ..config import Config
from ..evaluation.backtest import backtest
from ._promotion_rules import (
    KEYS,
    PROB_COLUMNS,
    PromotionError,
    calibration,
    calibration_rule,
    drawdown_rule,
    pair,
    rows_info,
    scorecard,
    scored_rows,
    sharpe_rule,
    turnover_rule,
)

__all__ = [
    "CHAMPION_FILE",
    "PROB_COLUMNS",
    "Champion",
    "PromotionDecision",
    "PromotionError",
    "decide",
    "promote",
    "read_champion",
    "rollback",
]

#: The file in the retrain output folder that names the champion.
CHAMPION_FILE = "champion.json"
_FORMAT = 1  # champion.json layout version


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the candidate replaces the champion, and why (one line per rule)."""

    promote: bool
    reasons: tuple[str, ...]
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {"promote": self.promote, "reasons": list(self.reasons), "metrics": self.metrics}
        )


@dataclass(frozen=True)
class Champion:
    """The promoted run: its folder and the checkpoint a service should ``/reload``."""

    run_dir: Path
    checkpoint: Path
    promoted_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "promoted_at": self.promoted_at,
        }


def decide(
    candidate: pd.DataFrame, champion: pd.DataFrame | None, cfg: Config
) -> PromotionDecision:
    """Apply ``cfg.orchestration.promotion`` to a candidate and the champion (or baseline).

    ``candidate``/``champion``: predictions frames (``timestamp``, ``symbol``, ``position``,
    ``realised_return``, optional ``prob_*`` and ``sample``); only out-of-sample rows
    (``test``/``unseen``) that both share are scored, with ``cfg.evaluation.cost_bps``.
    Raises :class:`PromotionError` when the frames cannot be compared.
    """
    rules = cfg.orchestration.promotion
    cand = scored_rows(candidate, "candidate predictions")
    n_candidate = len(cand)
    if champion is not None:
        champ = scored_rows(champion, "champion predictions")
        n_champion = len(champ)
        cand, ref_frame = pair(cand, champ)
        ref_name = "champion"
    else:
        n_champion, ref_name = 0, rules.first_baseline
        ref_frame = None
        if ref_name == "buy_and_hold":  # long every symbol on the same rows, same costs
            ref_frame = cand[[*KEYS, "realised_return"]].assign(position=1.0)
    cost = cfg.evaluation.cost_bps
    cand_bt = backtest(cand, cost_bps=cost)
    ppy = float(cand_bt.metrics["periods_per_year"])
    ref_bt = None if ref_frame is None else backtest(ref_frame, cost_bps=cost, periods_per_year=ppy)
    cand_card = scorecard(cand_bt, calibration(cand, cfg))
    ref_card = None if ref_bt is None else scorecard(ref_bt, calibration(ref_frame, cfg))
    rows = rows_info(cand, cand_bt) | {"candidate_rows": n_candidate, "champion_rows": n_champion}
    metrics: dict[str, Any] = {
        "compared_with": ref_name,
        "candidate": cand_card,
        "champion": ref_card if champion is not None else None,
        "reference": ref_card,
        "rows": rows,
        "settings": rules.model_dump(mode="json") | {"cost_bps": cost},
    }
    if ref_name == "none":
        reason = (
            "no champion yet and orchestration.promotion.first_baseline is none: the first "
            "candidate is promoted without a comparison"
        )
        return PromotionDecision(True, (reason,), metrics | {"rules": []})
    if rows["bars"] < rules.min_periods:
        reason = (
            f"bars: failed — only {rows['bars']} scored bars shared by the candidate and the "
            f"{ref_name}, fewer than orchestration.promotion.min_periods = {rules.min_periods}"
            " — lengthen the out-of-sample window"
        )
        return PromotionDecision(False, (reason,), metrics | {"rules": []})

    sharpe = sharpe_rule(cand_bt, ref_bt, ref_name, rules)
    checks = [
        sharpe,
        drawdown_rule(cand_card, ref_card, ref_name, rules),
        turnover_rule(cand_card, ref_card, ref_name, rules),
        calibration_rule(cand_card, ref_card, ref_name, rules),
    ]
    promote_it = bool(sharpe.passed) and all(rule.passed is not False for rule in checks)
    shown = (
        "estimate",
        "low",
        "high",
        "p_value",
        "prob_beat",
        "n",
        "level",
        "reps",
        "block_length",
    )
    metrics["sharpe_difference"] = {k: sharpe.detail[k] for k in shown if k in sharpe.detail}
    metrics["rules"] = [
        {"name": r.name, "passed": r.passed, "reason": r.reason, **r.detail} for r in checks
    ]
    return PromotionDecision(promote_it, tuple(r.reason for r in checks), metrics)


# --------------------------------------------------------------------------------------
# champion.json
# --------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stored(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` when inside it (the folder can move), else absolute."""
    full = Path(os.path.abspath(path))
    try:
        return full.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return str(full)


def _resolved(root: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else Path(os.path.abspath(root / path))


def _broken(path: Path, problem: str) -> PromotionError:
    return PromotionError(
        f"{path}: {problem} — restore it from a backup or fix it by hand (format: "
        '{"champion": {"run_dir", "checkpoint", "promoted_at"}, "history": [...]}, see '
        "docs/promotion.md); deleting it forgets the champion and its history"
    )


def _entry(path: Path, entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _broken(path, f"{where} is {type(entry).__name__}, not an object")
    for key in ("run_dir", "checkpoint", "promoted_at"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _broken(path, f"{where}.{key} is missing or not text")
    return entry


def _read_raw(root: Path) -> dict[str, Any] | None:
    path = Path(root) / CHAMPION_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _broken(path, f"not readable JSON ({err})") from None
    if not isinstance(raw, dict):
        raise _broken(path, f"the top level is {type(raw).__name__}, not an object")
    if raw.get("format", _FORMAT) != _FORMAT:
        raise _broken(
            path, f"format {raw.get('format')!r} is not {_FORMAT}, the one this version reads"
        )
    _entry(path, raw.get("champion"), "champion")
    history = raw.setdefault("history", [])
    if not isinstance(history, list):
        raise _broken(path, "history is not a list")
    for i, item in enumerate(history):
        _entry(path, item, f"history[{i}]")
    if not isinstance(raw.setdefault("rolled_back", []), list):
        raise _broken(path, "rolled_back is not a list")
    return raw


def _champion(root: Path, entry: dict[str, Any]) -> Champion:
    return Champion(
        run_dir=_resolved(root, entry["run_dir"]),
        checkpoint=_resolved(root, entry["checkpoint"]),
        promoted_at=entry["promoted_at"],
    )


def read_champion(root: Path) -> Champion | None:
    """The champion named by ``root/champion.json`` (absolute paths), or None without one."""
    raw = _read_raw(Path(root))
    return None if raw is None else _champion(Path(root), raw["champion"])


def promote(
    root: Path, run_dir: Path, checkpoint: Path, decision: PromotionDecision, *, force: bool = False
) -> Path:
    """Make ``run_dir`` the champion: write ``root/champion.json`` atomically; returns it.

    The previous champion moves to the end of ``history``. Promoting the current champion
    again changes nothing. ``decision`` must say promote unless ``force`` (recorded).
    """
    root, run_dir, checkpoint = Path(root), Path(run_dir), Path(checkpoint)
    if not isinstance(decision, PromotionDecision):
        raise PromotionError(
            f"promote: decision must be a PromotionDecision, got {type(decision).__name__}"
        )
    if not decision.promote and not force:
        raise PromotionError(
            f"promote: the decision for {run_dir} says not to promote ("
            + "; ".join(decision.reasons)
            + ") — pass force=True to promote it anyway"
        )
    if not run_dir.is_dir():
        raise PromotionError(
            f"promote: run folder {run_dir} does not exist — pass the retrain run folder"
        )
    if not checkpoint.exists():
        raise PromotionError(
            f"promote: checkpoint {checkpoint} does not exist — pass the run's checkpoint or "
            "training run folder (what POST /reload accepts)"
        )
    path = root / CHAMPION_FILE
    with exclusive(path):
        raw = _read_raw(root) or {
            "format": _FORMAT,
            "champion": None,
            "history": [],
            "rolled_back": [],
        }
        entry = {
            "run_dir": _stored(root, run_dir),
            "checkpoint": _stored(root, checkpoint),
            "promoted_at": _now(),
            "forced": bool(force and not decision.promote),
            "decision": decision.to_dict(),
        }
        current = raw.get("champion")
        if current and (current["run_dir"], current["checkpoint"]) == (
            entry["run_dir"],
            entry["checkpoint"],
        ):
            return path
        if current:
            raw["history"].append(current)
        raw["champion"] = entry
        raw["format"] = _FORMAT
        return write_json(path, raw)


def rollback(root: Path) -> Champion:
    """Point ``root/champion.json`` back at the previous champion and return it.

    The rolled-back champion is kept under ``rolled_back`` with the time. Raises
    :class:`PromotionError` when there is no file, no previous champion, or its run
    folder is gone.
    """
    root = Path(root)
    path = root / CHAMPION_FILE
    with exclusive(path):
        raw = _read_raw(root)
        if raw is None:
            raise PromotionError(
                f"rollback: no {path} — nothing has been promoted in {root}; pass the retrain "
                "--output-dir that holds champion.json"
            )
        if not raw["history"]:
            current = _champion(root, raw["champion"])
            raise PromotionError(
                f"rollback: {path} has no previous champion to go back to (the champion "
                f"{current.run_dir} was the first promoted) — promote another run instead"
            )
        previous = raw["history"][-1]
        restored = _champion(root, previous)
        for what, where in (("run folder", restored.run_dir), ("checkpoint", restored.checkpoint)):
            if not where.exists():
                raise PromotionError(
                    f"rollback: the previous champion's {what} {where} no longer exists — "
                    f"restore it, or edit the history in {path}"
                )
        raw["history"].pop()
        raw["rolled_back"].append({**raw["champion"], "rolled_back_at": _now()})
        raw["champion"] = previous
        write_json(path, raw)
    return restored
