"""Loss landscape: filter normalisation by hand, the grid against Lightning's own val_loss."""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from plotly.offline import get_plotlyjs
from torch import nn
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.training.landscape import (
    filter_normalised_direction,
    landscape_figure,
    landscape_frame,
    loss_landscape,
    restore_module,
)
from market_nn_plus_ultra.training.safe_load import CheckpointError
from market_nn_plus_ultra.training.train import train
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("landscape")
    db = fixture_db(tmp, rows=300)
    train(tiny_config(db, tmp / "run", "training.eval_batch_size=32"))
    return tmp / "run"


def _lightning_val_loss(module, dm, batches: int) -> float:
    """The run's val_loss as Lightning logs it, over the first ``batches`` batches."""
    trainer = L.Trainer(
        accelerator="cpu",
        limit_val_batches=batches,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (metrics,) = trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)
    return float(metrics["val_loss"])


def test_direction_is_filter_normalised_and_ignores_biases_and_norms():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv1d(4, 2, kernel_size=3))
    d = filter_normalised_direction(model, torch.Generator().manual_seed(7))
    linear_w, linear_b, ln_w, ln_b, conv_w, conv_b = d
    theta = dict(model.named_parameters())
    # each output row (Linear) / output channel (Conv1d) has the norm of θ's filter
    np.testing.assert_allclose(
        linear_w.norm(dim=1), theta["0.weight"].detach().norm(dim=1), rtol=1e-6
    )
    np.testing.assert_allclose(
        conv_w.flatten(1).norm(dim=1), theta["2.weight"].detach().flatten(1).norm(dim=1), rtol=1e-6
    )
    for zero in (linear_b, ln_w, ln_b, conv_b):  # ignore='biasbn'
        assert torch.count_nonzero(zero) == 0
    # the direction of each filter is the Gaussian draw's: same generator, same draw
    g = torch.Generator().manual_seed(7)
    raw = torch.randn((4, 3), generator=g)
    cosine = torch.nn.functional.cosine_similarity(raw, linear_w, dim=1)
    np.testing.assert_allclose(cosine, torch.ones(4), rtol=1e-6)
    again = filter_normalised_direction(model, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(d, again, strict=True))


def test_grid_matches_lightning_val_loss_and_restores_weights(run):
    module, dm, _ = restore_module(run)
    dm.setup()
    batches = [b for _, b in zip(range(2), dm.val_dataloader(), strict=False)]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    frame = landscape_frame(module, batches, points=5, plane_points=3, seed=3)

    assert list(frame.columns) == ["alpha", "beta", "loss", "kind"]
    line, plane = frame[frame["kind"] == "line"], frame[frame["kind"] == "plane"]
    np.testing.assert_allclose(line["alpha"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert line["beta"].isna().all() and len(plane) == 9
    assert set(plane["beta"]) == {-1.0, 0.0, 1.0} and np.isfinite(frame["loss"]).all()
    # the weights come back unchanged
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # α = 0 (line) and α = β = 0 (plane): Lightning's logged val_loss on the same 2 batches
    reference = _lightning_val_loss(module, dm, 2)
    center = line.loc[line["alpha"] == 0.0, "loss"].item()
    plane_center = plane.loc[(plane["alpha"] == 0) & (plane["beta"] == 0), "loss"].item()
    assert center == pytest.approx(reference, abs=1e-5)
    assert plane_center == pytest.approx(reference, abs=1e-5)

    # α = 0.5 on the line: Lightning on θ + 0.5·d1 built by hand from the same seed
    g = torch.Generator().manual_seed(3)
    d1 = filter_normalised_direction(module, g)
    with torch.no_grad():
        for p, d in zip(module.parameters(), d1, strict=True):
            p.add_(0.5 * d)
    moved = _lightning_val_loss(module, dm, 2)
    assert line.loc[line["alpha"] == 0.5, "loss"].item() == pytest.approx(moved, abs=1e-5)
    assert not math.isclose(moved, reference, rel_tol=1e-6)  # the step does move the loss


def test_loss_landscape_writes_parquet_and_figure(run):
    result = loss_landscape(run, points=3, plane_points=2, batches=1, seed=0)
    assert result.parquet_path == run / "landscape.parquet"
    frame = pd.read_parquet(result.parquet_path)
    assert (frame["kind"] == "line").sum() == 3 and (frame["kind"] == "plane").sum() == 4
    assert result.center_loss == pytest.approx(frame.loc[1, "loss"])
    assert result.line_min <= result.center_loss <= result.line_max
    # one batch of 32 targets: sequences of the run's every-position supervision
    assert result.batches == 1 and result.windows == 4
    meta = json.loads(frame.attrs["landscape"])
    assert meta == {"checkpoint": "best.ckpt", "seed": 0, "batches": 1, "span": 1.0}
    html = result.html_path.read_text()
    assert get_plotlyjs()[:500] in html  # plotly.js inlined: the page works offline
    fig = landscape_figure(frame)
    assert [t.type for t in fig.data] == ["scatter", "contour"]
    np.testing.assert_allclose(fig.data[0].y, frame.loc[:2, "loss"])
    z = np.asarray(fig.data[1].z)  # (β, α)
    plane = frame[frame["kind"] == "plane"]
    row = plane[(plane["alpha"] == 1.0) & (plane["beta"] == -1.0)]["loss"].item()
    assert z[0, 1] == pytest.approx(row)


def test_landscape_errors_name_the_problem(tmp_path, run):
    with pytest.raises(CheckpointError, match="does not exist"):
        loss_landscape(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"no best\.ckpt or last\.ckpt"):
        loss_landscape(tmp_path)
    with pytest.raises(ValueError, match="--batches 0"):
        loss_landscape(run, batches=0)
    module, _, _ = restore_module(run)
    with pytest.raises(ValueError, match=r"windows\.val_fraction"):
        landscape_frame(module, [])


def test_cli_landscape_smoke(run):
    result = CliRunner().invoke(
        app,
        ["bench", "landscape", str(run), "--points", "3", "--plane-points", "2", "--batches", "1"],
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "landscape.parquet" in text and "landscape.html" in text
    missing = CliRunner().invoke(app, ["bench", "landscape", str(run / "nope")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
