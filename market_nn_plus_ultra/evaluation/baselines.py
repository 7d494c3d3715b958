"""Baselines beside every result: buy-and-hold, momentum, mean reversion, ridge, LightGBM.

Each baseline turns a price panel (index ``(timestamp, symbol)``, a ``close`` column;
OHLCV for the ML baselines' features) into a predictions frame of the DESIGN.md contract
(``timestamp, symbol, position, forecast, realised_return``) and is strictly causal: the
position at t reads bars up to and including t only. ``realised_return`` is the symbol's
simple return from its bar t to its next bar, the return the position earns.

* ``buy_and_hold``: position 1; forecast = mean of the past one-bar returns.
* ``momentum``: position = sign(close_t / close_{t-L} − 1); forecast = that L-bar return / L.
* ``mean_reversion``: z = (close − rolling mean) / rolling std over ``window`` bars;
  position = clip(−z, −1, 1); forecast = (rolling mean − close) / close.
* ``ridge`` / ``lightgbm``: regress the next return on the FeaturePipeline features of the
  training rows of each split, predict the test rows; position =
  clip(forecast / (forecast_scale × std of the in-sample forecasts), −1, 1), so a forecast
  one in-sample standard deviation strong takes a full position.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import BASELINE_NAMES, EvaluationConfig
from .backtest import BacktestResult, backtest

__all__ = [
    "BASELINE_NAMES",
    "TimeSplit",
    "baseline_predictions",
    "buy_and_hold",
    "mean_reversion",
    "ml_baseline",
    "momentum",
    "run_baselines",
]

PREDICTION_COLUMNS = ["timestamp", "symbol", "position", "forecast", "realised_return"]


@dataclass(frozen=True)
class TimeSplit:
    """One train/test split in time; bounds are inclusive timestamps (UTC)."""

    name: str
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


def _prices(panel: pd.DataFrame) -> pd.DataFrame:
    """Long frame ``timestamp, symbol, close, ...`` ordered symbol-major, time within symbol."""
    names = list(getattr(panel.index, "names", []))
    if "timestamp" in names and "symbol" in names:
        panel = panel.reset_index()
    missing = [c for c in ("timestamp", "symbol", "close") if c not in panel.columns]
    if missing:
        raise ValueError(
            f"baselines: panel lacks {missing}; columns present: {list(panel.columns)}. "
            "Pass a panel indexed by (timestamp, symbol) with a close column "
            "(market_nn_plus_ultra.data.panel.read_panel)."
        )
    frame = panel.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    bad = frame["close"].to_numpy(dtype=np.float64)
    if (~(bad > 0)).any():
        raise ValueError(
            f"baselines: panel.close has {int((~(bad > 0)).sum())} non-positive or NaN prices — "
            "validate the data (`plus-ultra data validate`) and drop those bars"
        )
    return frame


def _next_return(frame: pd.DataFrame) -> pd.Series:
    close = frame["close"]
    return close.groupby(frame["symbol"], sort=False).shift(-1) / close - 1.0


def _by_row(values: pd.Series) -> pd.Series:
    """A groupby-rolling/expanding result (index ``(symbol, row)``) back in row order."""
    return values.reset_index(level=0, drop=True).sort_index()


def _result(
    frame: pd.DataFrame,
    position: pd.Series,
    forecast: pd.Series,
    keep: np.ndarray | None = None,
) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "timestamp": frame["timestamp"].to_numpy(),
            "symbol": frame["symbol"].to_numpy(),
            "position": np.nan_to_num(position.to_numpy(dtype=np.float64), nan=0.0),
            "forecast": forecast.to_numpy(dtype=np.float64),
            "realised_return": _next_return(frame).to_numpy(dtype=np.float64),
        }
    )
    if keep is not None:
        out = out[keep]
    return out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def buy_and_hold(panel: pd.DataFrame) -> pd.DataFrame:
    """Long every symbol at every bar (position 1); forecast = mean past one-bar return."""
    frame = _prices(panel)
    past = frame["close"].groupby(frame["symbol"], sort=False).pct_change()
    forecast = _by_row(past.groupby(frame["symbol"], sort=False).expanding().mean())
    return _result(frame, pd.Series(np.ones(len(frame))), forecast)


def momentum(panel: pd.DataFrame, lookback: int = 20) -> pd.DataFrame:
    """Time-series momentum: position = sign of the past ``lookback``-bar return (0 in warm-up)."""
    if lookback < 1:
        raise ValueError(f"evaluation.momentum_lookback must be >= 1 bars, got {lookback}")
    frame = _prices(panel)
    close = frame["close"]
    past = close / close.groupby(frame["symbol"], sort=False).shift(lookback) - 1.0
    return _result(frame, np.sign(past), past / lookback)


def mean_reversion(panel: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Mean reversion: position = clip(−z, −1, 1), z the close's rolling z-score over ``window``."""
    if window < 2:
        raise ValueError(f"evaluation.mean_reversion_window must be >= 2 bars, got {window}")
    frame = _prices(panel)
    close = frame["close"]
    rolling = close.groupby(frame["symbol"], sort=False).rolling(window)
    mean, std = _by_row(rolling.mean()), _by_row(rolling.std())
    z = (close - mean) / std.where(std > 0)
    return _result(frame, (-z).clip(-1.0, 1.0), (mean - close) / close)


