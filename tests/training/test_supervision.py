"""training.supervision: how it resolves, and that `all` trains exactly the windows' model.

Position t of a sequence is the window ending at t (bounded look-back), so the loss of a
sequence batch must equal the loss of the window batch holding the same scored
positions, and no output at or before t may move when later rows change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market_nn_plus_ultra.config import (
    Config,
    ConfigError,
    config_from_dict,
    supervision_of,
    training_model,
)
from market_nn_plus_ultra.training import TradingModule
from market_nn_plus_ultra.windows import SequenceDataset, SlidingWindowDataset, fit_normaliser
from tests.windows.test_sequences import _tensors

W = 12


def _cfg(**sections) -> Config:
    return config_from_dict(sections)


def test_defaults_supervise_every_position_of_causal_backbones():
    cfg = Config()
    sup = supervision_of(cfg)
    assert (sup.mode, sup.receptive_field) == ("all", cfg.windows.window)
    assert sup.sequence_length == 2 * cfg.windows.window
    assert sup.min_context == cfg.windows.window
    assert training_model(cfg).receptive_field == cfg.windows.window
    # the config keeps what was written: a later window override still follows
    assert cfg.training.supervision is None and cfg.model.receptive_field is None
    later = _cfg(windows={"window": 32})
    assert supervision_of(later).receptive_field == 32 == supervision_of(later).min_context
    assert supervision_of(_cfg(model={"architecture": "temporal_fusion"})).mode == "last"
    assert supervision_of(_cfg(windows={"normalise": "window_zscore"})).mode == "last"
    for name in ("state_space", "omni_mixture", "multi_scale", "moe_transformer"):
        assert supervision_of(_cfg(model={"architecture": name})).mode == "all", name


@pytest.mark.parametrize(
    ("sections", "fix"),
    [
        ({"windows": {"normalise": "window_zscore"}}, "windows.normalise=train_zscore"),
        ({"model": {"architecture": "temporal_fusion"}}, "unbounded look-back"),
        ({"windows": {"calendar": "own"}}, "windows.calendar=union"),
        ({"curriculum": {"enabled": True}}, "curriculum.enabled=false"),
        ({"training": {"min_context": 999}}, "training.min_context=999"),
        ({"model": {"receptive_field": 7}}, "leave model.receptive_field unset"),
    ],
)
def test_an_explicit_all_that_cannot_hold_names_the_fix(sections, fix):
    training = {"supervision": "all", **sections.pop("training", {})}
    with pytest.raises(ConfigError, match=fix.replace(".", r"\.").replace("(", r"\(")):
        _cfg(training=training, **sections)


def _module(head: str = "regression", dropout: float = 0.0) -> TradingModule:
    cfg = _cfg(
        windows={"window": W, "horizon": 2},
        model={
            "d_model": 16,
            "depth": 2,
            "n_heads": 2,
            "dropout": dropout,
            "dilations": [1],
            "horizon": 2,
            "head": head,
            "ssm_state_dim": 4,
        },
    )
    model = training_model(cfg)
    assert model.receptive_field == W
    torch.manual_seed(0)
    return TradingModule(model, cfg.training, n_features=4)


@pytest.mark.parametrize("head", ["regression", "quantile", "action"])
def test_a_sequence_batch_trains_the_same_loss_as_its_windows(head):
    tensors = _tensors()
    normaliser = fit_normaliser(tensors, range(0, 200))
    seq = SequenceDataset(tensors, 40, W, 2, normalise="train_zscore", normaliser=normaliser)
    win = SlidingWindowDataset(tensors, W, 2, normalise="train_zscore", normaliser=normaliser)
    module = _module(head).eval()
    batch = seq.batch(np.arange(6))
    keep = batch["y_mask"].all(-1).numpy()
    rows = batch["rows"].numpy()[keep]
    sym = np.broadcast_to(batch["symbol_index"].numpy()[:, None], keep.shape)[keep]
    t_all, s_all = win.item_keys()
    index = {(t, s): i for i, (t, s) in enumerate(zip(t_all, s_all, strict=True))}
    windows = win.batch([index[(r, s)] for r, s in zip(rows, sym, strict=True)])
    with torch.no_grad():
        seq_loss, _, seq_out = module._step(batch)
        win_loss, _, win_out = module._step(windows)
    torch.testing.assert_close(seq_loss, win_loss, atol=1e-5, rtol=1e-5)
    flat_keep = torch.from_numpy(keep.reshape(-1))
    torch.testing.assert_close(seq_out.position[flat_keep], win_out.position, atol=1e-5, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_no_output_at_or_before_t_sees_a_later_row(train):
    module = _module("quantile_dirichlet", dropout=0.1).train(train)
    x = torch.randn(2, 40, 4)
    later = x.clone()
    later[:, 25:] += 3 * torch.randn_like(later[:, 25:])
    torch.manual_seed(5)
    a = module(x, positions="all")
    torch.manual_seed(5)
    b = module(later, positions="all")
    for name in ("position", "forecast", "quantiles", "probs"):
        torch.testing.assert_close(getattr(a, name)[:, :25], getattr(b, name)[:, :25])
        assert not torch.allclose(getattr(a, name)[:, 25:], getattr(b, name)[:, 25:])
