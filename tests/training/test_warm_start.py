"""Backbone checkpoint format: round trips, Lightning checkpoints and mismatch errors."""

from __future__ import annotations

import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import BACKBONES, build_backbone, build_model
from market_nn_plus_ultra.training.warm_start import (
    BACKBONE_FORMAT,
    WarmStartError,
    load_backbone,
    read_backbone_checkpoint,
    save_backbone,
)

FEATURES = ["log_return_1", "rsi_14", "volume_z_20"]


def _cfg(**overrides: object) -> ModelConfig:
    base = {"d_model": 16, "depth": 2, "n_heads": 2, "num_experts": 2, "tft_hidden": 8}
    return ModelConfig(**{**base, **overrides})


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("architecture", sorted(BACKBONES))
def test_round_trip_restores_every_tensor(tmp_path, architecture):
    cfg = _cfg(architecture=architecture)
    torch.manual_seed(0)
    source = build_backbone(cfg, len(FEATURES))
    torch.manual_seed(1)  # a different initialisation, so equality proves the copy
    target = build_backbone(cfg, len(FEATURES))
    path = save_backbone(tmp_path / "bb" / "backbone.pt", source, cfg, FEATURES)

    report = load_backbone(target, path, cfg=cfg, feature_columns=FEATURES)

    _assert_same_weights(source, target)
    assert report.n_tensors == len(source.state_dict())
    assert report.n_values == sum(v.numel() for v in source.state_dict().values())
    assert report.source == "backbone" and report.architecture == architecture
    x = torch.randn(2, 12, len(FEATURES))
    source.eval(), target.eval()
    assert torch.equal(source(x), target(x))


def test_file_carries_metadata_and_no_temp_file_remains(tmp_path):
    cfg = _cfg()
    path = save_backbone(tmp_path / "backbone.pt", build_backbone(cfg, 3), cfg, FEATURES)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == BACKBONE_FORMAT and raw["format_version"] == 1
    assert raw["n_features"] == 3 and raw["feature_columns"] == FEATURES
    assert raw["model_config"]["d_model"] == 16 and raw["architecture"] == "hybrid_transformer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.pt"]


def test_supervised_model_warm_starts_from_backbone_file(tmp_path):
    cfg = _cfg(head="quantile")
    pre = build_backbone(cfg, 3)
    path = save_backbone(tmp_path / "backbone.pt", pre, cfg, FEATURES)
    model = build_model(cfg, 3)
    load_backbone(model.backbone, path)
    _assert_same_weights(pre, model.backbone)


def test_lightning_checkpoint_backbone_keys_are_extracted(tmp_path):
    cfg = _cfg()
    pre = build_backbone(cfg, 3)
    state = {f"backbone.{k}": v for k, v in pre.state_dict().items()}
    state["reconstruction.weight"] = torch.zeros(3, 16)
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "last.ckpt")
    target = build_backbone(cfg, 3)
    report = load_backbone(target, tmp_path / "last.ckpt")
    assert report.source == "lightning"
    _assert_same_weights(pre, target)


def test_width_mismatch_names_config_field_and_shapes(tmp_path):
    small, big = _cfg(d_model=16), _cfg(d_model=32)
    path = save_backbone(tmp_path / "backbone.pt", build_backbone(small, 3), small, FEATURES)
    with pytest.raises(WarmStartError) as err:
        load_backbone(build_backbone(big, 3), path, cfg=big)
    message = str(err.value)
    assert "model.d_model: checkpoint 16, config 32" in message
    assert "shape mismatches" in message and "(16," in message and "(32," in message
    assert "Fix:" in message


def test_depth_mismatch_lists_missing_keys_and_non_strict_loads_the_rest(tmp_path):
    shallow, deep = _cfg(depth=1), _cfg(depth=2)
    pre = build_backbone(shallow, 3)
    path = save_backbone(tmp_path / "backbone.pt", pre, shallow, FEATURES)
    target = build_backbone(deep, 3)
    with pytest.raises(WarmStartError, match=r"model.depth: checkpoint 1, config 2") as err:
        load_backbone(target, path, cfg=deep)
    assert "missing in checkpoint" in str(err.value) and "blocks.1." in str(err.value)

    report = load_backbone(target, path, strict=False)
    assert report.missing and all(k.startswith("blocks.1.") for k in report.missing)
    assert not report.unexpected
    own = target.state_dict()
    for key, value in pre.state_dict().items():
        assert torch.equal(own[key], value), key


def test_feature_columns_mismatch_is_named(tmp_path):
    cfg = _cfg()
    path = save_backbone(tmp_path / "backbone.pt", build_backbone(cfg, 3), cfg, FEATURES)
    other = ["log_return_1", "rsi_14", "atr_14"]
    with pytest.raises(WarmStartError, match=r"missing now: volume_z_20; new now: atr_14"):
        load_backbone(build_backbone(cfg, 3), path, feature_columns=other)
    with pytest.raises(WarmStartError, match="different order"):
        load_backbone(build_backbone(cfg, 3), path, feature_columns=FEATURES[::-1])


def test_bad_paths_and_files_raise_clear_errors(tmp_path):
    backbone = build_backbone(_cfg(), 3)
    with pytest.raises(WarmStartError, match="does not exist"):
        load_backbone(backbone, tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WarmStartError, match="not a readable torch checkpoint"):
        load_backbone(backbone, tmp_path / "junk.pt")
    torch.save({"state_dict": {"head.w": torch.zeros(1)}}, tmp_path / "sup.ckpt")
    with pytest.raises(WarmStartError, match=r"no `backbone.` weights \(its modules: head\)"):
        read_backbone_checkpoint(tmp_path / "sup.ckpt")
    assert issubclass(WarmStartError, ValueError)