def _features(frame: pd.DataFrame, names: Sequence[str] | None) -> pd.DataFrame:
    from ..features import FeaturePipeline

    pipeline = FeaturePipeline(names=names)
    panel = frame.set_index(["timestamp", "symbol"])
    computed = pipeline.transform_panel(panel)
    columns = [c for c in pipeline.last_report.computed if c in computed.columns]
    if not columns:
        raise ValueError(
            "ridge/lightgbm baselines: no feature could be computed from the panel columns "
            f"{list(panel.columns)} — pass OHLCV bars or set evaluation.baseline_features"
        )
    values = computed[columns].to_numpy(dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return pd.DataFrame(values, columns=columns, index=frame.index)


def _regressor(kind: str, cfg: EvaluationConfig, seed: int):
    if kind == "ridge":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # Imputer and scaler are fitted on the training rows only (inside fit).
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            Ridge(alpha=cfg.ridge_alpha),
        )
    from lightgbm import LGBMRegressor

    return LGBMRegressor(
        n_estimators=cfg.lightgbm_estimators,
        learning_rate=cfg.lightgbm_learning_rate,
        num_leaves=cfg.lightgbm_leaves,
        min_child_samples=10,
        random_state=seed,
        deterministic=True,
        n_jobs=1,
        verbose=-1,
    )


