"""Walk-forward over a predictions frame: fold bounds, per-fold metrics, baselines, regimes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import EvaluationConfig
from market_nn_plus_ultra.evaluation.baselines import momentum
from market_nn_plus_ultra.evaluation.metrics import METRIC_KEYS, compute_metrics
from market_nn_plus_ultra.evaluation.walkforward import MODEL, WalkForwardBacktester
from market_nn_plus_ultra.evaluation.walkforward_io import write_walkforward

RULES = EvaluationConfig(baselines=["buy_and_hold", "momentum", "mean_reversion"])


def _panel(n: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    frames = []
    for symbol in ("A", "B"):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
        frames.append(pd.DataFrame({"timestamp": stamps, "symbol": symbol, "close": close}))
    return pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()


def test_fold_bounds_by_hand():
    stamps = pd.date_range("2024-01-01", periods=20, freq="D", tz="UTC")
    splits = WalkForwardBacktester(5, 4, embargo=1).splits(stamps)
    # train rows k·4 .. k·4+4; test starts 1 (target) + 1 (embargo) rows after training
    assert [(s.train_start, s.train_end, s.test_start, s.test_end) for s in splits] == [
        (stamps[0], stamps[4], stamps[7], stamps[10]),
        (stamps[4], stamps[8], stamps[11], stamps[14]),
        (stamps[8], stamps[12], stamps[15], stamps[18]),
    ]
    grown = WalkForwardBacktester(5, 4, embargo=0, step=2, expanding=True).splits(stamps)
    assert grown[2].train_start == stamps[0] and grown[2].test_start == stamps[10]
    with pytest.raises(ValueError, match="too few"):
        WalkForwardBacktester(15, 4).splits(stamps)


def test_model_equal_to_a_baseline_scores_the_same_and_folds_match_by_hand():
    panel = _panel()
    preds = momentum(panel, lookback=5)
    cfg = RULES.model_copy(update={"momentum_lookback": 5})
    tester = WalkForwardBacktester(40, 30, embargo=2, cost_bps=0.0)
    result = tester.run(preds, config=cfg, bootstrap=False)  # prices implied by returns
    summary = result.summary.strategies
    assert summary[MODEL].stitched["sharpe"] == pytest.approx(
        summary["momentum"].stitched["sharpe"], rel=1e-9
    )
    with_bars = tester.run(preds, panel=panel, config=cfg, bootstrap=False)
    assert with_bars.summary.strategies["momentum"].stitched["total_return"] == (
        pytest.approx(summary[MODEL].stitched["total_return"], rel=1e-9)
    )
    assert result.summary.skipped_baselines == {}

    # every fold's metrics from the portfolio returns computed here by hand
    for split in result.splits:
        rows = preds[
            (preds["timestamp"] >= split.test_start) & (preds["timestamp"] <= split.test_end)
        ]
        by_bar = (rows["position"] * rows["realised_return"]).groupby(rows["timestamp"]).mean()
        expected = compute_metrics(by_bar.dropna().to_numpy())
        got = result.per_split.query("strategy == @MODEL and split == @split.name").iloc[0]
        for key in ("total_return", "sharpe", "max_drawdown", "n_periods"):
            assert got[key] == pytest.approx(expected[key], rel=1e-9), key
    folds = result.per_split[result.per_split["strategy"] == MODEL]
    # 160 bars: tests start at bar 40 + 1 + 2 and 3 folds of 30 fit before the last bar
    assert len(result.splits) == 3
    assert summary[MODEL].stitched["n_periods"] == folds["n_periods"].sum() == 3 * 30
    assert summary[MODEL].split_mean["sharpe"] == pytest.approx(folds["sharpe"].mean())
    assert summary[MODEL].split_std["sharpe"] == pytest.approx(folds["sharpe"].std())
    assert set(result.per_split.columns) >= {"strategy", "split", "test_start", *METRIC_KEYS}
    assert set(result.returns.columns) == {MODEL, "buy_and_hold", "momentum", "mean_reversion"}


def test_costs_lower_every_strategy_and_buy_and_hold_pays_once():
    preds = momentum(_panel(), lookback=3)
    free = WalkForwardBacktester(40, 30, cost_bps=0.0).run(preds, config=RULES, bootstrap=False)
    paid = WalkForwardBacktester(40, 30, cost_bps=20.0).run(preds, config=RULES, bootstrap=False)
    for name in (MODEL, "momentum", "mean_reversion", "buy_and_hold"):
        assert paid.returns[name].sum() < free.returns[name].sum()
    diff = free.returns["buy_and_hold"] - paid.returns["buy_and_hold"]
    np.testing.assert_allclose(diff.iloc[0], 20 / 1e4)  # entry at the first test bar only
    np.testing.assert_allclose(diff.iloc[1:], 0.0, atol=1e-15)


def test_regime_attribution_and_outputs(tmp_path):
    preds = momentum(_panel(), lookback=5)
    day = pd.DatetimeIndex(preds["timestamp"]).day_of_year.to_numpy()
    preds["regime"] = np.where(day % 2 == 0, "calm", "storm")
    cfg = RULES.model_copy(update={"bootstrap_reps": 50, "bootstrap_block": 2.0})
    result = WalkForwardBacktester(40, 30).run(preds, config=cfg, regime_column="regime")
    model = result.returns[MODEL].dropna()
    calm = model[model.index.day_of_year % 2 == 0]
    row = result.regimes.query("strategy == @MODEL and regime == 'calm'").iloc[0]
    assert row["total_return"] == pytest.approx(np.prod(1 + calm.to_numpy()) - 1, rel=1e-9)
    assert row["n_periods"] == len(calm)
    assert set(result.summary.strategies["momentum"].regimes) == {"calm", "storm"}
    boot = result.summary.bootstrap
    assert set(boot.prob_model_sharpe_exceeds) == {"buy_and_hold", "momentum", "mean_reversion"}
    assert boot.model["sharpe"].low < boot.model["sharpe"].high

    paths = write_walkforward(
        result, tmp_path / "per_split.parquet", tmp_path / "summary.json", tmp_path / "r.parquet"
    )
    assert [p.name for p in paths.values()] == ["per_split.parquet", "summary.json", "r.parquet"]
    loaded = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN → null
    assert loaded["n_splits"] == len(result.splits)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "per_split.parquet"), result.per_split)
    assert not list(tmp_path.glob(".*tmp"))


def test_clear_errors():
    preds = momentum(_panel(60), lookback=5)
    with pytest.raises(ValueError, match="missing column"):
        WalkForwardBacktester(10, 10).run(preds.drop(columns="position"), config=RULES)
    with pytest.raises(ValueError, match="duplicate"):
        WalkForwardBacktester(10, 10).run(pd.concat([preds, preds.iloc[:1]]), config=RULES)
    with pytest.raises(ValueError, match="not in the database"):
        other = _panel(60).rename(index={"B": "C"}, level="symbol")
        WalkForwardBacktester(10, 10).run(preds, panel=other, config=RULES, bootstrap=False)
    with pytest.raises(ValueError, match=r"evaluation\.test_window"):
        WalkForwardBacktester(10, 0)
