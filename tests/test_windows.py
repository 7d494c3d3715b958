"""Windows layer: tensors, targets, leakage, normalisation, splits, memmap cache, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from market_nn_plus_ultra.config import ConfigError, WindowsConfig, load_config
from market_nn_plus_ultra.windows import (
    MarketTensors,
    SlidingWindowDataset,
    WindowsError,
    build_tensors,
    fit_normaliser,
    purged_splits,
    walk_forward_splits,
)

FEATURES = ["close", "ret_mean_3", "noise"]


def _ragged_panel(hours: int = 96, seed: int = 0) -> pd.DataFrame:
    """Three calendars: 24/7 hourly, weekday session hours, 2-hourly with holes."""
    rng = np.random.default_rng(seed)
    clock = pd.date_range("2024-01-05", periods=hours, freq="h", tz="UTC")  # Fri → Mon
    calendars = {
        "BTC": clock,
        "SPY": clock[(clock.day_of_week < 5) & (clock.hour >= 14) & (clock.hour < 21)],
        "ETH": clock[::2].delete([3, 4, 9]),
    }
    frames = []
    for symbol, ts in calendars.items():
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
        frame = pd.DataFrame({"timestamp": ts, "symbol": symbol, "close": close})
        log_ret = np.log(frame["close"]).diff()
        frame["ret_mean_3"] = log_ret.rolling(3).mean()  # causal, NaN warm-up of 3 rows
        frame["noise"] = rng.normal(size=len(ts))
        frames.append(frame)
    return pd.concat(frames).set_index(["timestamp", "symbol"]).sort_index()


def _forward_returns(panel: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Independent reference: each symbol's h-th step return on its own bars (pandas shift)."""
    close = panel["close"].groupby(level="symbol")
    return pd.DataFrame(
        {h: close.shift(-h) / close.shift(-(h - 1)) - 1 for h in range(1, horizon + 1)}
    )


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _ragged_panel()


@pytest.fixture(scope="module")
def tensors(panel) -> MarketTensors:
    return MarketTensors.from_panel(panel, FEATURES, horizon=3)


def _cell(tensors: MarketTensors, stamp, symbol) -> tuple[int, int]:
    return tensors.timestamps.get_loc(stamp), tensors.symbols.index(symbol)


# --------------------------------------------------------------------------------------
# Tensors and targets
# --------------------------------------------------------------------------------------


def test_union_calendar_scatter_and_masks(panel, tensors):
    stamps = panel.index.get_level_values("timestamp")
    assert tensors.timestamps.equals(pd.DatetimeIndex(np.unique(stamps)))
    assert tensors.symbols == ["BTC", "ETH", "SPY"]
    assert tensors.inputs.dtype == np.float32 and tensors.inputs.shape == (96, 3, 3)
    assert tensors.present.sum() == len(panel)
    t = tensors.timestamps.get_indexer(stamps)
    s = np.array([tensors.symbols.index(x) for x in panel.index.get_level_values("symbol")])
    expected = panel[FEATURES].to_numpy(np.float32)
    np.testing.assert_array_equal(tensors.inputs[t, s], np.nan_to_num(expected, nan=0.0))
    np.testing.assert_array_equal(tensors.mask[t, s], ~np.isnan(expected).any(axis=1))
    # Warm-up rows of ret_mean_3 (first 3 bars per symbol) are masked out, 0-filled.
    assert (~tensors.mask[t, s]).sum() == 9
    # Cells with no bar (SPY at the weekend) are absent, masked and 0.
    absent = ~tensors.present
    assert absent.sum() == 96 * 3 - len(panel)
    assert not tensors.mask[absent].any() and (tensors.inputs[absent] == 0).all()


