"""Baselines: hand-computed positions, strict causality, ML baselines that find a planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import EvaluationConfig
from market_nn_plus_ultra.evaluation.baselines import (
    BASELINE_NAMES,
    TimeSplit,
    baseline_predictions,
    buy_and_hold,
    mean_reversion,
    momentum,
    run_baselines,
)
from market_nn_plus_ultra.evaluation.metrics import sharpe_ratio

FAST = EvaluationConfig(lightgbm_estimators=30, baseline_features=["log_return_1", "rsi_14"])


def _panel(closes: dict[str, list[float]]) -> pd.DataFrame:
    n = len(next(iter(closes.values())))
    stamps = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    rows = [
        pd.DataFrame({"timestamp": stamps, "symbol": s, "close": np.asarray(c, dtype=float)})
        for s, c in closes.items()
    ]
    return pd.concat(rows).set_index(["timestamp", "symbol"]).sort_index()


def _ohlcv(n: int, seed: int, phi: float = 0.0, symbols=("A", "B")) -> pd.DataFrame:
    """OHLCV bars whose log returns follow r_t = phi · r_{t-1} + noise."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC")
    frames = []
    for symbol in symbols:
        noise = rng.normal(0.0, 0.01, n)
        r = np.zeros(n)
        r[0] = noise[0]
        for t in range(1, n):  # building the test series: AR(1) recursion
            r[t] = phi * r[t - 1] + noise[t]
        close = 100 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": stamps,
                    "symbol": symbol,
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.002,
                    "low": np.minimum(open_, close) * 0.998,
                    "close": close,
                    "volume": rng.uniform(1e5, 2e5, n),
                }
            )
        )
    return pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()


