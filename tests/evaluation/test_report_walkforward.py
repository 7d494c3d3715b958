"""Reports from a walk-forward: one sample per headline, every strategy beside the model.

The report's point estimates, intervals, baselines and charts must all cover the
walk-forward's stitched test bars, never the whole predictions file.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import DataConfig, EvaluationConfig
from market_nn_plus_ultra.data.build import build_database
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.metrics import sharpe_ratio
from market_nn_plus_ultra.evaluation.report import build_report_data, split_summary, write_report
from market_nn_plus_ultra.evaluation.report_charts import drawdowns, equity_curves
from market_nn_plus_ultra.evaluation.report_files import report_data_from_files
from market_nn_plus_ultra.evaluation.report_notes import honest_notes
from market_nn_plus_ultra.evaluation.report_tables import comparison_table, headline_table
from market_nn_plus_ultra.evaluation.walkforward import WalkForwardBacktester
from market_nn_plus_ultra.evaluation.walkforward_io import write_walkforward

N_BARS = 220
TEST_START, TEST_END = 100, 219  # rows of the (known) walk-forward's test bars


def _predictions(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2021-01-04", periods=N_BARS, freq="B", tz="UTC")
    frame = pd.MultiIndex.from_product([ts, ["AAA", "BBB"]], names=["timestamp", "symbol"])
    frame = frame.to_frame(index=False)
    frame["realised_return"] = rng.normal(3e-4, 0.01, len(frame))
    # A strong in-sample edge on the first 100 bars, none after: the two samples differ.
    edge = np.where(np.repeat(np.arange(N_BARS), 2) < TEST_START, 0.01, 0.0)
    frame["position"] = np.sign(frame["realised_return"] * edge + rng.normal(0, 0.01, len(frame)))
    frame["benchmark_return"] = rng.normal(2e-4, 0.008, N_BARS).repeat(2)
    return frame


def _stats(sharpe: float, n: int, total: float) -> dict[str, float]:
    return {
        "total_return": total,
        "cagr": 0.05,
        "volatility": 0.12,
        "sharpe": sharpe,
        "sortino": 1.1 * sharpe,
        "max_drawdown": -0.08,
        "calmar": 0.6,
        "hit_rate": 0.51,
        "turnover": 0.2,
        "cvar_95": -0.02,
        "n_periods": n,
    }


@pytest.fixture(scope="module")
def known():
    """A hand-built summary of a 2-fold walk-forward over bars 100..219 (60 + 60 bars)."""
    frame = _predictions()
    ts = frame["timestamp"].drop_duplicates().reset_index(drop=True)
    folds = [(0, 39, 100, 159), (60, 99, 160, 219)]
    per_split = pd.DataFrame(
        [
            {
                "strategy": name,
                "split": f"fold{k}",
                "train_start": ts[a],
                "train_end": ts[b],
                "test_start": ts[c],
                "test_end": ts[d],
                "sharpe": 0.1 * k,
            }
            for name in ("model", "momentum")
            for k, (a, b, c, d) in enumerate(folds)
        ]
    )
    test = frame[frame["timestamp"].between(ts[TEST_START], ts[TEST_END])]
    model = backtest(test, cost_bps=5.0).metrics
    summary = {
        "settings": {"train_window": 40, "test_window": 60, "cost_bps": 5.0, "embargo": 60},
        "n_splits": 2,
        "oos_start": ts[TEST_START].isoformat(),
        "oos_end": ts[TEST_END].isoformat(),
        "sample": {
            "scored": "out_of_sample",
            "start": ts[0].isoformat(),
            "end": ts[TEST_END].isoformat(),
            "n_bars": 1000,
            "n_left_out": 2898,
            "notice": None,
        },
        "strategies": {
            "model": {"stitched": {k: model[k] for k in _stats(0, 0, 0)}},
            "buy_and_hold": {"stitched": _stats(0.31, 120, 0.041)},
            "momentum": {"stitched": _stats(-0.27, 120, -0.033)},
            "ridge": {"stitched": _stats(0.12, 120, 0.015)},
        },
        "skipped_baselines": {},
        "bootstrap": {
            "level": 0.9,
            "reps": 200,
            "block_length": 3.0,
            "model": {"sharpe": {"estimate": model["sharpe"], "low": -1.23, "high": 2.34}},
            "prob_model_sharpe_exceeds": {"buy_and_hold": 0.44, "momentum": 0.71, "ridge": 0.58},
            "sharpe_difference": {
                "buy_and_hold": {
                    "estimate": 0.111,
                    "low": -0.91,
                    "high": 1.05,
                    "p_value": 0.412,
                    "p_adjusted": 0.824,
                    "significant": False,
                    "n": 120,
                },
                "momentum": {
                    "estimate": 0.777,
                    "low": 0.05,
                    "high": 1.61,
                    "low_adjusted": -0.2,
                    "high_adjusted": 1.9,
                    "p_value": 0.012,
                    "p_adjusted": 0.036,
                    "significant": True,
                    "n": 120,
                },
            },
        },
    }
    return frame, per_split, summary, model


@pytest.fixture(scope="module")
def rendered(known, tmp_path_factory):
    frame, per_split, summary, _ = known
    wf_summary, intervals, p_beat = split_summary(summary)
    data = build_report_data(
        frame,
        cost_bps=5.0,
        walkforward=per_split,
        walkforward_summary=wf_summary,
        intervals=intervals,
        p_beat=p_beat,
    )
    paths = write_report(data, tmp_path_factory.mktemp("known") / "r.html", rolling_window=10)
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    return data, html, md


def test_headline_point_and_interval_come_from_the_same_bars(known, rendered):
    frame, _, _, model = known
    data, html, md = rendered
    whole = backtest(frame, cost_bps=5.0).metrics
    assert whole["n_periods"] == N_BARS and model["n_periods"] == 120
    assert not math.isclose(whole["sharpe"], model["sharpe"], abs_tol=0.05)  # samples differ
    cell = f"{model['sharpe']:.2f} [-1.23, 2.34]"
    row = headline_table(data).set_index("Strategy").loc["model"]
    assert row["Sharpe"] == cell and row["Periods"] == "120"
    assert row["Total return"] == f"{100 * model['total_return']:.2f}%"
    for text in (md, html):
        assert f" {cell} " in text or f">{cell}<" in text
        assert f"{whole['sharpe']:.2f} [" not in text
        assert "walk-forward test bars 2021-05-24 .. 2021-11-05, 120 bars (2 folds)" in text
        assert "out of sample 2021-01-04 .. 2021-11-05, 1,000 bars; 2,898 in-sample bars" in text
    assert data.model.metrics["n_periods"] == 120  # the charts' series: the same bars
    assert len(equity_curves(data)) == 120
    assert not data.warnings  # the rescored model equals the summary's


def test_every_baseline_of_the_summary_is_in_the_headline(rendered):
    data, html, md = rendered
    table = headline_table(data).set_index("Strategy")
    assert list(table.index) == ["model", "buy_and_hold", "momentum", "ridge", "benchmark"]
    assert table.loc["momentum", "Sharpe"] == "-0.27"
    assert table.loc["ridge", "Total return"] == "1.50%"
    assert table.loc["buy_and_hold", "Periods"] == "120"
    assert "| momentum | 3.30%" not in md and "| momentum | -3.30% | 5.00% |" in md
    assert "<td>ridge</td>\n      <td>1.50%</td>" in html
    # No per-bar series were passed for them: the report says so instead of hiding them.
    assert set(data.missing_series) == {"buy_and_hold", "momentum", "ridge"}
    assert "momentum is in the tables but not in the charts" in md


def test_sharpe_differences_are_shown_per_baseline(rendered):
    data, html, md = rendered
    table = comparison_table(data).set_index("Baseline")
    assert list(table.index) == ["buy_and_hold", "momentum", "ridge"]
    momentum = table.loc["momentum"]
    assert momentum["Model − baseline Sharpe"] == "0.78"
    assert momentum["90% interval"] == "[0.05, 1.61]"
    assert (momentum["p"], momentum["p (Holm)"], momentum["Significant"]) == ("0.01", "0.04", "yes")
    assert momentum["P(model Sharpe > baseline)"] == "0.71" and momentum["Bars"] == "120"
    # ridge has no paired entry: the difference of the headline Sharpes, no interval.
    ridge = table.loc["ridge"]
    assert ridge["Model − baseline Sharpe"] == f"{data.model.metrics['sharpe'] - 0.12:.2f}"
    assert ridge["90% interval"] == "—" and ridge["P(model Sharpe > baseline)"] == "0.58"
    assert table.loc["buy_and_hold", "Holm-adjusted interval"] == "—"
    assert (
        "| momentum | -0.27 | 0.78 | [0.05, 1.61] | [-0.20, 1.90] | 0.01 | 0.04 | yes | 0.71 | 120 |"
        in md
    )
    assert "Holm" in html and "[0.05, 1.61]" in html


def test_wide_tables_scroll_instead_of_cutting_columns(rendered):
    _, html, _ = rendered
    assert ".scroll { overflow-x: auto" in html
    assert html.count("<table") == html.count('<div class="scroll"><table')
    assert html.count("<table") >= 4


def test_in_sample_scoring_is_in_the_title(known):
    frame, per_split, summary, _ = known
    everything = {**summary, "sample": {**summary["sample"], "scored": "all", "n_left_out": 0}}
    wf_summary, _, _ = split_summary(everything)
    data = build_report_data(
        frame, cost_bps=5.0, walkforward=per_split, walkforward_summary=wf_summary
    )
    assert data.title.endswith("— includes in-sample bars")
    warn = [t for level, t in honest_notes(data) if level == "warn"]
    assert any(
        "all bars 2021-01-04 .. 2021-11-05, 1,000 bars — includes in-sample" in t for t in warn
    )
    # An older summary without the sample block renders, and says what it cannot know.
    old = {k: v for k, v in summary.items() if k != "sample"}
    old["bootstrap"] = {k: v for k, v in old["bootstrap"].items() if k != "sharpe_difference"}
    wf_summary, _, p_beat = split_summary(old)
    data = build_report_data(
        frame, cost_bps=5.0, walkforward=per_split, walkforward_summary=wf_summary, p_beat=p_beat
    )
    assert "includes in-sample" not in data.title
    assert any("does not record which bars" in t for _, t in honest_notes(data))
    assert comparison_table(data).set_index("Baseline").loc["momentum", "p"] == "—"


def test_a_cost_other_than_the_summarys_is_refused(known):
    frame, per_split, summary, _ = known
    with pytest.raises(ValueError, match=r"scored every strategy at 5 bps.*drop --cost-bps"):
        build_report_data(frame, cost_bps=7.5, walkforward=per_split, walkforward_summary=summary)


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """A real walk-forward of the predictions, written as `plus-ultra walkforward` does."""
    folder = tmp_path_factory.mktemp("walked")
    frame = _predictions(seed=5)
    frame.to_parquet(folder / "predictions.parquet")
    cfg = EvaluationConfig(
        train_window=60,
        test_window=50,
        cost_bps=4.0,
        baselines=["buy_and_hold", "momentum", "mean_reversion"],
        bootstrap_reps=50,
    )
    result = WalkForwardBacktester.from_config(cfg).run(frame, config=cfg)
    write_walkforward(result, folder / "per_split.parquet", folder / "summary.json")
    return folder, cfg, result


def test_report_from_walkforward_files_matches_the_summary(walked):
    folder, cfg, result = walked
    data = report_data_from_files(
        folder / "predictions.parquet",
        evaluation=cfg.model_copy(update={"cost_bps": 0.0}),  # the summary's cost wins
        walkforward=folder / "per_split.parquet",
        summary=folder / "summary.json",
    )
    assert data.cost_bps == 4.0 and not data.warnings and not data.missing_series
    stitched = result.summary.strategies
    n = stitched["model"].stitched["n_periods"]
    assert data.sample.n_bars == n == len(result.returns["model"].dropna())
    shown = headline_table(data).set_index("Strategy")
    for name, stats in stitched.items():
        assert shown.loc[name, "Periods"] == f"{n:,}"
        assert shown.loc[name, "Sharpe"].startswith(f"{stats.stitched['sharpe']:.2f}")
    # Every strategy's per-bar series is in the charts, equal to the walk-forward's own.
    curves = equity_curves(data)
    assert list(curves.columns) == [*stitched, "benchmark"]
    for name in stitched:
        walked_returns = result.returns[name].dropna()
        np.testing.assert_allclose(curves[name], np.cumprod(1 + walked_returns), rtol=1e-12)
    assert drawdowns(data)["momentum"].min() == pytest.approx(
        stitched["momentum"].stitched["max_drawdown"]
    )


def test_regime_labels_from_the_database_or_why_not(walked, tmp_path):
    folder, cfg, _ = walked
    args = {
        "evaluation": cfg,
        "walkforward": folder / "per_split.parquet",
        "summary": folder / "summary.json",
    }
    none = report_data_from_files(folder / "predictions.parquet", **args)
    assert none.regime_metrics is None
    assert "no 'regime' column" in none.regime_note
    assert "no database was given" in none.regime_note

    # `data build --regime-labels` on the symbols' database fills the section.
    db = write_fixture(
        tmp_path / "m.db",
        ["AAA", "BBB"],
        rows=N_BARS,
        freq="1D",
        alt_features=0,
        start="2021-01-04",
    )
    empty = report_data_from_files(
        folder / "predictions.parquet", data=DataConfig(sqlite_path=db, cache=False), **args
    )
    assert f"plus-ultra data build {db} --regime-labels" in empty.regime_note
    build_database(DataConfig(sqlite_path=db, cache=False), regimes=True)
    data = report_data_from_files(
        folder / "predictions.parquet", data=DataConfig(sqlite_path=db, cache=False), **args
    )
    table = data.regime_metrics
    assert set(table["labeller"]) >= {"volatility"} and set(table["strategy"]) == {"model"}
    # By hand: the model's net return per row, labelled by the database, mean per bar.
    from market_nn_plus_ultra.data.regimes import read_regimes

    labels = read_regimes(db)["volatility"].rename("label").reset_index()
    labels["timestamp"] = pd.to_datetime(labels["timestamp"], utc=True)
    rows = data.positions.assign(net=data.model.net_by_row)
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True)
    joined = rows.merge(labels, on=["timestamp", "symbol"]).dropna(subset=["net", "label"])
    for regime, group in joined.groupby("label"):
        per_bar = group.groupby("timestamp")["net"].mean().to_numpy()
        got = table[(table["labeller"] == "volatility") & (table["regime"] == regime)]
        assert int(got["n_periods"].iloc[0]) == len(per_bar)
        assert got["sharpe"].iloc[0] == pytest.approx(sharpe_ratio(per_bar, 252.0), nan_ok=True)
