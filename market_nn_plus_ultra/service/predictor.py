"""Bars → features → last windows → model outputs, with everything reusable built once.

A :class:`Predictor` wraps one loaded :class:`~market_nn_plus_ultra.inference.Agent`. The
data path is the training one: the run's feature pipeline (the groups the model reads,
with the run's parameters), the tensor builder (``MarketTensors.from_arrays`` for bars,
``from_panel`` for the database) with the run's ``windows`` section and the checkpoint's
``train_zscore`` statistics. Features are causal, so the
features of a symbol's last bar computed from the caller's bars equal those of
``Agent.predict`` on a database holding the same bars; the model then runs on one window
per symbol — the one ending at the symbol's last bar.

Bars mode never opens a database nor builds a DataFrame before the result; the pipeline,
the required columns, the window settings and the normalisers (per symbol set) are built
once per model, and predictions run one at a time (see ``Predictor.__init__``).

Concurrent bars-mode requests are answered together (:class:`~.batching.BatchQueue`):
each request's bars become its features and last windows on their own, exactly as
alone, and the windows of every request in the batch go through the model as one
forward pass (``service.max_batch`` requests at most).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..config import DataConfig
from ..features.compute import compute_features
from ..features.pipeline import FeaturePipeline
from ..features.registry import REGISTRY, TIMESTAMP
from ..training.checks import check_config
from ..training.data import normaliser_from_state
from ..windows import MarketTensors, Normaliser, SlidingWindowDataset
from .bars import PRICES, BarArrays, bar_arrays
from .batching import BatchQueue, LoopBatcher
from .errors import ServiceError
from .outputs import ModelOutputs, check_finite, no_window
from .single_batch import SingleSymbolBatch

if TYPE_CHECKING:
    from ..inference import Agent
    from .schemas import Bar

__all__ = ["ModelOutputs", "Predictor"]

log = logging.getLogger(__name__)

_MAX_NORMALISERS = 256  # symbol sets whose normaliser rows are kept


@dataclass(frozen=True)
class _Prepared:
    """A request up to the model: its tensors, the windows ending at each symbol's last
    bar (``items`` of ``dataset``, ending at ``rows``) and their inputs ``x`` (B, W, F)."""

    tensors: MarketTensors
    dataset: SlidingWindowDataset
    items: np.ndarray
    rows: np.ndarray
    normaliser: Normaliser | None
    x: torch.Tensor | None
    feature_seconds: float
    featured: float  # perf_counter when the features were done


def _attempt(fn: Callable[..., Any], *args: object, catch: type[Exception] = ServiceError) -> Any:
    """``fn(*args)``, or the error it raised (a :class:`ServiceError`: a request's 4xx)."""
    try:
        return fn(*args)
    except catch as err:
        return err


class Predictor:
    """The prediction path of one model; thread-safe (requests share it read-only)."""

    def __init__(self, agent: Agent, data: DataConfig, max_batch: int = 32) -> None:
        cfg = agent.config
        check_config(cfg, head=False)  # feature names, plugins included
        self.agent = agent
        self.data = data  # the service's database section (symbols mode)
        self.feature_columns = agent.feature_columns
        self.window = agent.window
        self.horizon = int(cfg.windows.horizon)
        self.windows = cfg.windows.model_copy(update={"stride": 1, "symbols_per_item": "one"})
        full = FeaturePipeline.from_config(cfg.features)
        computed = [c for c in self.feature_columns if c in set(full.output_names)]
        groups = {REGISTRY.get(c).name for c in computed}
        # Only the groups the model reads, with the run's parameters: the same values,
        # and no "skipped feature" warnings for inputs a bars request need not send.
        self.pipeline = FeaturePipeline(
            REGISTRY,
            computed,  # [] selects nothing (None would mean the default set)
            params={g: full.params[g] for g in groups},
            dtype=cfg.features.dtype,
            threads=1,
        )
        warmup = self.pipeline.warmup
        self.warmup = max((warmup[c] for c in computed), default=0)
        # A fine-tuned policy (PolicyAgent) replays its portfolio from the first bar with a
        # full window, and needs one step more than that bar.
        self.policy = hasattr(agent, "replay")
        self.min_bars = self.window + self.warmup + int(self.policy)
        inputs = {c for g in groups for c in REGISTRY.get(g).inputs if c != TIMESTAMP}
        raw = [c for c in self.feature_columns if c not in set(computed)]
        extra = [*cfg.windows.context_columns]
        if cfg.windows.regime_column is not None:
            extra.append(cfg.windows.regime_column)
        needed = {*inputs, *raw, *extra}
        self.required_columns = [*PRICES, *sorted(needed - set(PRICES))]
        self._normalisers: dict[tuple[str, ...], Normaliser | None] = {}
        self._lock = threading.Lock()  # the normaliser cache is shared by request threads
        # One prediction at a time: requests run in a thread pool, and concurrent predictions
        # (GIL-bound Python between torch and numpy calls that each release the GIL) mostly
        # hand the GIL to one another — at concurrency 16 on 2 cores that doubled the CPU
        # time of a request (benchmarks/service.py). Waiting requests sleep on the lock.
        self._busy = threading.Lock()
        # Concurrent bars requests: their windows run as one forward pass. Models that read
        # more than the window (a market-state embedding, a policy's replay) go one by one.
        self.batched = not self.policy and not cfg.model.market_state_embedding
        self._batches: BatchQueue[Sequence[Bar], ModelOutputs] = BatchQueue(
            self._from_bars_many, max(1, int(max_batch)), name="predict-batch"
        )
        self._loop_batches: LoopBatcher[Sequence[Bar], ModelOutputs] = LoopBatcher(
            self._from_bars_many, max(1, int(max_batch))
        )

    # ----------------------------------------------------------------------------------
    # The two modes
    # ----------------------------------------------------------------------------------

    def from_bars(self, bars: Sequence[Bar]) -> ModelOutputs:
        """Predict each symbol's last bar from the caller's bars (no database read).

        Numpy from the request to the model: the bars become symbol-major arrays, the
        features run on them (:meth:`FeaturePipeline.transform_arrays`), and the tensors
        hold only the rows the last windows read (:meth:`MarketTensors.from_arrays`).
        Requests from concurrent threads are answered in batches (one forward pass).
        """
        return self._batches(bars)

    def submit_bars(self, bars: Sequence[Bar]) -> Future[ModelOutputs]:
        """:meth:`from_bars` without waiting: the future holds the outputs (or raises the
        request's :class:`ServiceError`)."""
        return self._batches.submit(bars)

    async def predict_bars(self, bars: Sequence[Bar]) -> ModelOutputs:
        """:meth:`from_bars` for a coroutine: concurrent requests of the event loop are
        answered together, on the loop (:class:`~.batching.LoopBatcher`)."""
        return await self._loop_batches(bars)

    def _from_bars_many(self, requests: Sequence[Sequence[Bar]]) -> list[ModelOutputs | Exception]:
        """Each request's outputs (or its :class:`ServiceError`), the windows of every
        request forwarded together; one-symbol requests are made ready together too
        (:class:`~.single_batch.SingleSymbolBatch`)."""
        with self._busy:
            if not self.batched or len(requests) == 1:
                return [_attempt(self._from_bars, bars) for bars in requests]
            try:
                return self._batched(requests)
            except Exception:  # a fault of the batch must not fail its healthy requests
                log.exception(
                    "a batch of %d predictions failed; answering each alone", len(requests)
                )
                return [_attempt(self._from_bars, bars, catch=Exception) for bars in requests]

    def _batched(self, requests: Sequence[Sequence[Bar]]) -> list[ModelOutputs | Exception]:
        started = time.perf_counter()
        results: list[Any] = [_attempt(self.request_arrays, bars) for bars in requests]
        ready = [i for i, a in enumerate(results) if isinstance(a, BarArrays)]
        ones = [i for i in ready if results[i].n == 1]
        ones = ones if len(ones) > 1 else []
        singles = None
        if ones:
            singles = _attempt(SingleSymbolBatch, self, [results[i] for i in ones], started)
            if isinstance(singles, ServiceError):  # the same for every one of them
                results = [singles if i in ones else r for i, r in enumerate(results)]
                ready, ones, singles = [i for i in ready if i not in ones], [], None
        rest = [i for i in ready if i not in ones]
        for i in rest:
            results[i] = _attempt(self._prepare_arrays, results[i], started)
        rest = [i for i in rest if isinstance(results[i], _Prepared)]
        parts = [singles.x] if singles is not None and singles.x is not None else []
        parts += [results[i].x for i in rest]
        columns = self.agent.forward_columns(torch.cat(parts)) if parts else {}
        offset = 0
        if singles is not None:
            offset = singles.n_windows
            head = {k: v[:offset] for k, v in columns.items()}
            for k, i in enumerate(ones):
                results[i] = _attempt(singles.outputs, k, head)
        for i in rest:
            n = len(results[i].items)
            mine = {k: v[offset : offset + n] for k, v in columns.items()}
            offset += n
            results[i] = _attempt(self._complete, results[i], mine)
        return results

    def from_database(self, symbols: Sequence[str], as_of: datetime | None) -> ModelOutputs:
        """Predict each symbol's latest bar up to ``as_of`` from the service's database."""
        with self._busy:
            return self._from_database(symbols, as_of)

    def _from_bars(self, bars: Sequence[Bar]) -> ModelOutputs:
        prepared = self._prepare_bars(bars)
        if isinstance(prepared, ModelOutputs):
            return prepared
        if prepared.x is not None:
            outputs = self.agent.forward_columns(prepared.x)
        else:
            outputs = self._outputs(None, prepared.dataset, prepared.items, prepared.normaliser)
        return self._complete(prepared, outputs)

    def _prepare_bars(self, bars: Sequence[Bar]) -> _Prepared | ModelOutputs:
        """A bars request up to its model inputs (a policy's request: to its outputs)."""
        started = time.perf_counter()
        return self._prepare_arrays(self.request_arrays(bars), started)

    def request_arrays(self, bars: Sequence[Bar]) -> BarArrays:
        """A bars request's checked arrays (422: a bad bar, too few bars, an unknown
        symbol)."""
        arrays = bar_arrays(bars, self.required_columns)
        self.normaliser(arrays.symbols)  # unknown symbols are refused here
        short = {
            s: int(n)
            for s, n in zip(arrays.symbols, arrays.counts, strict=True)
            if n < self.min_bars
        }
        if short:
            raise ServiceError(422, self._too_few(short, "bars: "))
        return arrays

    def _prepare_arrays(self, arrays: BarArrays, started: float) -> _Prepared | ModelOutputs:
        normaliser = self.normaliser(arrays.symbols)
        features = self.pipeline.transform_arrays(
            arrays.columns, arrays.bounds, arrays.symbols, arrays.stamps
        )
        columns = {**arrays.columns, **features}
        if self.policy:  # the policy replays its portfolio over every bar: the panel path
            return self._predict(arrays.panel(columns), normaliser, started)
        featured = time.perf_counter()
        self._check_features(columns)
        tensors = self._last_rows(arrays, columns)

        def bad_features(k: int) -> list[str]:
            i = int(arrays.bounds[k + 1]) - 1  # the symbol's last bar
            return [c for c in self.feature_columns if not np.isfinite(columns[c][i])]

        return self._windows(tensors, normaliser, bad_features, started, featured, x=self.batched)

    def _from_database(self, symbols: Sequence[str], as_of: datetime | None) -> ModelOutputs:
        started = time.perf_counter()
        wanted = sorted(set(symbols))
        normaliser = self.normaliser(wanted)
        run = self.agent.config
        data = run.data.model_copy(
            update={
                "sqlite_path": self.data.sqlite_path,
                "symbols": wanted,
                "end": None if as_of is None else pd.Timestamp(as_of).isoformat(),
                "cache": self.data.cache,
                "cache_dir": self.data.cache_dir,
            }
        )
        try:
            panel, _ = compute_features(data, run.features)
        except (ValueError, RuntimeError) as err:  # StoreError, validation, features
            raise ServiceError(422, f"symbols: {err}") from None
        have = panel.index.get_level_values("symbol").value_counts()
        short = {s: int(have.get(s, 0)) for s in wanted if have.get(s, 0) < self.min_bars}
        if short:
            upto = "" if as_of is None else f" up to as_of {as_of.isoformat()}"
            where = f"symbols: {self.data.sqlite_path} holds too few bars{upto} — "
            raise ServiceError(422, self._too_few(short, where))
        return self._predict(panel, normaliser, started)

    def warm(self) -> None:
        """One prediction on synthetic bars: compiles the feature kernels, runs the model
        once and proves the path works before the model takes traffic (in the calling
        thread: no worker thread is started for it)."""
        (result,) = self._from_bars_many([_synthetic_bars(self)])
        if isinstance(result, Exception):
            raise result

    # ----------------------------------------------------------------------------------
    # Pieces
    # ----------------------------------------------------------------------------------

    def normaliser(self, symbols: Sequence[str]) -> Normaliser | None:
        """The ``train_zscore`` rows of ``symbols`` (None for other normalisations)."""
        if self.windows.normalise != "train_zscore":
            return None
        key = tuple(symbols)
        with self._lock:
            if key in self._normalisers:
                return self._normalisers[key]
            state = self.agent.normaliser_state
            if state is None:
                value = self.agent._normaliser(list(key))  # refits once on the training split
            else:
                try:
                    value = normaliser_from_state(state, list(key))
                except ValueError as err:
                    raise ServiceError(422, str(err)) from None
            if len(self._normalisers) >= _MAX_NORMALISERS:
                self._normalisers.pop(next(iter(self._normalisers)))
            self._normalisers[key] = value
        return value

    def _too_few(self, short: dict[str, int], where: str) -> str:
        listed = ", ".join(f"{s} has {n}" for s, n in list(short.items())[:8])
        start = " + 1 to replay the policy from" if self.policy else ""
        return (
            f"{where}{listed}; the model needs at least {self.min_bars} bars per symbol "
            f"(window {self.window} + feature warm-up {self.warmup}{start}) — send more history"
        )

    def _predict(
        self, panel: pd.DataFrame, normaliser: Normaliser | None, started: float
    ) -> ModelOutputs:
        """Model outputs at each symbol's last bar of a feature panel."""
        featured = time.perf_counter()
        self._check_features(panel.columns)
        cfg = self.windows
        tensors = MarketTensors.from_panel(
            panel,
            self.feature_columns,
            horizon=self.horizon,
            target=cfg.target,
            context_columns=cfg.context_columns,
            regime_column=cfg.regime_column,
        )

        def bad_features(k: int) -> list[str]:
            present = np.asarray(tensors.present[:, k])
            stamp = tensors.timestamps[len(present) - 1 - int(np.argmax(present[::-1]))]
            row = panel.xs((stamp, tensors.symbols[k]))
            return [c for c in self.feature_columns if not np.isfinite(float(row[c]))]

        return self._finish(tensors, normaliser, panel, bad_features, started, featured)

    def _check_features(self, columns: Collection[str]) -> None:
        missing = [c for c in self.feature_columns if c not in columns]
        if missing:
            raise ServiceError(
                422,
                f"the model reads feature column(s) {missing[:8]} that these bars do not give "
                f"— send the columns {', '.join(self.required_columns)}",
            )

    def _last_rows(self, arrays: BarArrays, columns: dict[str, np.ndarray]) -> MarketTensors:
        """Tensors of the union-calendar rows the symbols' last windows read.

        A window ending at a symbol's last bar reads the W union rows up to it
        (``calendar=union``) or its own last W bars (``own``); rows before the earliest of
        those are never read, so they are left out (the features, computed on every bar,
        keep their full history)."""
        W, cfg = self.window, self.windows
        ends = arrays.bounds[1:] - 1  # (S,) each symbol's last bar
        last = arrays.rows[ends]  # (S,) its union-calendar row
        own = arrays.rows[np.maximum(arrays.bounds[:-1], ends - W + 1)]  # its W-th last bar
        first = max(0, int(min((last - W + 1).min(), own.min())))
        keep = arrays.rows >= first
        kept = {c: v[keep] for c, v in columns.items()} if not keep.all() else columns
        return MarketTensors.from_arrays(
            kept,
            arrays.rows[keep] - first,
            arrays.codes[keep],
            pd.DatetimeIndex(arrays.calendar[first:]).tz_localize("UTC"),
            arrays.symbols,
            self.feature_columns,
            horizon=self.horizon,
            target=cfg.target,
            context_columns=cfg.context_columns,
            regime_column=cfg.regime_column,
        )

    def _finish(
        self,
        tensors: MarketTensors,
        normaliser: Normaliser | None,
        panel: pd.DataFrame | None,
        bad_features: Callable[[int], list[str]],
        started: float,
        featured: float,
    ) -> ModelOutputs:
        """The model's outputs at each symbol's last bar of ``tensors``, as a frame sorted
        by (timestamp, symbol). ``panel``: the feature panel, which a policy replays."""
        prepared = self._windows(tensors, normaliser, bad_features, started, featured, x=False)
        outputs = self._outputs(panel, prepared.dataset, prepared.items, normaliser)
        return self._complete(prepared, outputs)

    def _windows(
        self,
        tensors: MarketTensors,
        normaliser: Normaliser | None,
        bad_features: Callable[[int], list[str]],
        started: float,
        featured: float,
        *,
        x: bool = True,
    ) -> _Prepared:
        """The windows ending at each symbol's last bar of ``tensors`` (``x``: their
        normalised inputs, for a batched forward pass)."""
        dataset = SlidingWindowDataset.from_config(
            tensors, self.windows, normaliser=normaliser, require_targets=False
        )
        items, rows = self._last_items(tensors, dataset, bad_features)
        inputs = dataset.batch(items)["x"] if x and len(items) else None
        return _Prepared(
            tensors, dataset, items, rows, normaliser, inputs, featured - started, featured
        )

    def _complete(self, prepared: _Prepared, outputs: dict[str, np.ndarray]) -> ModelOutputs:
        """The outputs of ``prepared``'s windows as the request's frame (and its checks)."""
        tensors, rows = prepared.tensors, prepared.rows
        check_finite(outputs, tensors.symbols)
        stamps = tensors.timestamps[rows]
        order = np.lexsort((np.arange(len(rows)), stamps.asi8))  # symbols are sorted
        columns = {
            "timestamp": stamps.as_unit("ns").asi8[order],
            "symbol": np.asarray(tensors.symbols, dtype=object)[order],
            **{k: v[order] for k, v in outputs.items()},
            "realised_return": np.full(len(order), np.nan),  # earned after the bar
        }
        inputs = np.asarray(tensors.inputs[rows[order], order], dtype=np.float32)  # (S, F)
        done = time.perf_counter()
        seconds = {"features": prepared.feature_seconds, "model": done - prepared.featured}
        return ModelOutputs(columns, seconds, inputs)

    def _outputs(
        self,
        panel: pd.DataFrame | None,
        dataset: SlidingWindowDataset,
        items: np.ndarray,
        normaliser: Normaliser | None,
    ) -> dict[str, np.ndarray]:
        """The model's columns for the windows ``items``: one forward pass per window, or —
        for a fine-tuned policy — its portfolio replayed over the bars, as it predicts."""
        agent = self.agent
        if not self.policy:
            return agent.outputs(dataset, items, max(1, len(items)), None, one_pass=False)
        from ..rl import EnvMarket

        windows = agent.config.windows.model_copy(update={"feature_columns": self.feature_columns})
        # the market's own normaliser would be fitted on these few bars: the run's replaces it
        unfitted = windows.model_copy(update={"normalise": "none"})
        market = EnvMarket.from_panel(panel, unfitted, agent.config.simulation)
        market.normaliser = normaliser
        try:
            positions, values = agent.replay(market, windows)
        except ValueError as err:
            raise ServiceError(422, f"bars: {err}") from None
        t, s = dataset.item_keys(items)
        outputs = {"position": positions[t, s]}
        if agent.head is not None:
            head = agent.head.outputs(dataset, items, max(1, len(items)), None, one_pass=False)
            outputs.update({k: v for k, v in head.items() if k != "position"})
        else:
            outputs["forecast"] = np.full(len(items), np.nan)
        outputs["value"] = values[t]
        return outputs

    def _last_items(
        self,
        tensors: MarketTensors,
        dataset: SlidingWindowDataset,
        bad_features: Callable[[int], list[str]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dataset items of the windows ending at each symbol's last bar, and those rows."""
        present = np.asarray(tensors.present)
        last = tensors.n_rows - 1 - np.argmax(present[::-1], axis=0)  # (S,) last bar row
        S = tensors.n_symbols
        t, s = dataset.item_keys()
        flat = t * S + s  # sorted: items are flat (t, s) cells in order
        wanted = last * S + np.arange(S)
        pos = np.searchsorted(flat, wanted)
        found = pos < len(flat)
        found[found] = flat[pos[found]] == wanted[found]
        if not found.all():
            k = int(np.argmin(found))
            stamp = tensors.timestamps[last[k]]
            raise no_window(tensors.symbols[k], stamp, bad_features(k), self.window)
        return pos, last


def _synthetic_bars(predictor: Predictor) -> list[Bar]:
    """``min_bars`` seeded random-walk bars of a training symbol, at the run's bar spacing."""
    from .schemas import Bar

    info = predictor.agent.model_info
    symbols = info.get("symbols") or ["WARMUP"]
    n = predictor.min_bars
    per_year = float(info.get("periods_per_year") or 252.0)
    step = pd.Timedelta(days=1) if per_year <= 400 else pd.Timedelta(days=365.25 / per_year)
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    open_ = close * np.exp(0.002 * rng.standard_normal(n))
    high = np.maximum(open_, close) * (1 + 0.005 * np.abs(rng.standard_normal(n)))
    low = np.minimum(open_, close) * (1 - 0.005 * np.abs(rng.standard_normal(n)))
    volume = 1e6 * (1 + 0.1 * np.abs(rng.standard_normal(n)))
    extras = {c: rng.standard_normal(n) for c in predictor.required_columns[len(PRICES) :]}
    start = pd.Timestamp("2020-01-01", tz="UTC")
    return [
        Bar(
            timestamp=(start + i * step).to_pydatetime(),
            symbol=str(symbols[0]),
            open=open_[i],
            high=high[i],
            low=low[i],
            close=close[i],
            volume=volume[i],
            **{c: float(v[i]) for c, v in extras.items()},
        )
        for i in range(n)
    ]
