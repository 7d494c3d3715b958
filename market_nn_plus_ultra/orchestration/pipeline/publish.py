"""The last stages: report, promote, push.

- **report** renders the walk-forward report of the evaluate stage (``report.html`` +
  ``report.md``, :func:`~market_nn_plus_ultra.evaluation.report.write_report`) with the
  champion as one more strategy beside the baselines (same test bars, same costs) and the
  decision in its provenance, plus ``decision.md`` / ``decision.html``: the promotion
  decision, each rule's reason, candidate vs champion on the scored bars and the rows
  dropped.
- **promote** applies the decision the evaluate stage computed: when it says promote,
  ``champion.json`` under ``--output-dir`` names this run (through
  :func:`~market_nn_plus_ultra.orchestration.promotion.promote`, atomically, with
  history); ``promote/decision.json`` says what happened and why.
- **push** copies the run folder to ``--push URL`` (every run), or to the config's
  ``orchestration.push_url`` when the run was promoted; skipped otherwise.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..._io import atomic_write, write_json
from ...config import config_to_dict
from ...evaluation.backtest import backtest
from ...evaluation.report import write_report
from ...evaluation.report_files import report_data_from_files
from ...evaluation.report_html import table_html
from ...evaluation.report_markdown import markdown_table
from ...evaluation.report_tables import fmt_value
from .champion import promotion_api
from .context import StagePlan, StageResult, checkpoint_file
from .manifest import json_sha256

if TYPE_CHECKING:
    from .context import RetrainRun

__all__ = [
    "plan_promote",
    "plan_push",
    "plan_report",
    "run_promote",
    "run_push",
    "run_report",
]

_EVALUATED = (
    "predictions.parquet",
    "per_split.parquet",
    "summary.json",
    "metrics.json",
    "decision.json",
    "champion_predictions.parquet",
)
_SHOWN = ("sharpe", "total_return", "cagr", "max_drawdown", "hit_rate", "turnover", "n_periods")


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def plan_report(run: RetrainRun) -> StagePlan:
    if not run.done("evaluate"):
        return StagePlan({}, skip="the evaluate stage did not run: nothing to report")
    folder = run.folder("evaluate")
    inputs = run.files(*(folder / name for name in _EVALUATED))
    return StagePlan({**inputs, **run.sections("train", "evaluation")})


def _comparison(metrics: dict[str, Any]) -> pd.DataFrame:
    """Candidate, champion and baselines side by side on the scored bars (text cells)."""
    columns = {"candidate": (metrics["candidate"] or {}).get("metrics") or {}}
    champion = metrics.get("champion") or {}
    if champion.get("metrics"):
        columns["champion"] = champion["metrics"]
    columns.update(metrics.get("baselines") or {})
    rows = [
        {"metric": key, **{name: fmt_value(values.get(key)) for name, values in columns.items()}}
        for key in _SHOWN
    ]
    return pd.DataFrame(rows)


def _rows_lines(metrics: dict[str, Any]) -> list[str]:
    rows = metrics.get("rows") or {}
    lines = [
        f"{rows.get('scored', 0):,} rows out of sample for every model compared; "
        f"{rows.get('in_folds', 0):,} of them on the test bars of {metrics.get('folds')} "
        f"walk-forward folds ({metrics.get('scored') or 'out of sample'}) at "
        f"{metrics.get('cost_bps')} bps"
    ]
    if "dropped_champion_in_sample" in rows:
        lines.append(
            f"{rows['dropped_champion_in_sample']:,} candidate out-of-sample rows dropped: "
            "the champion trained or validated on them"
        )
        lines.append(
            f"{rows['dropped_champion_missing']:,} candidate out-of-sample rows dropped: "
            "the champion has no prediction there (symbol or window it lacks)"
        )
    error = (metrics.get("champion") or {}).get("error")
    if error:
        lines.append(f"the champion could not predict these bars ({error}): decided without it")
    if metrics.get("champion") is None:
        lines.append("no champion yet: the decision uses the absolute rules only")
    return lines


def _decision_markdown(run: RetrainRun, decision: dict[str, Any], metrics: dict) -> str:
    verdict = "promote" if decision["promote"] else "not promoted"
    parts = [
        f"# Promotion decision — run {run.run_dir.name}",
        "",
        f"**Decision: {verdict}.**",
        "",
        "## Rules",
        "",
        *[f"- {reason}" for reason in decision.get("reasons", [])],
        "",
        "## Candidate beside the champion and the baselines (same bars, same costs)",
        "",
        markdown_table(_comparison(metrics)),
        "",
        "## Rows scored",
        "",
        *[f"- {line}" for line in _rows_lines(metrics)],
        "",
    ]
    return "\n".join(parts)


def _decision_html(run: RetrainRun, decision: dict[str, Any], metrics: dict) -> str:
    verdict = "promote" if decision["promote"] else "not promoted"
    esc = html.escape
    reasons = "".join(f"<li>{esc(r)}</li>" for r in decision.get("reasons", []))
    rows = "".join(f"<li>{esc(line)}</li>" for line in _rows_lines(metrics))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Promotion decision — {esc(run.run_dir.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}</style>"
        f"</head><body><h1>Promotion decision — run {esc(run.run_dir.name)}</h1>"
        f"<p><strong>Decision: {esc(verdict)}.</strong></p><h2>Rules</h2><ul>{reasons}</ul>"
        "<h2>Candidate beside the champion and the baselines (same bars, same costs)</h2>"
        f"{table_html(_comparison(metrics))}<h2>Rows scored</h2><ul>{rows}</ul>"
        "<p>Full report: <a href='report.html'>report.html</a></p></body></html>\n"
    )


def run_report(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    cfg = run.config
    evaluated = run.folder("evaluate")
    data = report_data_from_files(
        evaluated / "predictions.parquet",
        evaluation=cfg.evaluation,
        data=cfg.data,
        walkforward=evaluated / "per_split.parquet",
        summary=evaluated / "summary.json",
        seed=cfg.seed,
        config=config_to_dict(cfg),
    )
    champion_rows = evaluated / "champion_predictions.parquet"
    if champion_rows.is_file():
        data.baselines["champion"] = backtest(
            pd.read_parquet(champion_rows),
            cost_bps=data.cost_bps,
            benchmark_column=None,
            periods_per_year=data.periods_per_year,
        )
    decision = _read(evaluated / "decision.json")
    metrics = _read(evaluated / "metrics.json")
    data.provenance["retrain run"] = str(run.run_dir)
    data.provenance["promotion decision"] = {
        "decision": "promote" if decision["promote"] else "not promoted",
        **{f"rule {i}": reason for i, reason in enumerate(decision.get("reasons", []), 1)},
    }
    data.provenance["rows scored"] = {
        str(i): line for i, line in enumerate(_rows_lines(metrics), 1)
    }
    paths = write_report(data, folder / "report.html")
    md = atomic_write(folder / "decision.md", _decision_markdown(run, decision, metrics))
    page = atomic_write(folder / "decision.html", _decision_html(run, decision, metrics))
    images = tuple(sorted(paths.images.glob("*.png")))
    return StageResult((paths.html, paths.markdown, md, page, *images), note=str(paths.html))


# --------------------------------------------------------------------------------------
# promote
# --------------------------------------------------------------------------------------


def plan_promote(run: RetrainRun) -> StagePlan:
    if not run.done("evaluate"):
        return StagePlan({}, skip="the evaluate stage did not run: no decision to apply")
    candidate = run.candidate()
    inputs = run.files(run.folder("evaluate") / "decision.json", checkpoint_file(candidate))
    return StagePlan(inputs)


def run_promote(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    api = promotion_api()
    raw = _read(run.folder("evaluate") / "decision.json")
    decision = api.PromotionDecision(
        promote=bool(raw["promote"]),
        reasons=tuple(raw.get("reasons") or ()),
        metrics=dict(raw.get("metrics") or {}),
    )
    candidate = run.candidate()
    root = Path(run.options.output_dir)
    champion_json: Path | None = None
    if decision.promote:
        current = api.read_champion(root)
        already = current is not None and Path(current.run_dir).resolve() == run.run_dir.resolve()
        # a rerun after a kill between promote() and the manifest: promoted already
        champion_json = root / "champion.json" if already else None
        if champion_json is None:
            champion_json = api.promote(root, run.run_dir, candidate, decision)
    why = "; ".join(decision.reasons)
    payload = {
        "promoted": decision.promote,
        "champion_json": champion_json,
        "checkpoint": candidate,
        "reason": why,
        "decision": raw,
    }
    path = write_json(folder / "decision.json", payload)
    if decision.promote:
        note = f"promoted: {candidate} is the champion ({champion_json})"
    else:
        failed = [r.split(":", 1)[0] for r in decision.reasons if ": failed" in r]
        rules = f"{', '.join(failed)} failed" if failed else why
        note = f"not promoted ({rules}; every rule in promote/decision.json)"
    return StageResult((path,), note=note)


# --------------------------------------------------------------------------------------
# push
# --------------------------------------------------------------------------------------


def push_url(run: RetrainRun) -> tuple[str | None, str]:
    """The URL to push to, or None and why not.

    ``--push URL`` pushes every run; ``orchestration.push_url`` of the config pushes the
    runs that were promoted.
    """
    if run.options.push:
        return run.options.push, ""
    url = run.config.orchestration.push_url
    if url is None:
        return None, "no --push URL (and no orchestration.push_url in the config)"
    if not run.done("promote") or not _read(run.folder("promote") / "decision.json")["promoted"]:
        return None, f"not promoted: orchestration.push_url ({url}) receives promoted runs only"
    return url, ""


def plan_push(run: RetrainRun) -> StagePlan:
    url, why = push_url(run)
    if url is None:
        return StagePlan({}, skip=why)
    inputs = run.files(
        run.folder("report") / "report.html", run.folder("promote") / "decision.json"
    )
    return StagePlan({**inputs, f"push {url}": json_sha256(url)})


def run_push(run: RetrainRun, folder: Path, plan: StagePlan) -> StageResult:
    from ..push import push

    url, _ = push_url(run)
    options = run.config.orchestration.push_storage_options
    remote = push(run.run_dir, str(url), storage_options=options)
    path = write_json(folder / "pushed.json", {"url": url, "paths": list(remote)})
    return StageResult((path,), note=f"pushed {len(remote)} files to {url}")
