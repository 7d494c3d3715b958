"""The bars-mode fast path: numpy from the request to the model, the same numbers.

``FeaturePipeline.transform_arrays`` and ``MarketTensors.from_arrays`` against their panel
counterparts, and ``Predictor.from_bars`` (which keeps only the rows the last windows
read) against ``Agent.predict`` on ragged calendars, longer histories and both window
calendars.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.features import FeaturePipeline
from market_nn_plus_ultra.features.registry import FeatureError
from market_nn_plus_ultra.inference import Agent
from market_nn_plus_ultra.service.errors import ServiceError
from market_nn_plus_ultra.service.guard import Guardrails, LiveBook
from market_nn_plus_ultra.service.predictor import Predictor
from market_nn_plus_ultra.service.schemas import Bar
from market_nn_plus_ultra.training import train
from market_nn_plus_ultra.windows import MarketTensors, WindowsError
from tests.features.feature_panels import ragged_panel
from tests.service._service_cases import bars_from_db, last_rows
from tests.training._train_cases import fixture_db, tiny_config


def _symbol_major(
    panel: pd.DataFrame,
) -> tuple[dict[str, np.ndarray], np.ndarray, list, np.ndarray]:
    """The panel's columns, bounds, symbols and ns timestamps, grouped by symbol."""
    frame = panel.reset_index().sort_values(["symbol", "timestamp"], kind="stable")
    symbols = sorted(frame["symbol"].unique())
    counts = frame["symbol"].value_counts().reindex(symbols).to_numpy()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    stamps = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
    columns = {c: frame[c].to_numpy(dtype=np.float64) for c in panel.columns}
    return columns, bounds, symbols, stamps


def test_transform_arrays_gives_transform_panels_values():
    panel = ragged_panel(rows=300)
    pipeline = FeaturePipeline(threads=1)
    expected = pipeline.transform_panel(panel)
    columns, bounds, symbols, stamps = _symbol_major(panel)
    got = pipeline.transform_arrays(columns, bounds, symbols, stamps)
    assert list(got) == pipeline.last_report.computed and len(got) >= 15
    reordered = expected.reset_index().sort_values(["symbol", "timestamp"], kind="stable")
    for name, values in got.items():
        np.testing.assert_array_equal(values, reordered[name].to_numpy(), err_msg=name)


def test_transform_arrays_refuses_unsorted_bars():
    panel = ragged_panel(rows=60)
    columns, bounds, symbols, stamps = _symbol_major(panel)
    stamps = stamps.copy()
    stamps[[bounds[1] + 2, bounds[1] + 3]] = stamps[[bounds[1] + 3, bounds[1] + 2]]
    with pytest.raises(FeatureError, match=f"bars of {symbols[1]} are not in rising time order"):
        FeaturePipeline(names=["rsi_14"]).transform_arrays(columns, bounds, symbols, stamps)
    with pytest.raises(FeatureError, match="bounds must be the 4 block offsets"):
        FeaturePipeline(names=["rsi_14"]).transform_arrays(columns, bounds[:-1], symbols, stamps)


def _cells(panel: pd.DataFrame):
    frame = panel.reset_index().sample(frac=1.0, random_state=0)  # rows in any order
    calendar = pd.DatetimeIndex(np.unique(frame["timestamp"]))
    symbols = sorted(frame["symbol"].unique())
    t = calendar.get_indexer(frame["timestamp"])
    s = pd.Index(symbols).get_indexer(frame["symbol"])
    return frame, t, s, calendar, symbols