@pytest.mark.parametrize("target", ["simple_return", "log_return"])
def test_targets_are_forward_returns_on_each_symbols_own_bars(panel, target):
    tensors = MarketTensors.from_panel(panel, FEATURES, horizon=3, target=target)
    reference = _forward_returns(panel, 3)
    if target == "log_return":
        reference = np.log1p(reference)
    t = tensors.timestamps.get_indexer(panel.index.get_level_values("timestamp"))
    s = np.array([tensors.symbols.index(x) for x in panel.index.get_level_values("symbol")])
    got = tensors.targets[t, s]
    want = reference.to_numpy(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, equal_nan=True)
    np.testing.assert_array_equal(tensors.target_mask[t, s], ~np.isnan(want))
    # Hand check: BTC trades every hour, so targets[t, 0] = close[t+1] / close[t] - 1.
    btc = panel.xs("BTC", level="symbol")["close"].to_numpy()
    first = btc[1] / btc[0] - 1
    assert tensors.targets[0, 0, 0] == pytest.approx(
        np.log1p(first) if target == "log_return" else first, rel=1e-5
    )
    assert np.isnan(tensors.targets[~tensors.present]).all()


# --------------------------------------------------------------------------------------
# The leakage test
# --------------------------------------------------------------------------------------

_MODES = [
    ("one", "union", "window_zscore"),
    ("one", "own", "window_zscore"),
    ("all", "union", "window_zscore"),
    ("one", "union", "none"),
]


@pytest.mark.parametrize(("per_item", "calendar", "normalise"), _MODES)
def test_no_window_sees_row_t_plus_1_or_later(panel, tensors, per_item, calendar, normalise):
    """For every end row t: scrambling every panel row after t leaves t's windows unchanged."""
    kwargs = {"symbols_per_item": per_item, "calendar": calendar, "normalise": normalise}
    ds = SlidingWindowDataset(tensors, 6, **kwargs)
    t_items, s_items = ds.item_keys()
    reference = _forward_returns(panel, 3)
    rng = np.random.default_rng(1)
    stamps = panel.index.get_level_values("timestamp")
    checked = 0
    for t in np.unique(t_items):
        future = stamps > tensors.timestamps[t]
        scrambled = panel.copy()
        values = scrambled.loc[future, FEATURES].to_numpy()
        noise = rng.uniform(50, 150, values.shape)
        scrambled.loc[future, FEATURES] = np.where(np.isnan(values), np.nan, noise)
        ds_scrambled = SlidingWindowDataset(
            MarketTensors.from_panel(scrambled, FEATURES, horizon=3), 6, **kwargs
        )
        mine = np.flatnonzero(t_items == t)
        t2, s2 = ds_scrambled.item_keys()
        theirs = np.flatnonzero(t2 == t)
        np.testing.assert_array_equal(s2[theirs], s_items[mine])
        a, b = ds.batch(mine), ds_scrambled.batch(theirs)
        torch.testing.assert_close(a["x"], b["x"], rtol=0, atol=0)
        torch.testing.assert_close(a["mask"], b["mask"])
        # Targets equal the pandas forward returns of the unscrambled closes.
        symbols = (
            [tensors.symbols[k] for k in s_items[mine]] if per_item == "one" else tensors.symbols
        )
        for row, symbol in enumerate(symbols):
            key = (tensors.timestamps[t], symbol)
            y = a["y"][row] if per_item == "one" else a["y"][0, tensors.symbols.index(symbol)]
            y_mask = (
                a["y_mask"][row]
                if per_item == "one"
                else a["y_mask"][0, tensors.symbols.index(symbol)]
            )
            if y_mask.all():
                np.testing.assert_allclose(y.numpy(), reference.loc[key].to_numpy(), rtol=1e-5)
        checked += len(mine)
    assert checked == len(ds) > 40


