"""SequenceDataset: every-position targets, tiling of each split, the purge, no copies."""

from __future__ import annotations

import numpy as np
import pytest

from market_nn_plus_ultra.windows import (
    MarketTensors,
    SequenceDataset,
    WindowsError,
    fit_normaliser,
    purged_splits,
)


def _tensors(T: int = 300, S: int = 3, F: int = 4, H: int = 2, seed: int = 0) -> MarketTensors:
    rng = np.random.default_rng(seed)
    stamps = __import__("pandas").date_range("2020-01-01", periods=T, freq="D", tz="UTC")
    mask = np.ones((T, S), dtype=bool)
    mask[40:45, 1] = False  # a gap
    target_mask = np.ones((T, S, H), dtype=bool)
    target_mask[-H:] = np.tri(H, H, dtype=bool)[::-1][:, None, :] == 0  # last rows lack targets
    return MarketTensors(
        inputs=rng.standard_normal((T, S, F)).astype(np.float32),
        targets=rng.standard_normal((T, S, H)).astype(np.float32) * 0.01,
        mask=mask,
        target_mask=target_mask,
        present=mask.copy(),
        timestamps=stamps,
        symbols=[f"S{i}" for i in range(S)],
        feature_names=[f"f{i}" for i in range(F)],
    )


def _scored_cells(ds: SequenceDataset) -> list[tuple[int, int]]:
    batch = ds.batch(np.arange(len(ds)))
    keep = batch["y_mask"][..., 0].numpy()
    rows = batch["rows"].numpy()
    sym = np.broadcast_to(batch["symbol_index"].numpy()[:, None], rows.shape)
    return list(zip(rows[keep].tolist(), sym[keep].tolist(), strict=True))


def test_each_scorable_row_of_a_split_is_scored_exactly_once():
    tensors = _tensors()
    train, val, test = purged_splits(tensors.n_rows, 0.2, 0.2, window=16, horizon=2)
    for split in (train, val, test):
        ds = SequenceDataset(tensors, 40, 16, 2, split=split, normalise="none")
        cells = _scored_cells(ds)
        assert len(cells) == len(set(cells))  # no row trained twice in an epoch
        rows = np.array([r for r, _ in cells])
        assert rows.min() >= split.rows.start and rows.max() < split.rows.stop
        # every row of the split with a full window, a bar and known targets is scored
        expected = {
            (r, s)
            for r in split.rows
            for s in range(tensors.n_symbols)
            if r - 15 >= max(0, split.input_rows.start)
            and tensors.mask[r, s]
            and tensors.target_mask[r, s].all()
            and (tensors.forward_row(2)[r, s] < split.target_limit)
        }
        assert set(cells) == expected


def test_position_contract_matches_the_tensors():
    tensors = _tensors()
    normaliser = fit_normaliser(tensors, range(0, 200))
    ds = SequenceDataset(tensors, 32, 8, 2, normalise="train_zscore", normaliser=normaliser)
    batch = ds.batch([0, 5, len(ds) - 1])
    rows, s = batch["rows"].numpy(), batch["symbol_index"].numpy()
    assert batch["x"].shape == (3, 32, 4) and batch["y"].shape == (3, 32, 2)
    assert (rows[:, -1] == batch["t_index"].numpy()).all()
    np.testing.assert_array_equal(np.diff(rows, axis=1), 1)
    raw = tensors.inputs[rows, s[:, None]]
    expected = (raw - normaliser.mean[s][:, None]) / normaliser.std[s][:, None]
    expected *= tensors.mask[rows, s[:, None]][..., None]
    np.testing.assert_allclose(batch["x"].numpy(), expected, rtol=1e-5, atol=1e-6)
    ym = batch["y_mask"].numpy()
    np.testing.assert_array_equal(
        batch["y"].numpy(), np.where(ym, tensors.targets[rows, s[:, None]], 0.0)
    )
    assert not ym[:, :7].any()  # fewer than min_context rows behind these positions


def test_a_split_shorter_than_the_sequence_gets_shorter_sequences():
    tensors = _tensors(T=200)
    _, _, test = purged_splits(tensors.n_rows, 0.1, 0.1, window=16, horizon=2)
    ds = SequenceDataset(tensors, 128, 16, 2, split=test, normalise="none")
    assert ds.sequence_length <= test.rows.stop - test.input_rows.start
    assert len(ds) > 0 and ds.windows_per_symbol().sum() == len(_scored_cells(ds))


def test_clear_errors():
    tensors = _tensors()
    with pytest.raises(WindowsError, match="not causal within a sequence"):
        SequenceDataset(tensors, 32, 8, normalise="window_zscore")
    with pytest.raises(WindowsError, match="min_context"):
        SequenceDataset(tensors, 32, 40, normalise="none")
    with pytest.raises(WindowsError, match="needs normaliser"):
        SequenceDataset(tensors, 32, 8)