def ml_baseline(
    panel: pd.DataFrame,
    splits: Sequence[TimeSplit],
    kind: str = "ridge",
    config: EvaluationConfig | None = None,
    *,
    features: pd.DataFrame | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Ridge or LightGBM forecasts of the next return, refitted on each split's training rows.

    Training rows are those of ``[train_start, train_end]`` whose next bar (the target's
    end) lies before ``test_start`` — a purge of the target horizon. Returns predictions
    for the test rows of every split (a later split wins where test ranges overlap).
    ``features``: precomputed feature columns, one row per panel row in symbol-major
    order (as :func:`baseline_predictions` shares them between ridge and LightGBM).
    """
    if kind not in ("ridge", "lightgbm"):
        raise ValueError(f"ml_baseline: kind must be 'ridge' or 'lightgbm', got {kind!r}")
    if not splits:
        raise ValueError(f"the {kind} baseline needs at least one train/test split")
    cfg = config or EvaluationConfig()
    frame = _prices(panel)
    if features is None:
        feats = _features(frame, cfg.baseline_features)
    else:
        if len(features) != len(frame):
            raise ValueError(
                f"ml_baseline: features have {len(features)} rows, the panel {len(frame)}"
            )
        feats = features
    target = _next_return(frame)
    stamps = frame["timestamp"]
    next_stamp = stamps.groupby(frame["symbol"], sort=False).shift(-1)
    position = np.zeros(len(frame))
    forecast = np.full(len(frame), np.nan)
    tested = np.zeros(len(frame), dtype=bool)
    x_all = feats.to_numpy(dtype=np.float64)
    for split in splits:  # one fit per split: a handful, never one per row
        train = (
            (stamps >= split.train_start)
            & (stamps <= split.train_end)
            & (next_stamp < split.test_start)
            & target.notna()
        ).to_numpy()
        test = ((stamps >= split.test_start) & (stamps <= split.test_end)).to_numpy()
        if train.sum() < 10:
            raise ValueError(
                f"{kind} baseline, split {split.name}: only {int(train.sum())} training rows "
                f"between {split.train_start} and {split.train_end} — lengthen "
                "evaluation.train_window"
            )
        model = _regressor(kind, cfg, seed)
        model.fit(x_all[train], target.to_numpy()[train])
        in_sample = model.predict(x_all[train])
        scale = float(np.std(in_sample)) * cfg.forecast_scale
        pred = model.predict(x_all[test]) if test.any() else np.empty(0)
        forecast[test] = pred
        position[test] = np.clip(pred / scale, -1.0, 1.0) if scale > 0 else 0.0
        tested |= test
    return _result(frame, pd.Series(position), pd.Series(forecast), keep=tested)


def _check_names(names: Sequence[str]) -> list[str]:
    for name in names:
        if name not in BASELINE_NAMES:
            guess = difflib.get_close_matches(name, BASELINE_NAMES, n=1)
            hint = f" — did you mean {guess[0]!r}?" if guess else ""
            raise ValueError(
                f"evaluation.baselines: unknown baseline {name!r}{hint} "
                f"Known baselines: {', '.join(BASELINE_NAMES)}."
            )
    return list(dict.fromkeys(names))


def _in_splits(frame: pd.DataFrame, splits: Sequence[TimeSplit]) -> pd.DataFrame:
    stamps = frame["timestamp"]
    keep = np.zeros(len(frame), dtype=bool)
    for split in splits:
        keep |= ((stamps >= split.test_start) & (stamps <= split.test_end)).to_numpy()
    return frame[keep].reset_index(drop=True)


def _mask_split(panel: pd.DataFrame, test_mask: pd.Series) -> TimeSplit:
    stamps = pd.DatetimeIndex(panel.index.get_level_values("timestamp")).unique().sort_values()
    chosen = stamps[test_mask.reindex(stamps, fill_value=False).to_numpy(dtype=bool)]
    if chosen.empty or chosen[0] == stamps[0]:
        raise ValueError(
            "test_mask must mark a non-empty test period that starts after the first bar "
            "(the ML baselines train on the bars before it)"
        )
    before = stamps[stamps < chosen[0]]
    return TimeSplit("test", before[0], before[-1], chosen[0], chosen[-1])


def baseline_predictions(
    panel: pd.DataFrame,
    splits: Sequence[TimeSplit] | None = None,
    *,
    test_mask: pd.Series | None = None,
    config: EvaluationConfig | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Predictions frames of the chosen baselines, restricted to the test rows.

    ``splits`` (walk-forward folds) or ``test_mask`` (a boolean Series indexed by
    timestamp: True on test bars) define the test rows; with neither, the rule baselines
    cover every row and the ML baselines raise. Names default to ``config.baselines``.
    """
    cfg = config or EvaluationConfig()
    chosen = _check_names(cfg.baselines if names is None else names)
    if test_mask is not None:
        splits = [_mask_split(panel, test_mask)]
    out: dict[str, pd.DataFrame] = {}
    feats = None
    if {"ridge", "lightgbm"} & set(chosen):  # computed once, shared by both ML baselines
        feats = _features(_prices(panel), cfg.baseline_features)
    for name in chosen:
        if name == "buy_and_hold":
            frame = buy_and_hold(panel)
        elif name == "momentum":
            frame = momentum(panel, cfg.momentum_lookback)
        elif name == "mean_reversion":
            frame = mean_reversion(panel, cfg.mean_reversion_window)
        else:
            frame = ml_baseline(panel, splits or [], name, cfg, features=feats, seed=seed)
        if splits:
            frame = _in_splits(frame, splits)
        if test_mask is not None:
            flag = test_mask.reindex(pd.DatetimeIndex(frame["timestamp"]), fill_value=False)
            frame = frame[flag.to_numpy(dtype=bool)].reset_index(drop=True)
        out[name] = frame
    return out


def run_baselines(
    panel: pd.DataFrame,
    splits: Sequence[TimeSplit] | None = None,
    *,
    test_mask: pd.Series | None = None,
    cost_bps: float | None = None,
    config: EvaluationConfig | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, BacktestResult]:
    """Backtest every chosen baseline on the same test rows and costs (default config's)."""
    cfg = config or EvaluationConfig()
    cost = cfg.cost_bps if cost_bps is None else cost_bps
    frames = baseline_predictions(
        panel, splits, test_mask=test_mask, config=cfg, names=names, seed=seed
    )
    return {name: backtest(frame, cost_bps=cost) for name, frame in frames.items()}