def _sym(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return frame[frame["symbol"] == symbol].reset_index(drop=True)


def test_buy_and_hold_and_momentum_by_hand():
    closes = [100.0, 102.0, 101.0, 99.0, 103.0]
    panel = _panel({"A": closes, "B": closes[::-1]})
    bh = _sym(buy_and_hold(panel), "A")
    np.testing.assert_array_equal(bh["position"], 1.0)
    expected = [102 / 100 - 1, 101 / 102 - 1, 99 / 101 - 1, 103 / 99 - 1, np.nan]
    np.testing.assert_allclose(bh["realised_return"], expected, rtol=1e-12)
    # forecast at t: mean of the one-bar returns that ended by t
    assert bh["forecast"].iloc[2] == pytest.approx((0.02 + (101 / 102 - 1)) / 2)

    mom = _sym(momentum(panel, lookback=2), "A")
    # past 2-bar returns: t=2: 101/100-1 > 0, t=3: 99/102-1 < 0, t=4: 103/101-1 > 0
    np.testing.assert_array_equal(mom["position"], [0.0, 0.0, 1.0, -1.0, 1.0])
    assert mom["forecast"].iloc[3] == pytest.approx((99 / 102 - 1) / 2)


def test_mean_reversion_by_hand():
    closes = [10.0, 11.0, 13.0, 12.0, 9.0, 10.0]
    frame = _sym(mean_reversion(_panel({"A": closes}), window=3), "A")
    c = np.asarray(closes)
    expected = [0.0, 0.0]
    for t in range(2, len(c)):
        w = c[t - 2 : t + 1]
        z = (c[t] - w.mean()) / w.std(ddof=1)
        expected.append(float(np.clip(-z, -1, 1)))
    np.testing.assert_allclose(frame["position"], expected, rtol=1e-12)
    assert frame["forecast"].iloc[3] == pytest.approx((np.mean(c[1:4]) - 12.0) / 12.0)


def _splits(panel: pd.DataFrame) -> list[TimeSplit]:
    ts = panel.index.get_level_values("timestamp").unique().sort_values()
    return [
        TimeSplit("fold0", ts[0], ts[149], ts[152], ts[199]),
        TimeSplit("fold1", ts[48], ts[199], ts[202], ts[249]),
    ]


def test_every_baseline_is_causal_under_future_perturbation():
    panel = _ohlcv(260, seed=1)
    splits = _splits(panel)
    cut = panel.index.get_level_values("timestamp").unique().sort_values()[225]
    future = panel.index.get_level_values("timestamp") > cut
    perturbed = panel.copy()
    rng = np.random.default_rng(9)
    scale = np.exp(rng.normal(0.0, 0.2, future.sum()))
    for column in ("open", "high", "low", "close"):
        perturbed.loc[future, column] *= scale
    before = baseline_predictions(panel, splits, config=FAST, names=BASELINE_NAMES)
    after = baseline_predictions(perturbed, splits, config=FAST, names=BASELINE_NAMES)
    for name in BASELINE_NAMES:
        a, b = before[name], after[name]
        seen = a["timestamp"] <= cut
        np.testing.assert_array_equal(
            a.loc[seen, "position"], b.loc[seen, "position"], err_msg=f"{name} looked ahead"
        )
        # the perturbation did reach the later rows, so the check has teeth
        if name != "buy_and_hold":
            assert not np.allclose(a.loc[~seen, "position"], b.loc[~seen, "position"])


def test_ml_baselines_find_a_planted_autocorrelation():
    panel = _ohlcv(600, seed=3, phi=-0.6)
    ts = panel.index.get_level_values("timestamp").unique().sort_values()
    split = [TimeSplit("f", ts[0], ts[399], ts[402], ts[598])]
    cfg = EvaluationConfig(lightgbm_estimators=40, baseline_features=["log_return_1", "rsi_14"])
    frames = baseline_predictions(panel, split, config=cfg, names=["ridge", "lightgbm"])
    for name, frame in frames.items():
        assert frame["timestamp"].min() == ts[402] and frame["timestamp"].max() == ts[598]
        ok = frame["realised_return"].notna()
        ic = np.corrcoef(frame.loc[ok, "forecast"], frame.loc[ok, "realised_return"])[0, 1]
        assert ic > 0.3, name
        assert frame["position"].abs().max() <= 1.0
        assert frame["position"].abs().max() == 1.0  # strong forecasts take full positions
    results = run_baselines(panel, split, cost_bps=1.0, config=cfg, names=["ridge"])
    assert results["ridge"].metrics["sharpe"] > 2.0


def test_test_mask_and_costs():
    closes = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    panel = _panel({"A": closes})
    stamps = panel.index.get_level_values("timestamp")
    mask = pd.Series(np.arange(6) >= 3, index=stamps)
    result = run_baselines(panel, test_mask=mask, cost_bps=10.0, names=["buy_and_hold"])
    returns = result["buy_and_hold"].returns
    assert list(returns.index) == list(stamps[3:])
    # the first test bar pays the entry cost (from flat to 1), later bars pay nothing
    np.testing.assert_allclose(returns.iloc[:2], [104 / 103 - 1 - 1e-3, 105 / 104 - 1], rtol=1e-12)
    manual = sharpe_ratio([104 / 103 - 1 - 1e-3, 105 / 104 - 1])
    assert result["buy_and_hold"].metrics["sharpe"] == pytest.approx(manual)


def test_clear_errors():
    panel = _ohlcv(60, seed=0)
    with pytest.raises(ValueError, match="did you mean 'momentum'"):
        baseline_predictions(panel, names=["momentun"])
    with pytest.raises(ValueError, match="needs at least one train/test split"):
        baseline_predictions(panel, names=["ridge"])
    ts = panel.index.get_level_values("timestamp").unique().sort_values()
    with pytest.raises(ValueError, match=r"only \d+ training rows"):
        baseline_predictions(
            panel, [TimeSplit("f", ts[0], ts[3], ts[6], ts[50])], config=FAST, names=["ridge"]
        )
    with pytest.raises(ValueError, match=r"lacks \[.close.\]"):
        buy_and_hold(panel.drop(columns="close"))
