"""Sweeps and the pretraining comparison on a tiny fixture: catalogue rows, values, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from market_nn_plus_ultra.config import Config, config_from_dict, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.models import build_model, count_parameters
from market_nn_plus_ultra.orchestration.catalogue import (
    CATALOGUE_COLUMNS,
    deflate_catalogue,
    deflate_rows,
    read_catalogue,
)
from market_nn_plus_ultra.orchestration.sweep import (
    expand_scenarios,
    parse_values,
    run_pretraining_comparison,
    run_sweep,
)

EULER = 0.5772156649015329  # the Euler–Mascheroni constant

#: A model and budget small enough that one run takes about a second on one CPU thread.
TINY = [
    "data.cache=false",
    "data.alternative_data=[]",
    "model.d_model=16",
    "model.depth=1",
    "model.n_heads=2",
    "model.ff_mult=2",
    "model.dropout=0.0",
    "model.dilations=[1]",
    "model.ssm_state_dim=4",
    "windows.window=8",
    "windows.horizon=1",
    "model.horizon=1",
    "training.batch_size=32",
    "training.max_epochs=1",
    "training.limit_train_batches=2",
    "training.num_workers=0",
    "training.warmup_steps=0",
    "training.progress_bar=false",
    "training.accelerator=cpu",
    "diagnostics.enabled=false",
    "tracking.tensorboard=false",
    "pretraining.max_steps=3",
    "pretraining.batch_size=32",
    "pretraining.warmup_steps=0",
    "pretraining.accelerator=cpu",
    "pretraining.progress_bar=false",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Config:
    db = tmp_path_factory.mktemp("sweep") / "market.db"
    write_fixture(db, symbols=["AAA", "BBB"], rows=300, freq="1D", alt_features=0)
    return load_config(None, [f"data.sqlite_path={db}", *TINY])


def test_scenarios_are_the_cartesian_product_in_axis_order():
    grid = {"architecture": ["a", "b"], "d_model": [64, 128], "depth": [], "horizon": [5]}
    scenarios = expand_scenarios(grid)
    assert [s.as_dict() for s in scenarios] == [
        {"architecture": "a", "d_model": 64, "horizon": 5},
        {"architecture": "a", "d_model": 128, "horizon": 5},
        {"architecture": "b", "d_model": 64, "horizon": 5},
        {"architecture": "b", "d_model": 128, "horizon": 5},
    ]
    # the horizon sets the head's and the windows' horizon together
    assert scenarios[1].overrides() == [
        'model.architecture="a"',
        "model.d_model=128",
        "model.horizon=5",
        "windows.horizon=5",
    ]
    assert scenarios[1].slug == "a-128-5"
    assert expand_scenarios({"training.learning_rate": [0.001]})[0].overrides() == [
        "training.learning_rate=0.001"
    ]
    assert parse_values(["64,128", "256", " 64 "]) == [64, 128, 256]
    assert parse_values("hybrid_transformer,state_space") == ["hybrid_transformer", "state_space"]
    with pytest.raises(ValueError, match="did you mean `depth`"):
        expand_scenarios({"depht": [2]})


def _net_by_hand(path: Path, cost_bps: float) -> np.ndarray:
    """Per-bar net return of equal-weight symbols, each paying cost on |Δposition|."""
    frame = pd.read_parquet(path).sort_values(["symbol", "timestamp"])
    prev = frame.groupby("symbol")["position"].shift(1).fillna(0.0)
    net = (
        frame["position"] * frame["realised_return"]
        - cost_bps / 1e4 * (frame["position"] - prev).abs()
    )
    return net.groupby(frame["timestamp"]).mean().sort_index().dropna().to_numpy()


def _roi_by_hand(path: Path, cost_bps: float) -> tuple[float, float]:
    """Total return and max drawdown of the equal-weight portfolio."""
    wealth = np.cumprod(1.0 + _net_by_hand(path, cost_bps))
    drawdown = wealth / np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:] - 1.0
    return float(wealth[-1] - 1.0), float(drawdown.min())


def test_sweep_appends_one_row_per_scenario_and_records_failures(base, tmp_path):
    catalogue = tmp_path / "benchmarks" / "catalogue.parquet"
    grid = {"architecture": ["hybrid_transformer", "state_space"], "d_model": [16, 18]}
    seen: list[str] = []
    result = run_sweep(
        base,
        expand_scenarios(grid),
        tmp_path / "runs",
        catalogue,
        on_done=lambda i, s, row: seen.append(row["status"]),
    )
    # d_model 18 with 2 heads gives odd head widths (rotary needs pairs): invalid, recorded
    assert seen == ["ok", "failed", "ok", "failed"]
    frame = read_catalogue(catalogue)
    assert list(frame.columns) == list(CATALOGUE_COLUMNS) and len(frame) == 4
    assert frame["sweep_id"].eq(result.sweep_id).all()
    assert frame["scenario_id"].is_unique

    failed = frame[frame["status"] == "failed"]
    assert failed["error"].str.contains("model.n_heads").all()
    assert failed["d_model"].tolist() == [18, 18] and failed["config"].isna().all()

    ok = frame[frame["status"] == "ok"].reset_index(drop=True)
    assert ok["architecture"].tolist() == ["hybrid_transformer", "state_space"]
    finite = ["val_loss", "val_ic", "test_ic", "sharpe", "roi", "max_drawdown", "samples_per_s"]
    assert np.isfinite(ok[finite].to_numpy(dtype=float)).all()
    assert ok["rows"].eq(600).all() and ok["symbols"].eq("AAA,BBB").all()
    assert (ok["train_windows"] > ok["val_windows"]).all() and (ok["test_windows"] > 0).all()
    # limit_train_batches=2 batches of 32 targets (scored positions of sequences), one epoch
    assert ok["global_step"].eq(2).all() and ok["train_samples"].between(40, 80).all()
    assert np.allclose(ok["samples_per_s"], ok["train_samples"] / ok["train_loop_s"])
    assert (ok["runtime_s"] > ok["train_loop_s"]).all()
    for _, row in ok.iterrows():
        cfg = config_from_dict(json.loads(row["config"]))
        assert cfg.model.architecture == row["architecture"]
        assert str(cfg.training.checkpoint_dir) == row["checkpoint_dir"]
        model = build_model(cfg.model, int(row["features"]))
        assert row["parameters"] == count_parameters(model)
        roi, mdd = _roi_by_hand(Path(row["checkpoint_dir"]) / "test_predictions.parquet", 5.0)
        assert row["roi"] == pytest.approx(roi, abs=1e-12)
        assert row["max_drawdown"] == pytest.approx(mdd, abs=1e-12)
        assert row["torch_version"] == torch.__version__ and row["device"] == "cpu"

    # deflated Sharpe over the sweep's 2 successful trials (a failed run is no trial)
    assert ok["n_trials"].eq(2).all() and failed["n_trials"].isna().all()
    assert failed["deflated_sharpe"].isna().all()
    moments = []
    for _, row in ok.iterrows():
        r = _net_by_hand(Path(row["checkpoint_dir"]) / "test_predictions.parquet", 5.0)
        sr = r.mean() / r.std(ddof=1)  # per bar
        assert row["sharpe"] == pytest.approx(sr * np.sqrt(252), rel=1e-9)
        assert row["n_periods"] == len(r) and row["periods_per_year"] == 252
        assert row["returns_skew"] == pytest.approx(stats.skew(r), rel=1e-9)
        assert row["returns_kurtosis"] == pytest.approx(stats.kurtosis(r, fisher=False), rel=1e-9)
        moments.append((sr, len(r), stats.skew(r), stats.kurtosis(r, fisher=False)))
    sr0 = np.std([m[0] for m in moments], ddof=1) * (  # E[max SR] of 2 trials, per bar
        (1 - EULER) * stats.norm.ppf(1 - 1 / 2) + EULER * stats.norm.ppf(1 - 1 / (2 * np.e))
    )
    for (sr, n, g3, g4), (_, row) in zip(moments, ok.iterrows(), strict=True):
        spread = np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
        assert row["expected_max_sharpe"] == pytest.approx(sr0 * np.sqrt(252), rel=1e-9)
        dsr = stats.norm.cdf((sr - sr0) * np.sqrt(n - 1) / spread)
        assert row["deflated_sharpe"] == pytest.approx(dsr, rel=1e-9)
        assert row["probabilistic_sharpe"] == pytest.approx(
            stats.norm.cdf(sr * np.sqrt(n - 1) / spread), rel=1e-9
        )
        assert row["deflated_sharpe"] < row["probabilistic_sharpe"]  # selection costs
    by_id = {r["scenario_id"]: r for r in result.rows}  # the rows returned agree
    assert by_id[ok["scenario_id"].iloc[0]]["deflated_sharpe"] == ok["deflated_sharpe"].iloc[0]
    assert by_id[ok["scenario_id"].iloc[0]]["n_trials"] == 2

    # a second sweep appends; nothing already there changes
    again = run_sweep(base, expand_scenarios({"d_model": [18]}), tmp_path / "runs", catalogue)
    after = read_catalogue(catalogue)
    assert len(after) == 5 and after["sweep_id"].iloc[-1] == again.sweep_id
    pd.testing.assert_frame_equal(after.iloc[:4], frame)
    assert not list(catalogue.parent.glob(".*.tmp"))


def test_pretraining_comparison_writes_two_linked_rows_with_deltas(base, tmp_path):
    catalogue = tmp_path / "catalogue.parquet"
    steps: list[str] = []
    result = run_pretraining_comparison(base, tmp_path / "runs", catalogue, step=steps.append)
    assert steps == ["pretrain", "train from scratch", "train warm-started"]
    assert result.ok and result.pretrain is not None and result.pretrain.steps == 3
    frame = read_catalogue(catalogue)
    assert frame["kind"].tolist() == ["scratch", "warm_start"]
    assert frame["comparison"].eq(result.comparison_id).all()
    scratch, warm = frame.iloc[0], frame.iloc[1]
    for key in ("val_loss", "val_ic", "test_ic", "sharpe", "runtime_s"):
        assert warm[f"delta_{key}"] == pytest.approx(warm[key] - scratch[key])
        assert scratch[f"delta_{key}"] == warm[f"delta_{key}"]
    # same seed, data and budget: only the starting backbone differs, and it shows
    assert scratch["global_step"] == warm["global_step"] == 2
    assert scratch["val_loss"] != warm["val_loss"]
    assert warm["pretrain_s"] > 0 and np.isnan(scratch["pretrain_s"])
    assert warm["pretrain_loss_before"] == pytest.approx(result.pretrain.loss_before)
    assert (result.output / "pretrain" / "backbone.pt").exists()


def test_deflation_counts_only_successful_trials_by_hand():
    rows = pd.DataFrame(
        {
            "status": ["ok", "ok", "failed", "ok"],
            "sharpe": [1.0, 2.0, np.nan, 0.5],  # annualised
            "n_periods": [100, 400, None, 100],
            "periods_per_year": [252.0] * 4,
            "returns_skew": [0.0, -1.0, np.nan, 0.2],
            "returns_kurtosis": [3.0, 5.0, np.nan, 4.0],
        }
    )
    got = deflate_rows(rows)
    sr = np.array([1.0, 2.0, 0.5]) / np.sqrt(252)
    sr0 = np.std(sr, ddof=1) * (
        (1 - EULER) * stats.norm.ppf(1 - 1 / 3) + EULER * stats.norm.ppf(1 - 1 / (3 * np.e))
    )
    n, g3, g4 = np.array([100, 400, 100]), np.array([0.0, -1.0, 0.2]), np.array([3.0, 5.0, 4.0])
    z = (sr - sr0) * np.sqrt(n - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    trials = got.iloc[[0, 1, 3]]
    assert trials["deflated_sharpe"].to_numpy() == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert trials["n_trials"].eq(3).all() and got.iloc[2].isna().all()
    assert trials["expected_max_sharpe"].to_numpy() == pytest.approx(sr0 * np.sqrt(252))
    # one trial: no selection, DSR = PSR
    single = deflate_rows(rows.iloc[[0]])
    assert single["deflated_sharpe"].iloc[0] == single["probabilistic_sharpe"].iloc[0]
    assert single["expected_max_sharpe"].iloc[0] == 0.0


def test_deflating_an_unknown_sweep_names_the_id(tmp_path):
    with pytest.raises(ValueError, match="no rows with sweep_id 'sweep-x'"):
        deflate_catalogue(tmp_path / "none.parquet", "sweep-x")
