"""Shipped YAML presets: the default is the whole default tree; every preset trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from market_nn_plus_ultra.config import Config, config_to_dict, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.training import OBJECTIVES, train
from tests.training._train_cases import tiny_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: preset → (fixture symbols, bar frequency, rows, feature columns the run must see or not)
TRAIN_PRESETS = {
    "default.yaml": (("SPY", "QQQ"), "1D", 300, {"sentiment_score", "implied_vol_iv_30d"}, set()),
    "default_desktop.yaml": (("SPY", "QQQ"), "1D", 300, {"sentiment_score"}, set()),
    "equities.yaml": (
        ("SPY", "QQQ", "IWM"),
        "1D",
        300,
        {"sentiment_score", "implied_vol_iv_30d", "macro_rate_10y"},
        {"funding_rate"},
    ),
    "crypto.yaml": (
        ("BTC-USD", "ETH-USD"),
        "1h",
        400,
        {"funding_rate", "onchain_exchange_netflow", "hour_sin"},
        set(),
    ),
    "forex.yaml": (
        ("EURUSD", "GBPUSD"),
        "1h",
        400,
        {"macro_rate_10y", "hour_sin"},
        {"volume_z_20", "funding_rate"},
    ),
}


def test_default_yaml_is_the_whole_default_tree():
    path = CONFIGS / "default.yaml"
    # every section and key written out (not just the ones that differ), equal to Config()
    assert yaml.safe_load(path.read_text()) == config_to_dict(Config())
    assert load_config(path) == Config()
    assert path.read_text().startswith("#")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_loads_and_explains_itself(name):
    path = CONFIGS / name
    cfg = load_config(path)
    assert path.read_text().startswith("#"), f"{name} needs a header comment saying what it is for"
    if name.startswith("pretrain"):  # trained by test_pretrain.py
        assert cfg.pretraining.objective in OBJECTIVES
        assert cfg.model.max_seq_len >= cfg.windows.window
    else:
        assert name in TRAIN_PRESETS, f"{name}: add it to TRAIN_PRESETS so it is trained below"


def test_desktop_preset_is_small():
    cfg, full = load_config(CONFIGS / "default_desktop.yaml"), Config()
    assert cfg.model.d_model * cfg.model.depth <= full.model.d_model * full.model.depth / 32
    assert cfg.windows.window < full.windows.window
    assert cfg.training.batch_size < full.training.batch_size
    assert cfg.training.num_workers in (0, 2) and not (
        cfg.training.persistent_workers and cfg.training.num_workers
    )


@pytest.mark.parametrize(
    ("pretrain", "supervised"),
    [("pretrain_desktop.yaml", "default_desktop.yaml"), ("pretrain.yaml", "default.yaml")],
)
def test_pretrain_presets_warm_start_their_training_presets(pretrain, supervised):
    a, b = load_config(CONFIGS / pretrain), load_config(CONFIGS / supervised)
    # the fields a backbone checkpoint must share with the model it warm-starts
    shape = ("architecture", "d_model", "depth", "n_heads", "ff_mult", "patch_size", "dilations")
    assert {k: getattr(a.model, k) for k in shape} == {k: getattr(b.model, k) for k in shape}
    assert a.features == b.features  # the same input columns, in the same order


def test_asset_class_costs_are_ordered():
    cost = {n: load_config(CONFIGS / n).training.cost_bps for n in TRAIN_PRESETS}
    assert cost["forex.yaml"] < 1.0 <= cost["equities.yaml"] <= 5.0 < cost["crypto.yaml"]
    for name in ("equities.yaml", "crypto.yaml", "forex.yaml"):
        cfg = load_config(CONFIGS / name)
        # one cost everywhere the model is trained and judged
        assert cfg.model.loss.cost_bps == cfg.training.cost_bps == cfg.evaluation.cost_bps
        assert cfg.model.horizon == cfg.windows.horizon


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_train_preset_runs_one_step(name, tmp_path):
    symbols, freq, rows, present, absent = TRAIN_PRESETS[name]
    db = write_fixture(
        tmp_path / "market.db", symbols=symbols, rows=rows, freq=freq, alt_features=5, seed=3
    )
    cfg = tiny_config(
        db,
        tmp_path / "run",
        "training.max_steps=1",
        "training.accelerator=cpu",
        "training.devices=1",
        "tracking.tensorboard=false",
        path=CONFIGS / name,
    )
    preset = load_config(CONFIGS / name)
    # the shrink keeps what the preset is about: its data, features, costs and IC mode
    assert cfg.data.alternative_data == preset.data.alternative_data
    assert cfg.features == preset.features
    assert cfg.training.cost_bps == preset.training.cost_bps
    assert cfg.training.ic_mode == preset.training.ic_mode
    result = train(cfg)
    assert result.global_step == 1
    info = json.loads(result.model_info_path.read_text())
    columns = set(info["feature_columns"])
    assert present <= columns, f"{name}: missing inputs {sorted(present - columns)}"
    assert not absent & columns, f"{name}: unexpected inputs {sorted(absent & columns)}"
    assert sorted(info["symbols"]) == sorted(symbols)
    assert math.isfinite(result.metrics["test_loss"])  # the step's weights score the test split
    assert result.last_checkpoint is not None and result.test_predictions is not None
    assert load_config(result.config_path) == cfg
