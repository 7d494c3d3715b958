"""MarketDataModule: database → purged window splits; deterministic, resumable loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market_nn_plus_ultra.training.data import MarketDataModule, ResumableBatchSampler
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dm")
    cfg = tiny_config(fixture_db(tmp), tmp / "out", "windows.normalise=train_zscore")
    module = MarketDataModule(cfg)
    module.setup()
    return module


def test_splits_are_purged_and_ordered(dm):
    train, val, test = (dm.splits[k] for k in ("train", "val", "test"))
    w, h = dm.cfg.windows.window, dm.cfg.windows.horizon
    embargo = max(w, h)
    # b = a + H + embargo + W between the last end row of one split and the first of the next
    assert val.rows.start == train.rows.stop - 1 + h + embargo + w
    assert test.rows.start == val.rows.stop - 1 + h + embargo + w
    info = dm.split_info()
    assert info["train"]["end"] < info["val"]["start"] < info["test"]["start"]
    t_train, _ = dm.datasets["train"].item_keys()
    t_test, _ = dm.datasets["test"].item_keys()
    assert t_train.max() + h < t_test.min() - w + 1  # no training target inside test inputs


def test_exposes_what_the_model_needs(dm):
    assert dm.n_features == len(dm.feature_columns) > 5
    assert "sentiment_score" in dm.feature_columns  # the alternative data was joined
    assert "rsi_14" in dm.feature_columns  # the feature pipeline ran
    assert dm.symbols == ["AAA", "BBB"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (64, 8, dm.n_features)
    assert batch["y"].shape == (64, 1)
    assert torch.isfinite(batch["x"]).all()
    # y is the forward return from the window's end bar: check against the tensors
    t, s = batch["t_index"].numpy(), batch["symbol_index"].numpy()
    np.testing.assert_allclose(batch["y"][:, 0].numpy(), dm.tensors.targets[t, s, 0])


def test_train_order_depends_only_on_seed_and_epoch():
    a = ResumableBatchSampler(100, 16, shuffle=True, seed=3)
    b = ResumableBatchSampler(100, 16, shuffle=True, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    flat = sorted(i for batch in first for i in batch)
    assert flat == list(range(100))  # a permutation: every window once per epoch


def test_shards_cover_the_permutation_once():
    shards = [
        ResumableBatchSampler(10, 2, shuffle=True, seed=1, rank=r, world_size=3) for r in range(3)
    ]
    seen = [i for s in shards for batch in s for i in batch]
    assert len({len(s) for s in shards}) == 1  # equal batches per rank
    assert set(seen) == set(range(10)) and len(seen) == 12  # 10 items wrap-padded to 12


def test_loader_resumes_mid_epoch(dm):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    it = iter(loader)
    _ = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "consumed": 3}
    rest = [b["t_index"] for b in it]

    fresh = MarketDataModule(dm.cfg)
    fresh.setup()
    resumed = fresh.train_dataloader()
    resumed.load_state_dict(state)
    again = [b["t_index"] for b in resumed]
    assert len(again) == len(rest)
    for x, y in zip(again, rest, strict=True):
        assert torch.equal(x, y)
    assert resumed.state_dict()["consumed"] == len(loader)


def test_empty_training_split_names_the_fix(tmp_path):
    db = fixture_db(tmp_path, rows=120)
    cfg = tiny_config(db, tmp_path / "out", "windows.window=30")
    with pytest.raises(ValueError, match=r"too few|no complete windows"):
        MarketDataModule(cfg).setup()
