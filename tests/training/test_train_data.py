"""MarketDataModule: database → purged window splits; deterministic, resumable loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market_nn_plus_ultra.config import supervision_of
from market_nn_plus_ultra.training.data import MarketDataModule, ResumableBatchSampler
from market_nn_plus_ultra.windows import WindowsError
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
    # the default: sequences with a target at every scored position, 64 targets a batch
    sup = supervision_of(dm.cfg)
    assert sup.mode == "all" and sup.sequence_length == 16 and sup.min_context == 8
    items = dm.items_per_batch(64)
    assert items == round(64 / sup.scored_per_sequence)
    assert batch["x"].shape == (items, 16, dm.n_features)
    assert batch["y"].shape == (items, 16, 1)
    assert torch.isfinite(batch["x"]).all()
    # y at each position is the forward return from that position's bar
    rows, s = batch["rows"].numpy(), batch["symbol_index"].numpy()
    scored = batch["y_mask"][..., 0].numpy()
    assert scored[:, 7:].any() and not scored[:, :7].any()  # min_context rows behind each
    np.testing.assert_allclose(
        batch["y"][..., 0].numpy()[scored], dm.tensors.targets[rows, s[:, None], 0][scored]
    )


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


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory):
    """SPY (equity, NYSE sessions) and BTC-USD (crypto, 24/7) with the default side tables,
    alt_funding and alt_onchain included (they hold rows for BTC-USD only)."""
    tmp = tmp_path_factory.mktemp("mixed")
    return fixture_db(tmp, rows=300, symbols=("SPY", "BTC-USD"), alt_features=5), tmp


def test_mixed_universe_default_config_gives_every_symbol_windows(mixed_db):
    db, tmp = mixed_db
    dm = MarketDataModule(tiny_config(db, tmp / "out"))
    dm.setup()
    report = {r.symbol: r for r in dm.symbol_report.rows}
    assert set(report) == {"SPY", "BTC-USD"}
    # Before per-asset-class joins SPY had 0 usable cells (funding_rate NaN on every bar).
    for symbol, row in report.items():
        # only the feature warm-up is masked: fft_energy_* need 64 log returns (65 bars)
        assert (row.bars, row.usable, row.blanked) == (300, 236, 64), (symbol, row)
        assert row.blanking[0].startswith("fft_energy")
        assert row.windows["train"] > 100, (symbol, row)
    train = dm.datasets["train"]  # sequences: the windows per symbol are scored positions
    scored = int(train.batch(np.arange(len(train)))["y_mask"][..., 0].sum())
    assert sum(r.windows["train"] for r in report.values()) == scored
    # the crypto-only columns are there, 0.0 ("not applicable") on every SPY bar
    t = dm.tensors
    spy = t.symbols.index("SPY")
    for column in ("funding_rate", "onchain_active_addresses", "onchain_exchange_netflow"):
        f = t.feature_names.index(column)
        assert (t.inputs[t.present[:, spy], spy, f] == 0).all()
        assert t.missing[spy, f] == 0
        btc = t.symbols.index("BTC-USD")
        assert np.count_nonzero(t.inputs[t.present[:, btc], btc, f]) > 250  # real values


def test_crypto_only_column_on_equity_is_an_error_naming_it(mixed_db):
    db, tmp = mixed_db
    # the old default: funding joined onto every symbol, whatever its asset class
    spec = "{name: funding, columns: [funding_rate], feature_names: {funding_rate: funding_rate}}"
    cfg = tiny_config(db, tmp / "out2", f"data.alternative_data=[{spec}]")
    with pytest.raises(WindowsError) as err:
        MarketDataModule(cfg).setup()
    message = str(err.value)
    assert "no complete windows in any split (SPY)" in message
    assert "SPY: column `funding_rate` is NaN on 300 of its 300 bars, leaving 0 usable" in message
    assert "alt_funding (data.alternative_data name='funding')" in message
    assert "asset_classes: [crypto]" in message
