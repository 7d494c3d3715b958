"""Feature drift: the training reference (bins, shares, quantiles), PSI, KS, the regime
flag, the rolling window, and the reference of runs trained before the file existed."""

from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from market_nn_plus_ultra.config import ServiceConfig, load_config, save_config
from market_nn_plus_ultra.service.drift import DriftMonitor, population_stability_index
from market_nn_plus_ultra.training import MarketDataModule
from market_nn_plus_ultra.training.drift_reference import (
    DRIFT_REFERENCE_FILE,
    fit_drift_reference,
    load_drift_reference,
    save_drift_reference,
)
from market_nn_plus_ultra.windows import MarketTensors
from tests.service._service_cases import ready_app, service_config


def _tensors(values: np.ndarray, mask: np.ndarray, names: list[str]) -> MarketTensors:
    """One-symbol tensors holding ``values`` ``(T, F)``."""
    T = len(values)
    return MarketTensors(
        inputs=values[:, None, :].astype(np.float32),
        targets=np.zeros((T, 1, 1), dtype=np.float32),
        mask=mask[:, None],
        target_mask=np.ones((T, 1, 1), dtype=bool),
        present=np.ones((T, 1), dtype=bool),
        timestamps=pd.date_range("2021-01-01", periods=T, freq="D", tz="UTC"),
        symbols=["AAA"],
        feature_names=names,
    )


def test_the_reference_reads_the_valid_training_cells_only():
    a = np.arange(1.0, 11.0)  # rows 0..9 hold 1..10
    a[:2] = 1000.0  # outside the training rows: never read
    b = np.full(10, 2.0)  # a constant feature: one edge, every value in its first bin
    mask = np.ones(10, dtype=bool)
    mask[5] = False  # a warm-up / missing cell
    ref = fit_drift_reference(
        _tensors(np.column_stack([a, b]), mask, ["a", "b"]), range(2, 10), bins=2, quantiles=1000
    )
    # training values of a: 3 4 5 7 8 9 10; the median 7 splits them 4 | 3 (x <= 7 | x > 7)
    assert ref.edges[0].tolist() == [7.0]
    np.testing.assert_allclose(ref.expected[0], [4 / 7, 3 / 7])
    assert ref.edges[1].tolist() == [2.0] and ref.expected[1].tolist() == [1.0, 0.0]
    assert ref.cells == 7 and ref.rows == (2, 10) and ref.quantiles.shape == (2, 7)
    kept = np.array([3, 4, 5, 7, 8, 9, 10.0])
    np.testing.assert_allclose(ref.quantiles[0], np.quantile(kept, (np.arange(7) + 0.5) / 7))


