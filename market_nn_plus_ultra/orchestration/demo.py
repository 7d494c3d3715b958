"""The demo workflow behind ``make demo``: real data in, an honest report out.

1. **Data.** ``market.db`` from real index data shipped inside a PyPI package (S&P 500
   and NASDAQ Composite daily bars, 1999–2018, from ``arch``) and ``fixture.db``, a
   synthetic multi-asset panel with a planted, known signal. Both validated strictly.
2. **Pretrain** a small backbone on ``market.db`` (masked reconstruction).
3. **Train** the supervised model, warm-started from it, on the purged training split.
4. **Predict** the held-out period (after the training split and its embargo).
5. **Walk forward** over those predictions with every baseline on the same folds and
   costs, with bootstrap intervals.
6. **Report**: ``report.html`` and ``report.md``.

Everything runs on CPU in a few minutes; every artefact lands under the output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_path
from ..config import Config, config_to_dict, load_config, save_config
from ..data.fixtures import write_fixture
from ..data.samples import import_samples
from ..data.store import summarise_series
from ..data.validation import ValidationReport, validate_database
from ..evaluation.report import ReportPaths, build_report_data, summary_intervals, write_report
from ..evaluation.walkforward import MODEL, WalkForwardResult
from ..evaluation.walkforward_io import walkforward_from_files, write_walkforward
from ..inference.agent import Agent
from ..training.pretrain import PretrainResult, pretrain
from ..training.train import TrainResult, train

__all__ = [
    "DEMO_SAMPLES",
    "DEMO_STEPS",
    "DatabaseSummary",
    "DemoResult",
    "build_demo_databases",
    "demo_config",
    "run_demo",
]

#: Real datasets of the demo database (names of ``plus-ultra data samples``).
DEMO_SAMPLES = ("sp500", "nasdaq")
#: The labels ``run_demo`` reports through its ``step`` callback, in order.
DEMO_STEPS = (
    "import real data",
    "validate market.db",
    "generate fixture",
    "validate fixture.db",
    "pretrain",
    "train",
    "predict",
    "walk forward",
    "report",
)
_FIXTURE = dict(
    symbols=["SPY", "QQQ", "IWM", "BTC-USD"],
    rows=4096,
    freq="1h",
    alt_features=4,
    planted_signal=0.1,
)
# A CPU-sized model and schedule; the rest of the tree keeps its documented defaults.
_DEMO_SETTINGS = (
    "model.architecture=hybrid_transformer",
    "model.head=regression",
    "model.d_model=32",
    "model.depth=2",
    "model.n_heads=4",
    "model.ff_mult=2",
    "model.max_seq_len=64",
    "model.dropout=0.1",
    "windows.window=64",
    "windows.horizon=5",
    "windows.val_fraction=0.15",
    "windows.test_fraction=0.3",
    "training.batch_size=128",
    "training.learning_rate=0.001",
    "training.warmup_steps=50",
    "training.max_epochs=4",
    "training.num_workers=0",
    "training.persistent_workers=false",
    "training.accelerator=cpu",
    "training.log_every_n_steps=10",
    "pretraining.objective=masked",
    "pretraining.max_epochs=1",
    "pretraining.batch_size=128",
    "pretraining.accelerator=cpu",
    "evaluation.train_window=252",
    "evaluation.test_window=63",
    "evaluation.bootstrap_reps=500",
)


@dataclass(frozen=True)
class DatabaseSummary:
    """What one demo database holds and whether it passed validation."""

    path: Path
    description: str
    series: pd.DataFrame  # symbol, rows, start, end
    validation: ValidationReport

    @property
    def rows(self) -> int:
        return int(self.series["rows"].sum())


@dataclass
class DemoResult:
    """Paths and summaries of everything the demo wrote."""

    output: Path
    databases: list[DatabaseSummary] = field(default_factory=list)
    config_path: Path | None = None
    pretrain: PretrainResult | None = None
    train: TrainResult | None = None
    predictions_path: Path | None = None
    walkforward: WalkForwardResult | None = None
    walkforward_paths: dict[str, Path] = field(default_factory=dict)
    report: ReportPaths | None = None

    @property
    def ok(self) -> bool:
        return all(d.validation.passed(strict=True) for d in self.databases)

    def artefacts(self) -> dict[str, Path]:
        """Every file the demo wrote, by label, in the order they were made."""
        found: dict[str, Path] = {d.path.stem: d.path for d in self.databases}
        if self.pretrain is not None:
            found["pretrained backbone"] = self.pretrain.backbone_path
        if self.train is not None:
            found["model run"] = self.train.checkpoint_dir
        if self.predictions_path is not None:
            found["predictions"] = self.predictions_path
        found.update({f"walk-forward {k}": p for k, p in self.walkforward_paths.items()})
        if self.report is not None:
            found["report (HTML)"] = self.report.html
            found["report (Markdown)"] = self.report.markdown
        return found


def _summarise(path: Path, description: str) -> DatabaseSummary:
    return DatabaseSummary(path, description, summarise_series(path), validate_database(path))


def build_demo_databases(
    output: str | Path,
    *,
    seed: int = 7,
    step: Callable[[str], None] | None = None,
    result: DemoResult | None = None,
) -> DemoResult:
    """Write ``market.db`` (real data) and ``fixture.db`` (synthetic) under ``output``.

    Re-running replaces both atomically. ``step`` is called with a label of
    :data:`DEMO_STEPS` before each piece of work (for progress display).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    step = step or (lambda _label: None)
    result = result or DemoResult(output)

    step("import real data")
    market = output / "market.db"
    import_samples(market, DEMO_SAMPLES, overwrite=True)
    step("validate market.db")
    result.databases.append(
        _summarise(market, "real daily index bars shipped with the `arch` package")
    )
    step("generate fixture")
    fixture = write_fixture(output / "fixture.db", seed=seed, overwrite=True, **_FIXTURE)
    step("validate fixture.db")
    result.databases.append(
        _summarise(
            fixture,
            f"synthetic {_FIXTURE['freq']} bars, planted signal IC {_FIXTURE['planted_signal']}",
        )
    )
    return result


