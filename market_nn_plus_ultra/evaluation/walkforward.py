"""Walk-forward evaluation of a predictions frame, with baselines on the same folds and costs.

The predictions' bars (unique timestamps, rows ``0..T-1``) are cut into purged folds by
:func:`~market_nn_plus_ultra.windows.walk_forward_splits` with one-bar windows and
targets: fold k trains on rows ``k·step .. k·step + train − 1`` and tests on the
``test`` rows that start ``1 + embargo`` rows later (the one-bar target of the last
training row never reaches a test row). The model is not refitted here — its positions
are read from the file — but the ML baselines are refitted on every fold's training rows.

One backtest over the union of the test bars gives each strategy's stitched out-of-sample
returns (a position change at a fold boundary pays its cost, as it would when trading
continuously); per-fold metrics are those returns sliced to the fold. The summary holds
the stitched metrics, the mean and standard deviation of each metric across folds, and,
when a regime column is present, the metrics of the bars in each regime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..config import EvaluationConfig
from ..windows import walk_forward_splits
from .backtest import BacktestResult, backtest, require_columns
from .baselines import TimeSplit, baseline_predictions
from .bootstrap import bootstrap_metrics, compare_sharpe
from .metrics import METRIC_KEYS, compute_metrics, infer_periods_per_year
from .paired import sharpe_differences
from .sample import ScoredSample
from .summary import (
    BootstrapSummary,
    SampleSummary,
    StrategySummary,
    WalkForwardSettings,
    WalkForwardSummary,
)

__all__ = ["MODEL", "WalkForwardBacktester", "WalkForwardResult"]

log = logging.getLogger(__name__)

#: The strategy name of the predictions under test in every output.
MODEL = "model"


@dataclass(frozen=True)
class WalkForwardResult:
    """Folds, per-fold metrics of every strategy, the summary and the stitched returns.

    Frozen: a step that adds to it (guardrail breaches, the retrain folds) returns a new
    result through ``dataclasses.replace``.
    """

    splits: list[TimeSplit]
    per_split: pd.DataFrame  # strategy, split, train/test bounds, every METRIC_KEY
    summary: WalkForwardSummary
    returns: pd.DataFrame  # stitched net returns: index timestamp, one column per strategy
    regimes: pd.DataFrame | None = None  # strategy, regime, every METRIC_KEY
    backtests: dict[str, BacktestResult] = field(default_factory=dict)
    breaches: pd.DataFrame | None = None  # guardrail breaches, when guardrails were applied


def _predictions(frame: pd.DataFrame) -> pd.DataFrame:
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    require_columns(frame, ["timestamp", "symbol", "position", "realised_return"])
    frame = frame.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ns")
    dupes = frame.duplicated(["timestamp", "symbol"])
    if dupes.any():
        first = frame.loc[dupes, ["timestamp", "symbol"]].iloc[0].tolist()
        raise ValueError(
            f"predictions: {int(dupes.sum())} duplicate (timestamp, symbol) rows, first "
            f"{first} — keep one prediction per symbol and bar"
        )
    return frame.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def _implied_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """A close panel rebuilt from realised returns: close_t = Π_{s<t}(1 + r_s), close_0 = 1.

    close_t uses returns that ended by t only, so rule baselines on it stay causal.
    """
    ordered = frame.sort_values(["symbol", "timestamp"], kind="stable")
    growth = np.log1p(ordered["realised_return"].fillna(0.0).clip(lower=-0.999999))
    log_close = growth.groupby(ordered["symbol"], sort=False).cumsum() - growth
    panel = pd.DataFrame(
        {"timestamp": ordered["timestamp"], "symbol": ordered["symbol"], "close": np.exp(log_close)}
    )
    return panel.set_index(["timestamp", "symbol"]).sort_index()


class WalkForwardBacktester:
    """Purged walk-forward folds over a predictions frame; baselines beside the model.

    ``train_window`` / ``test_window`` / ``step`` / ``embargo`` are in bars (rows of the
    predictions' calendar); ``cost_bps`` per unit of |Δposition|.
    """

    def __init__(
        self,
        train_window: int,
        test_window: int,
        embargo: int = 1,
        step: int | None = None,
        *,
        cost_bps: float = 0.0,
        expanding: bool = False,
    ) -> None:
        for name, value in (("train_window", train_window), ("test_window", test_window)):
            if value < 1:
                raise ValueError(f"evaluation.{name} must be >= 1 bars, got {value}")
        if step is not None and step < 1:
            raise ValueError(f"evaluation.step must be >= 1 bars (or null), got {step}")
        if embargo < 0:
            raise ValueError(f"evaluation.embargo must be >= 0 bars, got {embargo}")
        if cost_bps < 0:
            raise ValueError(f"evaluation.cost_bps must be >= 0, got {cost_bps}")
        self.train_window, self.test_window = int(train_window), int(test_window)
        self.embargo, self.step = int(embargo), step
        self.cost_bps, self.expanding = float(cost_bps), expanding

    @classmethod
    def from_config(cls, cfg: EvaluationConfig) -> WalkForwardBacktester:
        """The backtester the ``evaluation`` config section describes."""
        return cls(
            cfg.train_window,
            cfg.test_window,
            cfg.embargo,
            cfg.step,
            cost_bps=cfg.cost_bps,
            expanding=cfg.expanding,
        )

    def splits(
        self, timestamps: Sequence | pd.Index, *, score_from: pd.Timestamp | None = None
    ) -> list[TimeSplit]:
        """The folds over the sorted unique ``timestamps``, as inclusive time bounds.

        ``score_from``: the first bar a fold may test (the first out-of-sample bar); the
        folds are laid so that the first test window starts there when enough earlier bars
        exist for its training window, and earlier bars only train the baselines.
        """
        stamps = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(timestamps))).sort_values()
        full = stamps
        if score_from is not None:
            first_test = int(stamps.searchsorted(score_from))
            stamps = stamps[max(0, first_test - self.train_window - 1 - self.embargo) :]
        need = self.train_window + 1 + self.embargo + self.test_window + 1
        if len(stamps) < need:
            scope = ""
            if score_from is not None:
                n_oos = int((full >= score_from).sum())
                scope = (
                    f" (only the {n_oos} out-of-sample bars from {score_from.date()} may be "
                    "tested: predict newer bars, or pass --include-in-sample to score in-sample "
                    "bars too, which are then not out of sample)"
                )
            raise ValueError(
                f"walk-forward: {len(stamps)} bars are too few for train_window="
                f"{self.train_window}, embargo={self.embargo}, test_window={self.test_window}: "
                f"at least {need} are needed — shorten --train-window / --test-window{scope}"
            )
        folds = walk_forward_splits(
            len(stamps),
            self.train_window,
            self.test_window,
            self.step,
            window=1,
            horizon=1,
            embargo=self.embargo,
            expanding=self.expanding,
        )
        first = full[0] if self.expanding else None  # an expanding fold keeps all history
        return [
            TimeSplit(
                f"fold{k}",
                first if first is not None else stamps[train.rows.start],
                stamps[train.rows.stop - 1],
                stamps[test.rows.start],
                stamps[test.rows.stop - 1],
            )
            for k, (train, test) in enumerate(folds)
        ]

    def run(
        self,
        predictions: pd.DataFrame,
        *,
        panel: pd.DataFrame | None = None,
        config: EvaluationConfig | None = None,
        baselines: Sequence[str] | None = None,
        regime_column: str | None = None,
        bootstrap: bool = True,
        seed: int = 0,
        on_step: Callable[[str], None] | None = None,
        splits: Sequence[TimeSplit] | None = None,
        score_from: pd.Timestamp | None = None,
        sample: ScoredSample | None = None,
    ) -> WalkForwardResult:
        """Walk-forward metrics of ``predictions`` and the baselines on the same folds.

        ``panel``: OHLCV bars (index ``(timestamp, symbol)``) for the baselines; without it
        the rule baselines run on prices implied by ``realised_return`` and the ML
        baselines (which need OHLCV features) are skipped, as the summary records.
        ``baselines``: names (default ``config.baselines``). ``regime_column``: a
        predictions column of labels for per-regime metrics. ``bootstrap``: add
        confidence intervals and P(model Sharpe > baseline Sharpe) to the summary.
        ``splits``: score exactly these folds (e.g. those a retrained walk-forward trained
        on) instead of this backtester's folds over the predictions' bars.
        """
        cfg = config or EvaluationConfig()
        names = list(cfg.baselines if baselines is None else baselines)
        notify = on_step or (lambda _message: None)
        frame = _predictions(predictions)
        if splits is None:
            splits = self.splits(frame["timestamp"], score_from=score_from)
        splits = list(splits)
        ppy = infer_periods_per_year(pd.DatetimeIndex(frame["timestamp"].unique()))
        skipped: dict[str, str] = {}
        if panel is None:
            skipped = {
                n: "needs OHLCV bars (pass --db)" for n in names if n in ("ridge", "lightgbm")
            }
            names = [n for n in names if n not in skipped]
            source = _implied_prices(frame)
        else:
            source = _restrict_panel(panel, frame)
        notify(f"baselines: {', '.join(names) or 'none'}")
        strategies = {MODEL: _in_tests(frame, splits)}
        found = baseline_predictions(source, splits, config=cfg, names=names, seed=seed)
        strategies.update({n: _on_rows(f, strategies[MODEL]) for n, f in found.items()})
        notify("backtests")
        results = {
            n: backtest(f, cost_bps=self.cost_bps, periods_per_year=ppy)
            for n, f in strategies.items()
        }
        per_split = _per_split(results, splits, ppy)
        returns = pd.DataFrame({n: r.returns for n, r in results.items()})
        regimes = None
        if regime_column is not None and regime_column in frame.columns:
            regimes = _per_regime(strategies, results, frame, regime_column, ppy)
        elif regime_column is not None:
            log.info("no regime column %r in the predictions: no per-regime metrics", regime_column)
        summary = _summary(self, results, per_split, regimes, splits, skipped)
        if sample is not None:
            scored = results[MODEL].returns.dropna().index
            restricted = sample.restrict(splits[0].test_start, splits[-1].test_end, len(scored))
            summary = replace(summary, sample=SampleSummary.from_scored(restricted))
        if bootstrap:
            notify("bootstrap")
            summary = replace(summary, bootstrap=_bootstrap(results, cfg, ppy))
        return WalkForwardResult(splits, per_split, summary, returns, regimes, results)


def _restrict_panel(panel: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    symbols = frame["symbol"].unique()
    present = set(panel.index.get_level_values("symbol").unique())
    missing = sorted(set(symbols) - present)
    if missing:
        raise ValueError(
            f"baselines: symbols {missing[:5]} of the predictions are not in the database "
            "(series table) — pass the database the predictions were made from"
        )
    return panel[panel.index.get_level_values("symbol").isin(symbols)]


def _on_rows(baseline: pd.DataFrame, model: pd.DataFrame) -> pd.DataFrame:
    """The baseline's rows on the model's (timestamp, symbol) rows: the same bars compared."""
    stamps = pd.to_datetime(baseline["timestamp"], utc=True).dt.as_unit("ns")
    keys = pd.MultiIndex.from_arrays([stamps, baseline["symbol"]])
    wanted = pd.MultiIndex.from_arrays([model["timestamp"], model["symbol"]])
    return baseline.assign(timestamp=stamps)[keys.isin(wanted)].reset_index(drop=True)


def _in_tests(frame: pd.DataFrame, splits: Sequence[TimeSplit]) -> pd.DataFrame:
    stamps = frame["timestamp"]
    keep = np.zeros(len(frame), dtype=bool)
    for split in splits:
        keep |= ((stamps >= split.test_start) & (stamps <= split.test_end)).to_numpy()
    return frame[keep].reset_index(drop=True)


def _per_split(
    results: dict[str, BacktestResult], splits: Sequence[TimeSplit], ppy: float
) -> pd.DataFrame:
    rows = []
    for name, result in results.items():
        for split in splits:
            window = slice(split.test_start, split.test_end)
            ret, turn = result.returns.loc[window], result.turnover.loc[window]
            valid = ret.notna()
            metrics = compute_metrics(
                ret[valid].to_numpy(),
                periods_per_year=ppy,
                turnover=float(turn[valid].mean()) if valid.any() else math.nan,
            )
            bounds = {
                "strategy": name,
                "split": split.name,
                "train_start": split.train_start,
                "train_end": split.train_end,
                "test_start": split.test_start,
                "test_end": split.test_end,
            }
            rows.append({**bounds, **{k: metrics[k] for k in METRIC_KEYS}})
    return pd.DataFrame(rows)


def _per_regime(
    strategies: dict[str, pd.DataFrame],
    results: dict[str, BacktestResult],
    frame: pd.DataFrame,
    column: str,
    ppy: float,
) -> pd.DataFrame:
    """Metrics of each strategy over the bars of each regime label (from the model's rows)."""
    labels = frame[["timestamp", "symbol", column]].rename(columns={column: "regime"})
    rows = []
    for name, preds in strategies.items():
        net = pd.DataFrame(
            {
                "timestamp": preds["timestamp"].to_numpy(),
                "symbol": preds["symbol"].to_numpy(),
                "net": results[name].net_by_row,
            }
        ).merge(labels, on=["timestamp", "symbol"], how="left")
        net = net.dropna(subset=["net", "regime"])
        # Equal capital per symbol within a regime: mean net return per (regime, bar).
        by_bar = net.groupby(["regime", "timestamp"], sort=True)["net"].mean()
        turnover = results[name].turnover
        for regime, series in by_bar.groupby(level="regime", sort=True):
            stamps = series.index.get_level_values("timestamp")
            metrics = compute_metrics(
                series.to_numpy(),
                periods_per_year=ppy,
                turnover=float(turnover.reindex(stamps).mean()),
            )
            rows.append(
                {"strategy": name, "regime": regime, **{k: metrics[k] for k in METRIC_KEYS}}
            )
    return pd.DataFrame(rows)


def _summary(
    tester: WalkForwardBacktester,
    results: dict[str, BacktestResult],
    per_split: pd.DataFrame,
    regimes: pd.DataFrame | None,
    splits: Sequence[TimeSplit],
    skipped: dict[str, str],
) -> WalkForwardSummary:
    stats = per_split.groupby("strategy", sort=False)[list(METRIC_KEYS)]
    mean, std = stats.mean(), stats.std(ddof=1)
    by_regime: dict[str, dict[str, dict[str, float]]] = {}
    if regimes is not None:
        for name, group in regimes.groupby("strategy", sort=False):
            by_regime[name] = {
                str(row["regime"]): {k: row[k] for k in METRIC_KEYS}
                for row in group.to_dict("records")
            }
    strategies = {
        name: StrategySummary(
            stitched={k: result.metrics[k] for k in METRIC_KEYS},
            split_mean=mean.loc[name].to_dict(),
            split_std=std.loc[name].to_dict(),
            regimes=by_regime.get(name),
        )
        for name, result in results.items()
    }
    settings = WalkForwardSettings(
        train_window=tester.train_window,
        test_window=tester.test_window,
        step=tester.step or tester.test_window,
        embargo=tester.embargo,
        expanding=tester.expanding,
        cost_bps=tester.cost_bps,
    )
    return WalkForwardSummary(
        settings=settings,
        n_splits=len(splits),
        oos_start=splits[0].test_start,
        oos_end=splits[-1].test_end,
        strategies=strategies,
        skipped_baselines=skipped,
    )


def _bootstrap(
    results: dict[str, BacktestResult], cfg: EvaluationConfig, ppy: float
) -> BootstrapSummary:
    model = results[MODEL].returns.dropna()
    options = {
        "periods_per_year": ppy,
        "reps": cfg.bootstrap_reps,
        "block_length": cfg.bootstrap_block,
        "seed": cfg.bootstrap_seed,
    }
    intervals = bootstrap_metrics(model.to_numpy(), level=cfg.bootstrap_level, **options)
    others = {n: r.returns for n, r in results.items() if n != MODEL}
    # Sharpe(model) − Sharpe(baseline): paired intervals, Holm-adjusted p-values
    differences = (
        sharpe_differences(model, others, level=cfg.bootstrap_level, **options) if others else {}
    )
    return BootstrapSummary.from_dict(
        {
            "level": cfg.bootstrap_level,
            "reps": cfg.bootstrap_reps,
            "block_length": float(intervals["block_length"].iloc[0]),
            "model": intervals[["estimate", "low", "high"]].to_dict("index"),
            "prob_model_sharpe_exceeds": compare_sharpe(model, others, **options),
            "sharpe_difference": differences,
        }
    )