def test_psi_by_hand():
    # (0.5 - 0.25) ln 2 + (0.5 - 0.75) ln(2/3)
    assert population_stability_index([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    # an empty training bin counts as 1e-4: (0.5 - 1) ln 0.5 + (0.5 - 1e-4) ln(0.5 / 1e-4)
    expected = -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert population_stability_index([0.5, 0.5], [1.0, 0.0]) == pytest.approx(expected)
    assert population_stability_index([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


@pytest.fixture(scope="module")
def normal_reference():
    rng = np.random.default_rng(7)
    values = rng.standard_normal((4000, 3))
    ref = fit_drift_reference(
        _tensors(values, np.ones(4000, dtype=bool), ["x", "y", "z"]),
        range(0, 4000),
        bins=10,
        quantiles=500,
    )
    return ref


def _monitor(ref, **settings) -> DriftMonitor:
    monitor = DriftMonitor(ServiceConfig(**settings))
    monitor.set_reference(ref, "checkpoint")
    return monitor


def _shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin shares with right-closed bins, by pandas (an independent binning)."""
    cut = pd.cut(x, [-np.inf, *edges, np.inf], right=True)
    return pd.Series(cut).value_counts(sort=False).to_numpy() / len(x)


def test_psi_and_ks_of_the_window_against_the_reference(normal_reference):
    ref = normal_reference
    rng = np.random.default_rng(11)
    live = rng.standard_normal((300, 3))
    live[:, 1] += 1.0  # y shifts by one standard deviation
    live[:, 2] *= 3.0  # z widens
    monitor = _monitor(ref, drift_window=300, drift_min_rows=50)
    monitor.observe(live)
    report = monitor.report()
    assert report.available and report.rows == 300 and report.source == "checkpoint"
    for f, d in enumerate(report.features):
        expected = population_stability_index(_shares(live[:, f], ref.edges[f]), ref.expected[f])
        assert d.psi == pytest.approx(expected, rel=1e-12)
        assert d.ks == pytest.approx(ks_2samp(live[:, f], ref.quantiles[f]).statistic, rel=1e-12)
    psi = {d.feature: d.psi for d in report.features}
    assert psi["x"] < 0.1 and psi["y"] > 0.25 and psi["z"] > 0.25
    assert report.drifted == ["y", "z"] and report.regime_shift  # 2 of 3 >= 30%
    ks = {d.feature: d.ks for d in report.features}
    # a one-sigma shift: KS near Φ(0.5) - Φ(-0.5) = 0.383
    assert ks["x"] < 0.1 and ks["y"] == pytest.approx(0.383, abs=0.06)


def test_the_window_keeps_the_newest_rows_and_needs_min_rows(normal_reference):
    monitor = _monitor(normal_reference, drift_window=20, drift_min_rows=10)
    first = monitor.report()
    assert not first.available and "0 served rows so far" in first.reason
    rows = np.arange(75.0).reshape(25, 3) / 25
    monitor.observe(rows[:7])
    assert monitor.report().rows == 7 and not monitor.report().available
    monitor.observe(rows[7:])
    report = monitor.report()
    assert report.available and report.rows == 20
    newest = rows[-20:]  # the ring buffer holds exactly the 20 newest rows
    ks = ks_2samp(newest[:, 0], normal_reference.quantiles[0]).statistic
    assert report.features[0].ks == pytest.approx(ks)


def test_regime_shift_is_logged_when_it_starts_and_ends(normal_reference, caplog):
    monitor = _monitor(
        normal_reference, drift_window=200, drift_min_rows=50, regime_shift_share=0.6
    )
    rng = np.random.default_rng(3)
    with caplog.at_level(logging.INFO, logger="market_nn_plus_ultra.service"):
        monitor.observe(rng.standard_normal((200, 3)) + 2.0)
        assert monitor.report().regime_shift
        assert monitor.report().regime_shift  # still shifted: logged once
        monitor.observe(rng.standard_normal((200, 3)))
        assert not monitor.report().regime_shift
    events = [r.fields["event"] for r in caplog.records if hasattr(r, "fields")]
    assert events == ["regime_shift", "regime_shift_cleared"]
    shifted = next(
        r for r in caplog.records if getattr(r, "fields", {}).get("event") == "regime_shift"
    )
    assert shifted.levelno == logging.WARNING and shifted.fields["drifted"] == ["x", "y", "z"]


def test_no_reference_reads_as_unavailable_with_the_reason():
    monitor = DriftMonitor(ServiceConfig())
    monitor.set_reference(None, None, "no drift_reference.json and no training split")
    monitor.observe(np.ones((5, 3)))
    report = monitor.report()
    assert not report.available and report.reason.startswith("no drift_reference.json")


def test_the_reference_file_round_trips_and_refuses_foreign_files(normal_reference, tmp_path):
    path = save_drift_reference(normal_reference, tmp_path / DRIFT_REFERENCE_FILE)
    back = load_drift_reference(path)
    assert back.features == normal_reference.features and back.cells == 4000
    for a, b in zip(back.edges, normal_reference.edges, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8)
    np.testing.assert_allclose(back.quantiles, normal_reference.quantiles, rtol=1e-8)
    (tmp_path / "other.json").write_text('{"format": "something_else"}')
    with pytest.raises(ValueError, match="not a drift reference"):
        load_drift_reference(tmp_path / "other.json")


def test_train_saves_the_reference_of_its_training_split(run_dir):
    ref = load_drift_reference(run_dir / DRIFT_REFERENCE_FILE)
    dm = MarketDataModule(load_config(run_dir / "config.yaml"))
    dm.setup()
    rows = dm.splits["train"].input_rows
    assert ref.features == dm.feature_columns and ref.rows == (rows.start, rows.stop)
    mask = dm.tensors.mask[rows.start : rows.stop]  # (R, S)
    values = dm.tensors.inputs[rows.start : rows.stop][mask].astype(np.float64)  # (N, F)
    assert ref.cells == len(values)
    f = ref.features.index("rsi_14")
    edges = np.unique(np.quantile(values[:, f], np.arange(1, 10) / 10))
    np.testing.assert_allclose(ref.edges[f], edges, rtol=1e-7)
    np.testing.assert_allclose(ref.expected[f], _shares(values[:, f], ref.edges[f]), atol=1e-8)


def test_an_older_run_is_refitted_once_or_reads_unavailable(market_db, run_dir, tmp_path, caplog):
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    (old / DRIFT_REFERENCE_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.service"):
        app = ready_app(service_config(market_db, tmp_path / "a"), old)
    report = app.state.service.drift.report()
    assert report.source == "training_split"
    assert any("fitting the drift bins once" in r.getMessage() for r in caplog.records)
    saved = load_drift_reference(run_dir / DRIFT_REFERENCE_FILE)
    refit = app.state.service.drift._reference
    for a, b in zip(refit.edges, saved.edges, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7)
    app.state.service.log.close()

    cfg = load_config(old / "config.yaml")
    cfg.data.sqlite_path = tmp_path / "moved.db"  # the run's database is gone
    save_config(cfg, old / "config.yaml")
    app = ready_app(service_config(market_db, tmp_path / "b"), old)
    report = app.state.service.drift.report()
    assert not report.available and report.source is None
    assert "has no drift_reference.json and its training split could not be read" in report.reason
    app.state.service.log.close()
