"""Report data and rendering: numbers equal the backtest's, every section is present."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.report import (
    build_report_data,
    flatten_summary,
    split_summary,
    write_report,
)
from market_nn_plus_ultra.evaluation.report_charts import (
    CHARTS,
    drawdowns,
    equity_curves,
    monthly_returns,
    resolve_window,
    rolling_sharpe,
)
from market_nn_plus_ultra.evaluation.report_html import SECTIONS
from market_nn_plus_ultra.evaluation.report_notes import honest_notes
from market_nn_plus_ultra.evaluation.report_tables import (
    headline_table,
    regime_table,
    trade_table,
)


def _predictions(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Three symbols of business-day bars with a noisy sign signal and a benchmark."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2021-01-01", periods=n, freq="B", tz="UTC")
    frame = pd.MultiIndex.from_product([ts, ["AAA", "BBB", "CCC"]], names=["timestamp", "symbol"])
    frame = frame.to_frame(index=False)
    frame["realised_return"] = rng.normal(2e-4, 0.01, len(frame))
    frame["position"] = np.sign(frame["realised_return"] + rng.normal(0, 0.02, len(frame)))
    frame["benchmark_return"] = rng.normal(1e-4, 0.008, n).repeat(3)
    return frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _predictions()


@pytest.fixture(scope="module")
def written(tmp_path_factory, frame):
    """One report with every optional input, rendered once for the rendering tests."""
    ts = frame["timestamp"].drop_duplicates()
    regimes = pd.Series(np.where(np.arange(len(ts)) < 100, "calm", "stress"), index=ts.to_numpy())
    intervals = pd.DataFrame(
        {
            "metric": ["sharpe", "sharpe"],
            "strategy": ["model", "buy_and_hold"],
            "low": [0.5, -1.0],
            # The model's point is its Sharpe on these bars; buy_and_hold's is not.
            "point": [backtest(frame, cost_bps=5.0).metrics["sharpe"], 0.1],
            "high": [2.0, 1.1],
            "level": [0.9, 0.9],
        }
    )
    breaches = pd.DataFrame(
        {
            "timestamp": ts.iloc[[3, 5]].to_numpy(),
            "symbol": ["AAA", "BBB"],
            "rule": ["max_position", "max_position"],
            "before": [1.0, -1.0],
            "after": [0.8, -0.8],
            "detail": ["|position| > 0.8", "|position| > 0.8"],
        }
    )
    walk = pd.DataFrame({"split": [0, 1], "sharpe": [0.7, 1.1], "n_periods": [120, 120]})
    data = build_report_data(
        frame,
        cost_bps=5.0,
        walkforward=walk,
        walkforward_summary={"mean_sharpe": 0.9},
        intervals=intervals,
        p_beat={"buy_and_hold": 0.83},
        breaches=breaches,
        regimes=regimes,
        provenance={"database": "market.db", "row counts": {"series": 900}},
        config={"data": {"sqlite_path": "market.db"}},
    )
    out = tmp_path_factory.mktemp("report") / "latest.html"
    paths = write_report(data, out, rolling_window=20)
    return data, paths


def test_model_metrics_equal_backtest(frame):
    data = build_report_data(frame, cost_bps=5.0)
    reference = backtest(frame, cost_bps=5.0)
    for key, value in reference.metrics.items():
        assert data.model.metrics[key] == pytest.approx(value, nan_ok=True), key
    pd.testing.assert_series_equal(data.model.returns, reference.returns)


def test_buy_and_hold_and_benchmark_by_hand(frame):
    data = build_report_data(frame, cost_bps=10.0)
    hold = data.baselines["buy_and_hold"].returns
    by_hand = frame.groupby("timestamp")["realised_return"].mean()
    by_hand.iloc[0] -= 10.0 / 1e4  # every symbol buys 1.0 on the first bar
    np.testing.assert_allclose(hold.to_numpy(), by_hand.to_numpy(), rtol=0, atol=1e-15)
    bench = frame.groupby("timestamp")["benchmark_return"].first()
    np.testing.assert_allclose(data.benchmark.to_numpy(), bench.to_numpy())
    total = float(np.prod(1 + bench) - 1)
    assert data.metrics()["benchmark"]["total_return"] == pytest.approx(total, rel=1e-12)


def test_headline_table_shows_every_strategy_and_intervals(written):
    data, _ = written
    table = headline_table(data)
    assert list(table["Strategy"]) == ["model", "buy_and_hold", "benchmark"]
    sharpe = table.set_index("Strategy").loc["model", "Sharpe"]
    assert sharpe == f"{data.model.metrics['sharpe']:.2f} [0.50, 2.00]"
    total = table.set_index("Strategy").loc["model", "Total return"]
    assert total == f"{100 * data.model.metrics['total_return']:.2f}%"
    # An interval whose estimate is not the headline's value was drawn on other bars:
    # it is left out of the cell and the report says so.
    hold = table.set_index("Strategy").loc["buy_and_hold", "Sharpe"]
    assert hold == f"{data.baselines['buy_and_hold'].metrics['sharpe']:.2f}"
    warnings = [t for level, t in honest_notes(data) if level == "warn"]
    assert any("sharpe interval of buy_and_hold was drawn on other bars" in t for t in warnings)


def test_trade_analytics_hand_computed():
    ts = pd.date_range("2022-01-03", periods=6, freq="B", tz="UTC")
    frame = pd.DataFrame(
        {
            "timestamp": np.tile(ts, 2),
            "symbol": ["A"] * 6 + ["B"] * 6,
            # A: 0, 1, 1, 1, -1, -1 → trades at bars 1 and 4; held runs 3 and 2 bars.
            # B: 1, 1, 0, 0, 1, 1 → trades at bars 0, 2, 4; held runs 2 and 2 bars.
            "position": [0, 1, 1, 1, -1, -1, 1, 1, 0, 0, 1, 1],
            "realised_return": [0.01, 0.02, -0.01, 0.03, -0.02, np.nan] * 2,
        }
    )
    data = build_report_data(frame, cost_bps=20.0)
    row = trade_table(data).set_index("Strategy").loc["model"]
    assert row["Trades"] == "5"
    assert row["Avg holding (bars)"] == f"{(3 + 2 + 2 + 2) / 4:.1f}"
    # Cost paid: |Δpos| summed per bar, averaged over 2 symbols, × 20 bps (last bar unknown).
    trades_per_bar = np.array([1, 1, 1, 0, 3]) / 2
    assert row["Cost paid"] == f"{100 * trades_per_bar.sum() * 20e-4:.2f}%"


def test_chart_series_by_hand(written):
    data, _ = written
    r = data.model.returns.dropna()
    wealth = np.cumprod(1 + r.to_numpy())
    np.testing.assert_allclose(equity_curves(data)["model"].to_numpy(), wealth)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    np.testing.assert_allclose(drawdowns(data)["model"].to_numpy(), wealth / peak - 1)
    assert drawdowns(data)["model"].min() == pytest.approx(data.model.metrics["max_drawdown"])
    roll = rolling_sharpe(data, 20)["model"].to_numpy()
    last = r.to_numpy()[-20:]
    assert roll[-1] == pytest.approx(last.mean() / last.std(ddof=1) * math.sqrt(252))
    assert np.isnan(roll[:19]).all()
    months = monthly_returns(data)
    jan = r[(r.index.year == 2021) & (r.index.month == 1)]
    assert months.loc[2021, 1] == pytest.approx(float(np.prod(1 + jan) - 1))
    assert resolve_window(data, None) == 63


def test_regime_attribution_by_hand(written):
    data, _ = written
    table = regime_table(data).set_index("Regime")
    r = data.model.returns.dropna()
    calm = r.iloc[:100]
    assert table.loc["calm", "Bars"] == "100"
    assert table.loc["calm", "Model return"] == f"{100 * (np.prod(1 + calm) - 1):.2f}%"
    ref = calm.mean() / calm.std(ddof=1) * math.sqrt(252)
    assert table.loc["calm", "Model Sharpe"] == f"{ref:.2f}"


def test_honest_notes_warn_on_small_samples(frame):
    small = frame[frame["timestamp"] < frame["timestamp"].unique()[60]]
    notes = honest_notes(build_report_data(small, cost_bps=0.0))
    warnings = [text for level, text in notes if level == "warn"]
    assert any("Small sample (60 periods" in w for w in warnings)
    assert any("Costs are zero" in w for w in warnings)
    big = honest_notes(build_report_data(frame, cost_bps=5.0))
    assert not [t for level, t in big if level == "warn"]
    assert any("net of 5 bps" in t for _, t in big)


def test_html_has_every_section_and_a_plotly_div_per_chart(written):
    data, paths = written
    html = paths.html.read_text(encoding="utf-8")
    for section, heading in SECTIONS:
        assert f'<section id="{section}">' in html, section
        assert heading in html
    for chart, _ in CHARTS:
        assert html.count(f'id="chart-{chart}"') == 1, chart
    assert html.count('class="plotly-graph-div"') == len(CHARTS)
    # Works offline: no external script or stylesheet, plotly.js itself inlined.
    assert not re.findall(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", html)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined
    assert "stationary-bootstrap" in html and "P(model Sharpe &gt; baseline)" in html
    # P(beat) in the model-against-baseline table, beside the difference of the Sharpes.
    diff = data.model.metrics["sharpe"] - data.baselines["buy_and_hold"].metrics["sharpe"]
    assert "<td>buy_and_hold</td>\n      <td>" in html and f"<td>{diff:.2f}</td>" in html
    assert "<td>0.83</td>" in html
    assert "max_position" in html and "mean_sharpe" in html and "<details>" in html


def test_markdown_references_pngs_that_exist(written):
    _, paths = written
    md = paths.markdown.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(CHARTS)
    for link in links:
        png = paths.markdown.parent / link
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    for heading in ("Headline metrics", "Regime attribution", "Trade analytics", "Walk-forward"):
        assert f"## {heading}" in md
    assert "| model |" in md and "```yaml" in md


def test_rewrite_replaces_the_report_atomically(written, frame):
    data, paths = written
    stale = paths.images / "stale.png"
    stale.write_bytes(b"old")
    write_report(data, paths.html, rolling_window=20)
    assert not stale.exists()
    leftovers = [p.name for p in paths.html.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_user_errors_name_the_fix(frame, tmp_path):
    with pytest.raises(ValueError, match="realised_return"):
        build_report_data(frame.drop(columns="realised_return"), cost_bps=1.0)
    with pytest.raises(ValueError, match=r"intervals: missing column\(s\) \['level'\]"):
        build_report_data(
            frame,
            cost_bps=1.0,
            intervals=pd.DataFrame(columns=["metric"]).assign(
                strategy=[], low=[], point=[], high=[]
            ),
        )
    with pytest.raises(ValueError, match="reserved"):
        data = build_report_data(frame, cost_bps=1.0)
        build_report_data(frame, cost_bps=1.0, baselines={"model": data.model})
    with pytest.raises(ValueError, match="regimes: no label matches"):
        build_report_data(frame, cost_bps=1.0, regimes=pd.Series(["x"], index=["1990-01-01"]))
    with pytest.raises(ValueError, match=r"expected a \.html path"):
        write_report(build_report_data(frame, cost_bps=1.0), tmp_path / "report.pdf")


def test_split_summary_reads_the_walkforward_bootstrap_block():
    raw = {
        "n_splits": 3,
        "strategies": {"model": {"split_mean": {"sharpe": 0.4}}},
        "bootstrap": {
            "level": 0.9,
            "reps": 500,
            "model": {"sharpe": {"estimate": 0.5, "low": 0.1, "high": 0.9}},
            "prob_model_sharpe_exceeds": {"momentum": 0.7, "ridge": None},
        },
        "p_beat": None,
    }
    summary, intervals, p_beat = split_summary(raw)
    assert p_beat == {"momentum": 0.7}
    assert intervals.to_dict("records") == [
        {
            "metric": "sharpe",
            "strategy": "model",
            "low": 0.1,
            "point": 0.5,
            "high": 0.9,
            "level": 0.9,
        }
    ]
    assert flatten_summary(summary) == {
        "n_splits": 3,
        "strategies.model.split_mean.sharpe": 0.4,
        "bootstrap.level": 0.9,
        "bootstrap.reps": 500,
    }
    plain = {
        "intervals": [
            {"metric": "cagr", "strategy": "x", "low": 0, "point": 1, "high": 2, "level": 0.5}
        ]
    }
    _, intervals, p_beat = split_summary(plain)
    assert list(intervals["strategy"]) == ["x"] and p_beat is None
