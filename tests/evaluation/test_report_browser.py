"""The HTML report rendered in headless Chromium: no console error, every chart drawn.

The report is built from a realistic run: a fixture database (validated), a momentum
signal as positions, SPY as the benchmark, volatility/trend regimes, four walk-forward
splits, stationary-bootstrap intervals and position-limit breaches. Set
``REPORT_SCREENSHOT=docs/images/report.png`` to refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.data import read_panel, validate_database
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.evaluation.backtest import backtest
from market_nn_plus_ultra.evaluation.metrics import annual_return, sharpe_ratio
from market_nn_plus_ultra.evaluation.report import build_report_data, write_report
from market_nn_plus_ultra.evaluation.report_charts import CHARTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it: make browser)"
)
# Chromium's own noise (no D-Bus, no GPU in a container) is not a page error.
_CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def _stationary_bootstrap(returns: np.ndarray, n: int, block: float, seed: int) -> np.ndarray:
    """Index matrix [n, T] of the stationary bootstrap (Politis & Romano 1994)."""
    rng = np.random.default_rng(seed)
    t = len(returns)
    new = rng.random((n, t)) < 1.0 / block
    new[:, 0] = True
    starts = rng.integers(0, t, (n, t))
    pos = np.broadcast_to(np.arange(t), (n, t))
    last_new = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    first = np.take_along_axis(starts, last_new, axis=1)
    return (first + pos - last_new) % t


def realistic_inputs(folder: Path) -> dict:
    """build_report_data keyword arguments from a fixture database and a momentum signal."""
    db = write_fixture(
        folder / "market.db", ["SPY", "QQQ", "AAPL", "MSFT"], rows=640, freq="1D", alt_features=0
    )
    panel = read_panel(db, cache=False, include_indicators=False)["close"].unstack("symbol")
    fwd = panel.pct_change(fill_method=None).shift(-1)
    vol = panel.pct_change(fill_method=None).rolling(20).std()
    momentum = panel.pct_change(20, fill_method=None) / (vol * np.sqrt(20))
    position = (momentum / 2).clip(-1, 1).round(1).fillna(0.0)
    frame = pd.DataFrame(
        {"position": position.stack(), "realised_return": fwd.stack(future_stack=True)}
    ).reset_index()
    frame = frame[frame["timestamp"] >= panel.index[40]]
    bench = fwd["SPY"].rename("benchmark_return")
    frame = frame.merge(bench, left_on="timestamp", right_index=True)
    spy_vol = panel["SPY"].pct_change(fill_method=None).rolling(40).std()
    trend = np.where(panel["SPY"] > panel["SPY"].rolling(60).mean(), "up", "down")
    calm = np.where(spy_vol <= spy_vol.expanding().median(), "calm", "volatile")
    regimes = pd.Series(np.char.add(np.char.add(calm.astype(str), " · "), trend), panel.index)

    model = backtest(frame, cost_bps=5.0)
    hold = backtest(frame.assign(position=1.0), cost_bps=5.0, benchmark_column=None)
    stamps = np.sort(frame["timestamp"].unique())
    splits = []
    for i, chunk in enumerate(np.array_split(stamps, 4)):
        m = backtest(frame[frame["timestamp"].isin(chunk)], cost_bps=5.0).metrics
        splits.append(
            {"split": i, "start": pd.Timestamp(chunk[0]), "end": pd.Timestamp(chunk[-1]), **m}
        )
    walk = pd.DataFrame(splits)[["split", "start", "end", "sharpe", "cagr", "max_drawdown"]]
    r_model, r_hold = model.returns.dropna().to_numpy(), hold.returns.dropna().to_numpy()
    idx = _stationary_bootstrap(r_model, 300, 10.0, seed=0)
    rows, sharpes = [], {}
    for name, r in (("model", r_model), ("buy_and_hold", r_hold)):
        boot = r[idx]
        sharpes[name] = boot.mean(1) / boot.std(1, ddof=1) * np.sqrt(252)
        cagr = np.prod(1 + boot, axis=1) ** (252 / boot.shape[1]) - 1
        for metric, draws, point in (
            ("sharpe", sharpes[name], sharpe_ratio(r)),
            ("cagr", cagr, annual_return(r)),
        ):
            lo, hi = np.quantile(draws, [0.05, 0.95])
            rows.append((metric, name, lo, point, hi, 0.9))
    big = frame[frame["position"].abs() >= 1.0]
    breaches = pd.DataFrame(
        {
            "timestamp": big["timestamp"],
            "symbol": big["symbol"],
            "rule": "max_position",
            "before": big["position"],
            "after": big["position"].clip(-0.9, 0.9),
            "detail": "|position| above the 0.9 limit",
        }
    )
    report = validate_database(db)
    return {
        "predictions": frame,
        "cost_bps": 5.0,
        "baselines": {"buy_and_hold": hold},
        "walkforward": walk,
        "walkforward_summary": {"mean_sharpe": walk["sharpe"].mean(), "splits": len(walk)},
        "intervals": pd.DataFrame(
            rows, columns=["metric", "strategy", "low", "point", "high", "level"]
        ),
        "p_beat": {"buy_and_hold": float(np.mean(sharpes["model"] > sharpes["buy_and_hold"]))},
        "breaches": breaches,
        "regimes": regimes,
        "provenance": {
            "database": str(db.name),
            "validation": report.summary(),
            "row counts": report.rows,
        },
        "config": {"evaluation": {"cost_bps": 5.0}, "data": {"sqlite_path": str(db.name)}},
    }


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]
    base += ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run(
        [*base, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _console_errors(log: str) -> list[str]:
    messages = [m.group(1) for m in _CONSOLE.finditer(log)]
    return [m for m in messages if re.search(r"error|uncaught|failed", m, re.IGNORECASE)]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    data = build_report_data(**realistic_inputs(folder))
    return write_report(data, folder / "report.html").html


def test_every_chart_renders_without_console_errors(report_html):
    """One Chromium run dumps the rendered DOM and takes the screenshot."""
    shot = report_html.parent / "shot.png"
    run = _chromium(
        f"--screenshot={shot}",
        "--window-size=1280,1700",
        "--dump-dom",
        report_html.as_uri(),
        cwd=report_html.parent,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    dom = run.stdout
    for chart, _ in CHARTS:
        start = dom.index(f'id="chart-{chart}"')
        end = dom.find('id="chart-', start + 1)
        assert 'class="main-svg"' in dom[start : end if end > 0 else None], chart
    assert dom.count('class="plotly-graph-div') == len(CHARTS)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a drawn page, not blank
    target = os.environ.get("REPORT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_console_errors_are_detected(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefinedAnywhere();</script></body></html>")
    run = _chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert any("notDefinedAnywhere" in e for e in _console_errors(run.stderr))