def test_window_rows_and_zscore_match_a_hand_computation(tensors):
    ds = SlidingWindowDataset(tensors, 5, symbols_per_item="one", normalise="window_zscore")
    item = ds[10]
    t, s = int(item["t_index"]), int(item["symbol_index"])
    raw = tensors.inputs[t - 4 : t + 1, s].astype(np.float64)  # rows t-4..t, oldest first
    valid = tensors.mask[t - 4 : t + 1, s]
    mean = raw[valid].mean(axis=0)
    std = np.maximum(raw[valid].std(axis=0), 1e-6)
    expected = np.where(valid[:, None], (raw - mean) / std, 0.0)
    np.testing.assert_allclose(item["x"].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(item["mask"].numpy(), valid)


def test_own_calendar_windows_are_the_symbols_last_w_bars(tensors):
    ds = SlidingWindowDataset(tensors, 4, calendar="own", normalise="none")
    t, s = ds.item_keys()
    spy = tensors.symbols.index("SPY")
    k = np.flatnonzero(s == spy)[-1]  # past the warm-up: every bar of the window is valid
    bars = np.flatnonzero(tensors.present[:, spy])
    rows = bars[np.searchsorted(bars, t[k]) - 3 : np.searchsorted(bars, t[k]) + 1]
    np.testing.assert_array_equal(ds.input_rows(t[k : k + 1], s[k : k + 1])[0], rows)
    np.testing.assert_array_equal(ds[int(k)]["x"].numpy(), tensors.inputs[rows, spy])
    assert ds[int(k)]["mask"].all()  # own-bar windows have no calendar holes


# --------------------------------------------------------------------------------------
# Normalisation fitted on training rows only
# --------------------------------------------------------------------------------------


def test_train_zscore_statistics_come_from_train_rows_only(panel, tensors):
    rows = range(10, 40)
    norm = fit_normaliser(tensors, rows)
    for s in range(tensors.n_symbols):
        valid = tensors.mask[rows.start : rows.stop, s]
        x = tensors.inputs[rows.start : rows.stop, s][valid].astype(np.float64)
        np.testing.assert_allclose(norm.mean[s], x.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(norm.std[s], x.std(axis=0), rtol=1e-4)
    scrambled = tensors.inputs.copy()
    scrambled[:10] += 1000.0
    scrambled[40:] *= -3.0
    other = MarketTensors(**{**tensors.__dict__, "inputs": scrambled})
    np.testing.assert_array_equal(fit_normaliser(other, rows).mean, norm.mean)

    ds = SlidingWindowDataset(tensors, 5, normalise="train_zscore", normaliser=norm)
    item = ds[3]
    t, s = int(item["t_index"]), int(item["symbol_index"])
    raw, valid = tensors.inputs[t - 4 : t + 1, s], tensors.mask[t - 4 : t + 1, s]
    expected = np.where(valid[:, None], (raw - norm.mean[s]) / norm.std[s], 0.0)
    np.testing.assert_allclose(item["x"].numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(WindowsError, match="fit_normaliser"):
        SlidingWindowDataset(tensors, 5, normalise="train_zscore")


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def test_purged_splits_hand_computed():
    # End rows 9..994 (986 usable), two gaps of H + E + W - 1 = 29 → 928 to share.
    train, val, test = purged_splits(1000, 0.1, 0.2, window=10, horizon=5, embargo=15)
    assert (train.rows, val.rows, test.rows) == (range(9, 660), range(689, 781), range(810, 995))
    assert train.target_rows.stop - 1 == 664 and val.input_rows.start == 680  # 15 rows apart
    assert (train.target_limit, val.target_limit, test.target_limit) == (665, 786, 1000)


@pytest.mark.parametrize("window", [1, 7, 32])
@pytest.mark.parametrize("horizon", [1, 5])
@pytest.mark.parametrize("embargo", [None, 0, 3])
def test_splits_embargo_holds(window, horizon, embargo):
    train, val, test = purged_splits(500, 0.2, 0.2, window=window, horizon=horizon, embargo=embargo)
    gap = max(window, horizon) if embargo is None else embargo
    for a, b in ((train, val), (val, test)):
        last_target = a.rows.stop - 1 + horizon
        first_input = b.rows.start - window + 1
        assert last_target < first_input and first_input - last_target - 1 == gap
        assert a.target_limit == last_target + 1
    assert test.rows.stop - 1 + horizon == 499  # the last end row still has H rows ahead
    assert min(map(len, (train, val, test))) > 0


def test_too_short_data_says_how_many_rows_are_needed():
    with pytest.raises(WindowsError, match=r"at least (\d+) rows") as err:
        purged_splits(100, window=20, horizon=5)
    need = int(err.value.args[0].split("at least ")[1].split()[0])
    purged_splits(need, window=20, horizon=5)  # exactly enough works …
    with pytest.raises(WindowsError):
        purged_splits(need - 1, window=20, horizon=5)  # … one fewer does not
    with pytest.raises(WindowsError, match="leaves no training rows"):
        purged_splits(10_000, 0.5, 0.5, window=2, horizon=1)


def test_walk_forward_folds_hand_computed():
    folds = list(walk_forward_splits(300, 100, 50, window=10, horizon=5, embargo=0))
    assert [(f[0].rows, f[1].rows) for f in folds] == [
        (range(9, 109), range(123, 173)),
        (range(59, 159), range(173, 223)),
        (range(109, 209), range(223, 273)),
    ]
    expanding = list(
        walk_forward_splits(300, 100, 50, window=10, horizon=5, embargo=0, expanding=True)
    )
    assert [f[0].rows.start for f in expanding] == [9, 9, 9]
    for train, test in folds:
        assert train.rows.stop - 1 + 5 < test.rows.start - 10 + 1
    with pytest.raises(WindowsError, match="at least 178 rows"):
        list(walk_forward_splits(177, 100, 50, window=10, horizon=5, embargo=0))


def test_split_datasets_purge_ragged_targets(tensors):
    train, val, _ = purged_splits(tensors.n_rows, 0.2, 0.0, window=4, horizon=3, embargo=0)
    ds_train = SlidingWindowDataset(tensors, 4, split=train)
    ds_val = SlidingWindowDataset(tensors, 4, split=val)
    assert len(ds_train) and len(ds_val)
    t, s = ds_train.item_keys()
    last_target = tensors.forward_row(3)[t, s]
    tv, sv = ds_val.item_keys()
    first_input = ds_val.input_rows(tv, sv)[:, 0]
    assert last_target.max() < first_input.min()
    # SPY's weekend gap pushes some would-be train targets past the limit: they are purged.
    unpurged = SlidingWindowDataset(
        tensors, 4, split=train.__class__(**{**train.__dict__, "target_limit": 10**9})
    )
    assert len(unpurged) > len(ds_train)
    own_val = SlidingWindowDataset(tensors, 4, calendar="own", split=val)
    tv, sv = own_val.item_keys()
    assert own_val.input_rows(tv, sv)[:, 0].min() >= val.input_rows.start


# --------------------------------------------------------------------------------------
# Memory: views and index arithmetic, memmap round trip
# --------------------------------------------------------------------------------------


def test_dataset_memory_is_o_t_s_not_o_n_w_f():
    T, S, F = 4000, 4, 32
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(T, S, F)).astype(np.float32)
    targets = rng.normal(size=(T, S, 2)).astype(np.float32)
    tensors = MarketTensors(
        inputs=inputs,
        targets=targets,
        mask=np.ones((T, S), bool),
        target_mask=np.ones((T, S, 2), bool),
        present=np.ones((T, S), bool),
        timestamps=pd.date_range("2020", periods=T, freq="min", tz="UTC"),
        symbols=list("ABCD"),
        feature_names=[f"f{i}" for i in range(F)],
    )
    tracemalloc.start()
    ds = SlidingWindowDataset(tensors, 256, normalise="none")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    windows_copy = len(ds) * 256 * F * 4  # what a materialised [N, W, F] would take
    assert ds.tensors.inputs is inputs and np.shares_memory(ds.tensors.inputs, inputs)
    assert peak < 0.01 * windows_copy and peak < inputs.nbytes // 4
    assert ds.nbytes <= 16 * T * S
    # One int per window (+ the W row offsets): memory does not grow with W or F.
    assert ds.nbytes == len(ds) * 4 + 256 * 8
    assert SlidingWindowDataset(tensors, 8, normalise="none").nbytes <= 16 * T * S
    item = ds[100]
    t, s = int(item["t_index"]), int(item["symbol_index"])
    np.testing.assert_array_equal(item["x"].numpy(), inputs[t - 255 : t + 1, s])


def test_memmap_round_trip_and_cached_build(tmp_path, panel, tensors):
    regimes = panel.assign(regime=np.where(panel["noise"] > 0, "bull", "bear"))
    full = MarketTensors.from_panel(
        regimes, FEATURES, horizon=3, context_columns=["noise"], regime_column="regime"
    )
    mapped = full.to_memmap(tmp_path / "cache")
    assert isinstance(mapped.inputs, np.memmap) and not mapped.inputs.flags.writeable
    for name in ("inputs", "targets", "mask", "target_mask", "present", "regimes", "context"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(full, name))
    assert mapped.timestamps.equals(full.timestamps) and mapped.symbols == full.symbols
    assert mapped.regime_labels == ["bear", "bull"] and mapped.context_names == ["noise"]
    a = SlidingWindowDataset(full, 6, symbols_per_item="all").batch(np.arange(5))
    b = SlidingWindowDataset(mapped, 6, symbols_per_item="all").batch(np.arange(5))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert a["context"].shape == (5, 3, 6, 1) and a["regime"].shape == (5, 3)

    cfg = WindowsConfig(horizon=3, feature_columns=FEATURES, memmap_threshold_gb=1e-9)
    built = build_tensors(panel, cfg, cache_dir=tmp_path / "auto")
    folders = list((tmp_path / "auto").iterdir())
    assert isinstance(built.inputs, np.memmap) and len(folders) == 1
    assert folders[0].name == f"tensors-{built.version}"
    np.testing.assert_array_equal(built.targets, tensors.targets)
    again = build_tensors(panel, cfg, cache_dir=tmp_path / "auto")
    assert again.version == built.version and list((tmp_path / "auto").iterdir()) == folders
    other = build_tensors(panel, cfg.model_copy(update={"horizon": 2}), cache_dir=tmp_path / "auto")
    assert other.version != built.version and len(list((tmp_path / "auto").iterdir())) == 2
    small = build_tensors(
        panel, cfg.model_copy(update={"memmap_threshold_gb": 10.0}), cache_dir=tmp_path / "mem"
    )
    assert not isinstance(small.inputs, np.memmap) and not (tmp_path / "mem").exists()
    assert small.version == built.version


# --------------------------------------------------------------------------------------
# Stride, batching, config, errors
# --------------------------------------------------------------------------------------


def test_stride_keeps_every_kth_end_row(tensors):
    ds = SlidingWindowDataset(tensors, 6, stride=4, symbols_per_item="all")
    t, _ = ds.item_keys()
    assert ((t - 5) % 4 == 0).all() and t.min() == 5
    full = SlidingWindowDataset(tensors, 6, symbols_per_item="all").item_keys()[0]
    np.testing.assert_array_equal(t, full[(full - 5) % 4 == 0])


def test_batched_loader_matches_items(tensors):
    ds = SlidingWindowDataset(tensors, 6)
    loader = DataLoader(ds, batch_size=None, sampler=BatchSampler(SequentialSampler(ds), 16, False))
    batches = list(loader)
    assert sum(len(b["x"]) for b in batches) == len(ds)
    first = batches[0]
    assert first["x"].shape == (16, 6, 3) and first["y"].shape == (16, 3)
    for i in (0, 7, 15):
        for key, value in ds[i].items():
            torch.testing.assert_close(first[key][i], value)
    with pytest.raises(IndexError, match="windows"):
        ds[len(ds)]


def test_from_config_and_config_validation(tensors):
    cfg = load_config(
        overrides=[
            "windows.window=6",
            "windows.horizon=2",
            "windows.stride=2",
            "windows.normalise=window_zscore",
        ]
    ).windows
    ds = SlidingWindowDataset.from_config(tensors, cfg)
    assert ds.window == 6 and ds.horizon == 2 and ds[0]["y"].shape == (2,)
    with pytest.raises(ConfigError, match="symbols_per_item=one"):
        load_config(overrides=["windows.calendar=own", "windows.symbols_per_item=all"])
    with pytest.raises(ConfigError, match="no training rows"):
        load_config(overrides=["windows.val_fraction=0.5", "windows.test_fraction=0.5"])


def test_user_errors_name_the_column_and_fix(panel, tensors):
    with pytest.raises(WindowsError, match="did you mean `ret_mean_3`"):
        MarketTensors.from_panel(panel, ["close", "ret_mean3"])
    with pytest.raises(WindowsError, match="no column `close`"):
        MarketTensors.from_panel(panel.drop(columns="close"), ["noise"])
    with pytest.raises(WindowsError, match=r"indexed by \(timestamp, symbol\)"):
        MarketTensors.from_panel(panel.reset_index(), FEATURES)
    with pytest.raises(WindowsError, match="duplicate"):
        MarketTensors.from_panel(pd.concat([panel, panel.iloc[:2]]), FEATURES)
    with pytest.raises(WindowsError, match="rebuild them with horizon=5"):
        SlidingWindowDataset(tensors, 6, horizon=5)
    with pytest.raises(WindowsError, match="window=500"):
        SlidingWindowDataset(tensors, 500)