def test_from_arrays_builds_the_tensors_of_from_panel():
    panel = ragged_panel(rows=120)
    rng = np.random.default_rng(1)
    panel = panel.assign(
        ctx=rng.normal(size=len(panel)),
        regime=rng.integers(0, 3, len(panel)).astype(float),
    )
    panel.iloc[5, panel.columns.get_loc("volume")] = np.nan  # a masked cell
    kwargs = {
        "horizon": 3,
        "target": "log_return",
        "context_columns": ["ctx"],
        "regime_column": "regime",
    }
    features = ["open", "close", "volume"]
    expected = MarketTensors.from_panel(panel, features, **kwargs)
    frame, t, s, calendar, symbols = _cells(panel)
    columns = {c: frame[c].to_numpy() for c in panel.columns}
    got = MarketTensors.from_arrays(columns, t, s, calendar, symbols, features, **kwargs)
    for name in ("inputs", "targets", "mask", "target_mask", "present", "missing", "context"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(got.simple_returns, expected.simple_returns)
    np.testing.assert_array_equal(got.regimes, expected.regimes)
    assert got.timestamps.equals(expected.timestamps) and got.symbols == expected.symbols
    assert not got.mask.all()  # the NaN volume masks its cell


def test_from_arrays_names_what_is_wrong():
    panel = ragged_panel(rows=40)
    frame, t, s, calendar, symbols = _cells(panel)
    columns = {c: frame[c].to_numpy() for c in panel.columns}
    with pytest.raises(WindowsError, match="no column `rsi_14` among the arrays"):
        MarketTensors.from_arrays(columns, t, s, calendar, symbols, ["rsi_14"])
    twice = np.r_[t[:-1], t[0]], np.r_[s[:-1], s[0]]
    with pytest.raises(WindowsError, match="appears more than once"):
        MarketTensors.from_arrays(columns, *twice, calendar, symbols, ["close"])
    with pytest.raises(WindowsError, match="must rise strictly"):
        MarketTensors.from_arrays(columns, t, s, calendar[::-1], symbols, ["close"])
    with pytest.raises(WindowsError, match="must hold"):
        MarketTensors.from_arrays(
            {**columns, "close": columns["close"][:5]}, t, s, calendar, symbols, ["close"]
        )


# --------------------------------------------------------------------------------------
# Predictor.from_bars against Agent.predict
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ragged_db(tmp_path_factory):
    """Two symbols, 120 daily bars each, BBB missing every 5th bar: ragged calendars and
    more history than a request needs (72 bars), so the tensors keep only some rows."""
    db = fixture_db(tmp_path_factory.mktemp("ragged"), rows=120, seed=5)
    with sqlite3.connect(db) as con:
        stamps = [
            r[0]
            for r in con.execute(
                "SELECT timestamp FROM series WHERE symbol = 'BBB' ORDER BY timestamp"
            )
        ]
        con.executemany(
            "DELETE FROM series WHERE symbol = 'BBB' AND timestamp = ?",
            [(s,) for s in stamps[3::5]],
        )
    return db


@pytest.fixture(scope="module")
def own_run(market_db, tmp_path_factory):
    """The tiny run on each symbol's own calendar (windows.calendar=own), about 3 s."""
    out = tmp_path_factory.mktemp("own_run") / "run"
    train(tiny_config(market_db, out, "windows.normalise=train_zscore", "windows.calendar=own"))
    return out


@pytest.mark.parametrize("calendar", ["union", "own"])
def test_ragged_bars_with_long_history_equal_agent_predict(calendar, run_dir, own_run, ragged_db):
    agent = Agent.from_checkpoint(run_dir if calendar == "union" else own_run, device="cpu")
    assert agent.config.windows.calendar == calendar
    predictor = Predictor(agent, agent.config.data)
    bars = [Bar(**b) for b in bars_from_db(agent, ragged_db)]
    assert len(bars) > 2 * predictor.min_bars
    served = predictor.from_bars(bars).frame.set_index("symbol")
    reference = last_rows(agent.predict(ragged_db))
    assert list(served.index) == ["AAA", "BBB"]
    np.testing.assert_allclose(served["position"], reference["position"], atol=1e-6)
    np.testing.assert_allclose(served["forecast"], reference["forecast"], atol=1e-6)
    assert (served["timestamp"] == reference["timestamp"]).all()


def test_bar_order_does_not_matter(run_dir, ragged_db):
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    predictor = Predictor(agent, agent.config.data)
    bars = [Bar(**b) for b in bars_from_db(agent, ragged_db, tail=80)]
    shuffled = [bars[i] for i in np.random.default_rng(0).permutation(len(bars))]
    a, b = predictor.from_bars(bars).frame, predictor.from_bars(shuffled).frame
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["timestamp", "symbol", "position", "forecast", "realised_return"]
    assert str(a["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_concurrent_requests_get_their_own_predictions(run_dir, ragged_db):
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    predictor = Predictor(agent, agent.config.data)
    every = [Bar(**b) for b in bars_from_db(agent, ragged_db, tail=80)]
    requests = [every, [b for b in every if b.symbol == "AAA"], every[: len(every) - 2]]
    alone = [predictor.from_bars(r).frame for r in requests]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda i: predictor.from_bars(requests[i % 3]).frame, range(12)))
    for i, frame in enumerate(together):
        pd.testing.assert_frame_equal(frame, alone[i % 3])
    assert len(alone[1]) == 1 and not alone[0].equals(alone[2])  # three different answers


def test_each_guard_result_owns_its_breach_frame(run_dir, market_db):
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-02"], utc=True),
            "symbol": ["AAA", "BBB"],
            "position": [0.5, -0.2],
        }
    )
    guard = Guardrails(agent.config.guardrails, LiveBook(10))
    first = guard.apply(frame)
    assert first.action == "none" and len(first.breaches) == 0
    first.breaches.loc[0] = ["x"] * first.breaches.shape[1]  # a caller editing its result
    again = guard.apply(frame)
    assert len(again.breaches) == 0 and list(again.breaches.columns) == list(first.breaches.columns)
    np.testing.assert_array_equal(again.positions, [0.5, -0.2])


