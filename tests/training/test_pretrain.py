"""pretrain() end to end on a tiny fixture: the objective falls, checkpoints warm-start a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.models import build_model
from market_nn_plus_ultra.training.pretrain import pretrain
from market_nn_plus_ultra.training.warm_start import load_backbone

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.alternative_data=[]",
    "windows.window=16",
    "model.d_model=16",
    "model.depth=1",
    "model.n_heads=2",
    "model.dropout=0.0",
    "pretraining.batch_size=32",
    "pretraining.max_epochs=3",
    "pretraining.warmup_steps=3",
    "pretraining.learning_rate=0.003",
    "pretraining.accelerator=cpu",
    "pretraining.precision=32-true",
    "pretraining.progress_bar=false",
    "pretraining.log_every_n_steps=5",
]


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pretrain") / "market.db"
    return write_fixture(path, symbols=["AAA", "BBB"], rows=320, freq="1D", alt_features=0)


def _cfg(db: Path, out: Path, *extra: str, path: str | Path | None = None):
    sets = [f"data.sqlite_path={db}", f"pretraining.checkpoint_dir={out}", *extra]
    return load_config(path, [*TINY, *sets] if path is None else sets)


@pytest.mark.parametrize("objective", ["masked", "contrastive"])
def test_pretraining_lowers_the_objective_and_warm_starts_every_weight(db, tmp_path, objective):
    cfg = _cfg(db, tmp_path / objective, f"pretraining.objective={objective}")
    result = pretrain(cfg)

    assert result.steps > 10 and result.n_train_windows > 100
    assert result.loss_after < 0.95 * result.loss_before, result
    for path in (result.last_checkpoint, result.backbone_path, result.config_path):
        assert path.exists() and path.parent == tmp_path / objective
    assert load_config(result.config_path) == cfg

    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    pretrained = {
        k.removeprefix("backbone."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("backbone.")
    }
    for source in (result.backbone_path, result.last_checkpoint):
        torch.manual_seed(123)  # a fresh initialisation, different from the pretrained one
        model = build_model(cfg.model, result.n_features)
        fresh = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        report = load_backbone(
            model.backbone, source, cfg=cfg.model, feature_columns=result.feature_columns
        )
        loaded = model.backbone.state_dict()
        assert report.n_tensors == len(loaded) == len(pretrained)
        for key, value in pretrained.items():
            assert torch.equal(loaded[key], value), key
        assert any(not torch.equal(fresh[k], loaded[k]) for k in loaded)


@pytest.mark.parametrize("preset", ["pretrain.yaml", "pretrain_desktop.yaml"])
def test_presets_load_and_run_one_step(db, tmp_path, preset):
    cfg = _cfg(
        db,
        tmp_path,
        "data.alternative_data=[]",
        "windows.window=24",
        "model.depth=2",  # the preset's width and blocks, fewer of them: a CPU-sized step
        "pretraining.batch_size=4",
        "pretraining.max_steps=1",
        "pretraining.accelerator=cpu",
        "pretraining.precision=32-true",
        "pretraining.num_workers=0",
        "pretraining.progress_bar=false",
        path=REPO / "configs" / preset,
    )
    preset_cfg = load_config(REPO / "configs" / preset)
    assert cfg.pretraining.objective == preset_cfg.pretraining.objective == "masked"
    assert cfg.model.d_model == preset_cfg.model.d_model
    result = pretrain(cfg)
    assert result.steps == 1
    assert result.backbone_path.exists()


def test_cli_pretrain_writes_and_reports(db, tmp_path):
    out = tmp_path / "cli"
    args = ["pretrain", "--objective", "contrastive", "--temperature", "0.2", "--max-epochs", "1"]
    args += ["--accelerator", "cpu"]
    for item in [*TINY, f"data.sqlite_path={db}", f"pretraining.checkpoint_dir={out}"]:
        if not item.startswith(("pretraining.max_epochs", "pretraining.accelerator")):
            args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "backbone.pt" in result.output and "contrastive pretraining" in result.output
    saved = load_config(out / "config.yaml")
    assert saved.pretraining.objective == "contrastive" and saved.pretraining.temperature == 0.2

    bad = CliRunner().invoke(app, ["pretrain", "--set", "pretraining.objectve=masked"])
    assert bad.exit_code == 2
    assert "did you mean `pretraining.objective`" in bad.output