def demo_config(output: str | Path, *, seed: int = 7, max_epochs: int | None = None) -> Config:
    """The demo's resolved config: the defaults plus CPU-sized model and schedule."""
    output = Path(output)
    overrides = [
        *_DEMO_SETTINGS,
        f"seed={seed}",
        f"data.sqlite_path={output / 'market.db'}",
        f"data.cache_dir={output / 'cache'}",
        f"training.checkpoint_dir={output / 'train'}",
        f"pretraining.checkpoint_dir={output / 'pretrain'}",
    ]
    if max_epochs is not None:
        overrides.append(f"training.max_epochs={max_epochs}")
    return load_config(None, overrides)


def _held_out_start(run: TrainResult) -> pd.Timestamp:
    """First timestamp of the run's test split (purged and embargoed from training)."""
    if run.test_predictions is None:
        raise ValueError(f"{run.checkpoint_dir}: the run wrote no test predictions")
    test = pd.read_parquet(run.test_predictions, columns=["timestamp"])
    return pd.Timestamp(test["timestamp"].min())


def _report(
    cfg: Config, result: DemoResult, frame: pd.DataFrame, wf: WalkForwardResult
) -> ReportPaths:
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    in_folds = frame[stamps.isin(wf.returns.index)]
    intervals, p_beat = summary_intervals(wf.summary)
    market = result.databases[0]
    provenance: dict[str, Any] = {
        "database": str(market.path),
        "validation": market.validation.summary(),
        "rows": f"{market.rows:,} bars of {', '.join(market.series['symbol'])}",
        "predictions file": str(result.predictions_path),
        "model run": str(result.train.checkpoint_dir if result.train else ""),
    }
    data = build_report_data(
        in_folds,
        cost_bps=cfg.evaluation.cost_bps,
        baselines={name: r for name, r in wf.backtests.items() if name != MODEL},
        walkforward=wf.per_split,
        walkforward_summary=wf.summary,
        intervals=intervals,
        p_beat=p_beat,
        provenance=provenance,
        config=config_to_dict(cfg),
    )
    return write_report(data, result.output / "report.html")


def run_demo(
    output: str | Path,
    *,
    seed: int = 7,
    max_epochs: int | None = None,
    step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run every demo step (:data:`DEMO_STEPS`) and return what was written where."""
    output = Path(output)
    step = step or (lambda _label: None)
    result = build_demo_databases(output, seed=seed, step=step)
    if not result.ok:
        return result
    cfg = demo_config(output, seed=seed, max_epochs=max_epochs)
    result.config_path = save_config(cfg, output / "config.yaml")

    step("pretrain")
    result.pretrain = pretrain(cfg)
    step("train")
    result.train = train(cfg, pretrain_checkpoint=result.pretrain.backbone_path)

    step("predict")
    agent = Agent.from_checkpoint(result.train.checkpoint_dir, device="cpu")
    frame = agent.predict(cfg.data.sqlite_path, start=_held_out_start(result.train))
    result.predictions_path = output / "predictions.parquet"
    with atomic_path(result.predictions_path) as tmp:
        frame.to_parquet(tmp, index=False)

    step("walk forward")
    result.walkforward = walkforward_from_files(
        result.predictions_path, cfg.evaluation, cfg.data, seed=seed
    )
    folder = output / "walkforward"
    result.walkforward_paths = write_walkforward(
        result.walkforward, folder / "per_split.parquet", folder / "summary.json"
    )

    step("report")
    result.report = _report(cfg, result, frame, result.walkforward)
    return result