def _shifted(bars: list[Bar], scale: float, drop: int) -> list[Bar]:
    """The bars with every price scaled and the newest ``drop`` left out."""
    kept = bars[: len(bars) - drop] if drop else bars
    return [
        b.model_copy(update={k: getattr(b, k) * scale for k in ("open", "high", "low", "close")})
        for b in kept
    ]


def test_a_batch_answers_each_request_as_if_alone(run_dir, own_run, ragged_db):
    """One-symbol requests (made ready together), a two-symbol one and bad ones in one
    batch: every answer equals the request's answer alone, errors stay with their request."""
    for run in (run_dir, own_run):
        agent = Agent.from_checkpoint(run, device="cpu")
        predictor = Predictor(agent, agent.config.data)
        every = [Bar(**b) for b in bars_from_db(agent, ragged_db, tail=predictor.min_bars + 12)]
        aaa = [b for b in every if b.symbol == "AAA"]
        bbb = [b for b in every if b.symbol == "BBB"]
        raw = [c for c in predictor.required_columns[5:] if c in predictor.feature_columns]
        unknown = Bar(**{**aaa[-1].model_dump(), raw[0]: None})  # an input the model reads
        broken = [*aaa[:-1], unknown]
        requests = [
            aaa,
            _shifted(bbb, 1.1, 3),
            _shifted(aaa, 0.9, 7),
            every,  # two symbols: its own tensors, the same forward pass
            aaa[:10],  # too few bars: a 422 of its own
            broken,  # non-finite features at its last bar
            _shifted(bbb, 1.0, 12),
        ]
        alone = []
        for r in requests:
            try:
                alone.append(predictor._from_bars(r))
            except ServiceError as err:
                alone.append(err)
        together = predictor._from_bars_many(requests)
        assert [type(a) for a in alone] == [type(t) for t in together]
        for a, t in zip(alone, together, strict=True):
            if isinstance(a, ServiceError):
                assert (a.status, a.detail) == (t.status, t.detail)
                continue
            pd.testing.assert_frame_equal(a.frame, t.frame, atol=1e-6, rtol=0)
            np.testing.assert_allclose(a.features, t.features, atol=1e-6)
        assert sum(isinstance(a, ServiceError) for a in alone) == 2


def test_concurrent_callers_share_forward_passes(run_dir, ragged_db):
    agent = Agent.from_checkpoint(run_dir, device="cpu")
    predictor = Predictor(agent, agent.config.data, max_batch=8)
    bars = [Bar(**b) for b in bars_from_db(agent, ragged_db, tail=predictor.min_bars)]
    aaa = [b for b in bars if b.symbol == "AAA"]
    expected = predictor.from_bars(aaa).frame
    before = predictor._batches.batches
    with ThreadPoolExecutor(8) as pool:
        frames = list(pool.map(lambda _: predictor.from_bars(aaa).frame, range(48)))
    for frame in frames:
        pd.testing.assert_frame_equal(frame, expected, atol=1e-6, rtol=0)
    assert predictor._batches.batches - before < 48  # some requests shared a batch
