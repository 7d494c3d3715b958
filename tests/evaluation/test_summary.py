"""The typed walk-forward summary: summary.json round trip, its key tree, older files, frozen."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra._io import json_ready
from market_nn_plus_ultra.config import EvaluationConfig
from market_nn_plus_ultra.evaluation.baselines import momentum
from market_nn_plus_ultra.evaluation.metrics import METRIC_KEYS
from market_nn_plus_ultra.evaluation.report import build_report_data, summary_intervals
from market_nn_plus_ultra.evaluation.sample import select_sample
from market_nn_plus_ultra.evaluation.summary import (
    SharpeDifference,
    WalkForwardSummary,
)
from market_nn_plus_ultra.evaluation.walkforward import MODEL, WalkForwardBacktester
from market_nn_plus_ultra.evaluation.walkforward_io import attach_breaches, write_walkforward

BASELINES = ("buy_and_hold", "momentum", "mean_reversion")


def _predictions(n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    frames = []
    for symbol in ("A", "B"):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
        frames.append(pd.DataFrame({"timestamp": stamps, "symbol": symbol, "close": close}))
    panel = pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()
    preds = momentum(panel, lookback=5)
    day = pd.DatetimeIndex(preds["timestamp"]).day_of_year.to_numpy()
    preds["regime"] = np.where(day % 2 == 0, "calm", "storm")
    return preds


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """A real walk-forward with every optional part: sample, regimes, bootstrap, breaches."""
    preds = _predictions()
    cfg = EvaluationConfig(baselines=list(BASELINES), bootstrap_reps=50, bootstrap_block=2.0)
    _, sample = select_sample(preds)
    result = WalkForwardBacktester(40, 30, cost_bps=3.0).run(
        preds, config=cfg, regime_column="regime", sample=sample
    )
    breaches = pd.DataFrame({"rule": ["max_position", "max_position", "max_gross"]})
    result = attach_breaches(result, breaches)
    path = tmp_path_factory.mktemp("summary") / "summary.json"
    write_walkforward(result, summary_path=path)
    return result, path


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_summary_json_round_trips_exactly(walked, tmp_path):
    result, path = walked
    text = path.read_text()
    loaded = json.loads(text)
    typed = WalkForwardSummary.from_dict(loaded)
    assert json_ready(typed.to_dict()) == loaded
    assert json_ready(result.summary.to_dict()) == loaded
    # Written again from the file's own values: the same bytes.
    again = dataclasses.replace(result, summary=typed)
    write_walkforward(again, summary_path=tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text
    assert typed.oos_start == result.summary.oos_start == result.splits[0].test_start
    assert typed.n_bars == 90 == len(result.returns[MODEL].dropna())


def test_summary_json_key_tree_is_the_public_format(walked):
    _, path = walked
    loaded = json.loads(path.read_text())
    assert list(loaded) == [
        "settings",
        "n_splits",
        "oos_start",
        "oos_end",
        "strategies",
        "skipped_baselines",
        "sample",
        "bootstrap",
        "guardrail_breaches",
    ]
    assert list(loaded["settings"]) == [
        "train_window",
        "test_window",
        "step",
        "embargo",
        "expanding",
        "cost_bps",
    ]
    assert list(loaded["strategies"]) == [MODEL, *BASELINES]
    for stats in loaded["strategies"].values():
        assert list(stats) == ["stitched", "split_mean", "split_std", "regimes"]
        for block in ("stitched", "split_mean", "split_std"):
            assert list(stats[block]) == list(METRIC_KEYS)
        assert set(stats["regimes"]) == {"calm", "storm"}
        assert all(list(m) == list(METRIC_KEYS) for m in stats["regimes"].values())
    assert list(loaded["sample"]) == [
        "scored",
        "start",
        "end",
        "n_bars",
        "n_rows",
        "n_left_out",
        "notice",
        "description",
    ]
    boot = loaded["bootstrap"]
    assert list(boot) == [
        "level",
        "reps",
        "block_length",
        "model",
        "prob_model_sharpe_exceeds",
        "sharpe_difference",
    ]
    assert set(boot["model"]) == {"sharpe", "cagr", "max_drawdown"}
    assert all(list(i) == ["estimate", "low", "high"] for i in boot["model"].values())
    assert list(boot["prob_model_sharpe_exceeds"]) == list(BASELINES)
    assert list(boot["sharpe_difference"]) == list(BASELINES)
    for diff in boot["sharpe_difference"].values():
        assert list(diff) == [
            "estimate",
            "low",
            "high",
            "p_value",
            "p_adjusted",
            "low_adjusted",
            "high_adjusted",
            "significant",
            "n",
            "prob_beat",
            "level",
            "reps",
            "block_length",
            "adjust",
        ]
    assert loaded["guardrail_breaches"] == {"max_gross": 1, "max_position": 2}
    assert loaded["settings"] == {
        "train_window": 40,
        "test_window": 30,
        "step": 30,
        "embargo": 1,
        "expanding": False,
        "cost_bps": 3.0,
    }
    assert len(_keys(loaded)) == len(_keys(WalkForwardSummary.from_dict(loaded).to_dict()))


def test_attributes_hold_the_numbers(walked):
    result, _ = walked
    summary = result.summary
    model = summary.strategies[MODEL]
    stitched = result.backtests[MODEL].metrics
    assert model.stitched["sharpe"] == pytest.approx(stitched["sharpe"], rel=1e-12)
    folds = result.per_split.query("strategy == @MODEL")
    assert model.split_mean["sharpe"] == pytest.approx(folds["sharpe"].mean())
    assert model.split_std["sharpe"] == pytest.approx(folds["sharpe"].std(ddof=1))
    diff = summary.bootstrap.sharpe_difference["momentum"]
    assert isinstance(diff, SharpeDifference) and diff.n == 90 and diff.adjust == "holm"
    assert diff.low <= diff.estimate <= diff.high
    assert summary.sample.scored == "as_given" and summary.sample.n_bars == 90
    assert summary.guardrail_breaches == {"max_gross": 1, "max_position": 2}
    intervals, p_beat = summary_intervals(summary)
    sharpe = intervals.set_index("metric").loc["sharpe"]
    assert sharpe["point"] == summary.bootstrap.model["sharpe"].estimate
    assert p_beat == dict(summary.bootstrap.prob_model_sharpe_exceeds)


def test_results_are_frozen_and_additions_return_copies(walked):
    result, _ = walked
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.summary.n_splits = 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.breaches = None
    plain = dataclasses.replace(
        result, summary=dataclasses.replace(result.summary, guardrail_breaches=None)
    )
    guarded = attach_breaches(plain, pd.DataFrame({"rule": ["max_position"]}))
    assert plain.summary.guardrail_breaches is None and plain.breaches is not None
    assert guarded.summary.guardrail_breaches == {"max_position": 1}
    assert "guardrail_breaches" not in plain.summary.to_dict()


def test_older_summaries_without_the_newer_blocks_load(walked):
    _, path = walked
    loaded = json.loads(path.read_text())
    old = {k: v for k, v in loaded.items() if k not in ("sample", "guardrail_breaches")}
    old["bootstrap"] = {
        k: v for k, v in loaded["bootstrap"].items() if k not in ("sharpe_difference",)
    }
    typed = WalkForwardSummary.from_dict(old)
    assert typed.sample is None and typed.guardrail_breaches is None and typed.retrain is None
    assert typed.bootstrap.sharpe_difference == {}
    assert typed.bootstrap.model["sharpe"].low == loaded["bootstrap"]["model"]["sharpe"]["low"]
    assert "sample" not in typed.to_dict()
    oldest = {k: v for k, v in old.items() if k != "bootstrap"}
    typed = WalkForwardSummary.from_dict(oldest)
    assert typed.bootstrap is None and summary_intervals(typed) == (None, None)
    assert set(typed.to_dict()) == set(oldest)
    # A hand-written summary with only some keys per block still loads.
    partial = WalkForwardSummary.from_dict(
        {"strategies": {"model": {"stitched": {"n_periods": 5}}}, "settings": {"cost_bps": 2}}
    )
    assert partial.n_bars == 5 and partial.settings.cost_bps == 2
    assert partial.settings.train_window is None and partial.strategies["model"].split_mean == {}


def test_a_file_that_is_not_a_summary_is_refused_by_name():
    with pytest.raises(ValueError, match=r"no 'strategies' block.*--summary-output"):
        WalkForwardSummary.from_dict({"mean_sharpe": 0.9})


def test_report_reads_the_typed_summary_like_its_json(walked):
    result, path = walked
    preds = _predictions()
    test = preds[pd.to_datetime(preds["timestamp"]).isin(result.returns.index)]
    intervals, p_beat = summary_intervals(result.summary)
    common = {"cost_bps": 3.0, "walkforward": result.per_split, "intervals": intervals}
    typed = build_report_data(test, walkforward_summary=result.summary, p_beat=p_beat, **common)
    raw = build_report_data(
        test, walkforward_summary=json.loads(path.read_text()), p_beat=p_beat, **common
    )
    assert typed.sample.n_bars == raw.sample.n_bars == 90
    assert typed.headline.keys() == raw.headline.keys() == {MODEL, *BASELINES}
    assert typed.sharpe_difference["momentum"] == raw.sharpe_difference["momentum"]
    assert typed.walkforward_summary["bootstrap"].keys() == {
        "level",
        "reps",
        "block_length",
        "sharpe_difference",
    }
