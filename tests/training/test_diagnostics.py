"""Training diagnostics: estimators against hand-computed values; parquet and warnings in a run."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.training.diagnostics import (
    expected_calibration_error,
    noise_scale_terms,
    quantile_coverage,
)
from market_nn_plus_ultra.training.train import train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("diag"), rows=300)


def test_ece_by_hand():
    probs = np.array([[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
    labels = np.array([2, 0, 0, 1])
    # bins of 0.1: conf 0.8 → bin 7 (hit), 0.7 → bin 6 (miss), 0.6 → bin 5 (hit), 0.4 → bin 3 (miss)
    expected = (abs(1 - 0.8) + abs(0 - 0.7) + abs(1 - 0.6) + abs(0 - 0.4)) / 4
    assert expected_calibration_error(probs, labels, 10) == pytest.approx(expected)
    # two samples sharing a bin: |mean acc − mean conf| weighted by 2/N
    probs2 = np.array([[0.0, 0.25, 0.75], [0.0, 0.28, 0.72]])
    assert expected_calibration_error(probs2, np.array([2, 0]), 10) == pytest.approx(
        abs(0.5 - 0.735)
    )
    assert math.isnan(expected_calibration_error(np.empty((0, 3)), np.empty(0, dtype=int)))


def test_quantile_coverage_by_hand():
    realised = np.array([[-2.0], [0.0], [0.5], [3.0]])  # (N=4, H=1)
    q = np.broadcast_to(np.array([-1.0, 0.0, 1.0]), (4, 1, 3))  # q05, q50, q95
    cover = quantile_coverage(q, realised, [0.05, 0.5, 0.95])
    assert cover["q05"] == 0.25 and cover["q50"] == 0.5 and cover["q95"] == 0.75
    assert cover["band90"] == 0.5  # 0.0 and 0.5 lie inside [-1, 1]
    assert cover["error"] == pytest.approx((0.2 + 0.0 + 0.2) / 3)


def test_noise_scale_terms_recover_known_gradient_and_trace():
    # E|G_b|² = |G|² + tr(Σ)/b: with |G|² = 4, tr(Σ) = 64 the two batch sizes give exact values
    g2, trace = 4.0, 64.0
    small, big = g2 + trace / 8, g2 + trace / 16
    est_g2, est_trace = noise_scale_terms(small, big, 8, 16)
    assert est_g2 == pytest.approx(4.0) and est_trace == pytest.approx(64.0)
    assert est_trace / est_g2 == pytest.approx(16.0)  # B_simple


def test_noise_scale_estimate_on_sampled_gradients():
    # per-example gradients g_i = G + noise: the estimator over many half-batch pairs
    rng = np.random.default_rng(0)
    G, sigma, b, d = np.array([1.0, -2.0, 0.5]), 0.7, 32, 3
    est = []
    for _ in range(400):
        per = G + sigma * rng.standard_normal((2 * b, d))
        h1, h2 = per[:b].mean(0), per[b:].mean(0)
        small = (h1 @ h1 + h2 @ h2) / 2
        big = ((h1 + h2) / 2) @ ((h1 + h2) / 2)
        est.append(noise_scale_terms(small, big, b, 2 * b))
    g2, trace = np.mean(est, axis=0)
    assert g2 == pytest.approx(G @ G, rel=0.05)
    assert trace == pytest.approx(d * sigma**2, rel=0.1)


def test_diagnostics_parquet_and_threshold_warnings(db, tmp_path, caplog):
    cfg = tiny_config(
        db,
        tmp_path / "run",
        "model.head=quantile_dirichlet",
        "training.max_epochs=2",
        "diagnostics.interval=2",
        "diagnostics.profile=true",
        "diagnostics.noise_threshold=0.001",  # any measurable noise is "too much"
        "diagnostics.bias_threshold=0.0001",
    )
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.training.diagnostics"):
        result = train(cfg)
    frame = pd.read_parquet(result.checkpoint_dir / "diagnostics.parquet")
    steps = frame[frame["kind"] == "step"]
    val = frame[frame["kind"] == "validation"]
    per_epoch = -(-result.global_step // 2)
    assert len(steps) == per_epoch and steps["step"].tolist() == list(
        range(1, result.global_step + 1, 2)
    )
    cols = ["loss", "grad_norm", "grad_noise_scale", "noise_ratio", "samples_per_s"]
    cols += ["data_time_s", "compute_time_s", "data_fraction"]
    assert np.isfinite(steps[cols].to_numpy(dtype=float)).all()
    assert (steps["grad_norm"] > 0).all() and (steps["samples_per_s"] > 0).all()
    assert not steps["loss_spike"].any() and not steps["grad_norm_spike"].any()
    assert val["epoch"].tolist() == [0, 1]
    vcols = ["ece", "quantile_coverage_error", "coverage_q05", "coverage_q50", "coverage_q95"]
    vcols += ["coverage_band90", "ece_drift", "quantile_coverage_error_drift"]
    values = val[vcols].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert ((values[:, :6] >= 0) & (values[:, :6] <= 1)).all()
    assert val["ece_drift"].iloc[0] == 0.0
    assert (steps["noise_ratio"] > 0.001).all()

    events = [getattr(r, "fields", {}) for r in caplog.records]
    noise = [f for f in events if f.get("event") == "grad_noise_high"]
    assert len(noise) == 1  # on crossing only, though every record is above the threshold
    assert noise[0]["ratio"] > 0.001 and noise[0]["threshold"] == 0.001
    calibration = [f for f in events if f.get("event") == "calibration_drift"]
    assert sorted((f["epoch"], f["metric"]) for f in calibration) == [
        (0, "ece"),
        (0, "quantile_coverage_error"),
        (1, "ece"),
        (1, "quantile_coverage_error"),
    ]
    assert not [f for f in events if f.get("event", "").endswith("_spike")]


def test_exploding_learning_rate_warns(db, tmp_path, caplog):
    cfg = tiny_config(
        db,
        tmp_path / "boom",
        "training.learning_rate=1000.0",
        "training.gradient_clip=null",
        "training.max_steps=8",
        "windows.val_fraction=0",  # a diverged model has NaN positions: nothing to score
        "windows.test_fraction=0",
        "diagnostics.interval=1",
    )
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.training.diagnostics"):
        train(cfg)
    spikes = [
        r for r in caplog.records if getattr(r, "fields", {}).get("event", "").endswith("_spike")
    ]
    assert spikes, [r.getMessage() for r in caplog.records]
    assert "error_threshold" in spikes[0].getMessage()
    frame = pd.read_parquet(tmp_path / "boom" / "diagnostics.parquet")
    steps = frame[frame["kind"] == "step"]
    assert (steps["loss_spike"] | steps["grad_norm_spike"]).any()


def test_train_command_maps_diagnostics_flags(db, tmp_path):
    from typer.testing import CliRunner

    from market_nn_plus_ultra.cli.main import app
    from market_nn_plus_ultra.config import load_config
    from tests.training._train_cases import TINY

    def run(name: str, *flags: str):
        out = tmp_path / name
        sets = [f"data.sqlite_path={db}", "data.cache=false", f"training.checkpoint_dir={out}"]
        args = ["train", *flags]
        for item in [*sets, *TINY, "training.max_steps=3"]:
            args += ["--set", item]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return out, result.output

    out, output = run(
        "on",
        "--diagnostics-interval",
        "1",
        "--diagnostics-profile",
        "--diagnostics-noise-threshold",
        "50",
        "--diagnostics-bias-threshold",
        "0.2",
        "--diagnostics-error-threshold",
        "7",
    )
    d = load_config(out / "config.yaml").diagnostics
    assert (d.enabled, d.interval, d.profile) == (True, 1, True)
    assert (d.noise_threshold, d.bias_threshold, d.error_threshold) == (50, 0.2, 7)
    frame = pd.read_parquet(out / "diagnostics.parquet")
    assert (frame["kind"] == "step").sum() == 3 and "data_fraction" in frame
    assert "diagnostics.pa" in output  # printed where it went (rich may wrap the path)
    off, _ = run("off", "--disable-diagnostics")
    assert not load_config(off / "config.yaml").diagnostics.enabled
    assert not (off / "diagnostics.parquet").exists()


def test_resumed_run_continues_the_file_and_estimates(db, tmp_path):
    def run(steps: int, resume=None):
        cfg = tiny_config(
            db,
            tmp_path / "run",
            f"training.max_steps={steps}",
            "training.max_epochs=5",
            "diagnostics.interval=1",
            "windows.val_fraction=0",
            "windows.test_fraction=0",
        )
        train(cfg, resume=resume)
        return pd.read_parquet(tmp_path / "run" / "diagnostics.parquet")

    first = run(3)
    both = run(6, resume=tmp_path / "run" / "last.ckpt")
    assert both["step"].tolist() == [1, 2, 3, 4, 5, 6]
    pd.testing.assert_frame_equal(both.iloc[:3][first.columns], first)
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "TrainingDiagnostics" in k]
    assert state["history"]["loss"] == pytest.approx(both["loss"].tolist())
