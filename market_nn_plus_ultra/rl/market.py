"""What the trading environment reads: the training tensors plus the simulator's inputs.

:class:`EnvMarket` holds, on the union calendar ``[T, S]``, the same
:class:`~market_nn_plus_ultra.windows.MarketTensors`, purged splits and ``train_zscore``
statistics that training builds from the config, and the per-bar inputs of the execution
simulator derived exactly as a simulated backtest derives them
(:func:`~market_nn_plus_ultra.evaluation.stress.prediction_tensors`): the realised
return t → t+1, σ (a volatility column, else the std of the past ``vol_window`` known
returns), dollar volume (a column, else volume × close), ADV (mean of the past
``adv_window`` bars) and the funding rate when the panel has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..config import Config, SimulationConfig, WindowsConfig
from ..evaluation.metrics import infer_periods_per_year
from ..evaluation.stress import prediction_tensors
from ..features.compute import compute_features
from ..windows import (
    MarketTensors,
    Normaliser,
    Split,
    build_tensors,
    fit_normaliser,
    purged_splits,
)
from ..windows.dataset import volatility_column

__all__ = ["BAR_FIELDS", "SPLITS", "EnvMarket"]

#: Where episodes may be drawn from (``reinforcement.env.split``).
SPLITS = ("train", "val", "test", "all")

#: The simulator inputs of a bar, in the order of :meth:`EnvMarket.bar_tensors`' last axis.
BAR_FIELDS = ("returns", "volatility", "dollar_volume", "adv", "funding")


@dataclass(eq=False)
class EnvMarket:
    """Market tensors and simulator inputs, numpy ``[T, S]`` on the tensors' calendar.

    ``returns``: simple return t → t+1 (NaN where unknown); ``volatility``: σ at t from
    data known at t; ``dollar_volume``/``adv``/``funding``: None when the panel lacks
    them (frictions that need them then raise, naming the option).
    """

    tensors: MarketTensors
    returns: np.ndarray
    volatility: np.ndarray
    splits: dict[str, Split]
    periods_per_year: float
    normaliser: Normaliser | None = None
    dollar_volume: np.ndarray | None = None
    adv: np.ndarray | None = None
    funding: np.ndarray | None = None

    # ----------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Config) -> EnvMarket:
        """Read ``cfg.data``, compute ``cfg.features`` and build everything like training."""
        panel, _ = compute_features(cfg.data, cfg.features)
        return cls.from_panel(panel, cfg.windows, cfg.simulation)

    @classmethod
    def from_panel(
        cls, panel: pd.DataFrame, windows: WindowsConfig, simulation: SimulationConfig
    ) -> EnvMarket:
        """From a feature panel indexed by (timestamp, symbol) (features already computed)."""
        tensors = build_tensors(panel, windows)
        frame = panel.reset_index()
        stamps = pd.DatetimeIndex(frame["timestamp"])
        stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        t = tensors.timestamps.get_indexer(stamps)
        s = pd.Index(tensors.symbols).get_indexer(frame["symbol"].astype(str))
        frame["position"] = 0.0
        frame["realised_return"] = tensors.realised_at(t, s).astype(np.float64)
        grid = prediction_tensors(frame, simulation)
        # prediction_tensors' calendar is the frame's: the same rows; align the symbols
        order = pd.Index(grid.symbols.astype(str)).get_indexer(tensors.symbols)
        if len(grid.timestamps) != tensors.n_rows or (order < 0).any():
            raise ValueError("the simulator inputs do not cover the tensors' calendar")
        opt = {k: v[:, order] for k, v in grid.optional.items()}
        return cls.from_tensors(
            tensors,
            windows,
            returns=grid.returns[:, order],
            volatility=opt["volatility"],
            dollar_volume=opt.get("dollar_volume"),
            adv=opt.get("adv"),
            funding=opt.get("funding"),
        )

    @classmethod
    def from_tensors(
        cls,
        tensors: MarketTensors,
        windows: WindowsConfig,
        *,
        returns: np.ndarray | None = None,
        volatility: np.ndarray | None = None,
        dollar_volume: np.ndarray | None = None,
        adv: np.ndarray | None = None,
        funding: np.ndarray | None = None,
        vol_window: int = 20,
    ) -> EnvMarket:
        """From built tensors and ``[T, S]`` simulator inputs (tests, benchmarks).

        ``returns`` default to the tensors' realised returns; ``volatility`` to the std
        of the past ``vol_window`` of them; ``adv`` to ``dollar_volume`` itself.
        """
        T, S = tensors.n_rows, tensors.n_symbols
        if returns is None:
            t, s = np.indices((T, S))
            returns = tensors.realised_at(t.ravel(), s.ravel()).reshape(T, S)
        if volatility is None:
            past = pd.DataFrame(np.asarray(returns, dtype=np.float64)).shift(1)
            volatility = past.rolling(vol_window, min_periods=2).std().to_numpy()
        for name, value in (("returns", returns), ("volatility", volatility)):
            _check_grid(name, value, (T, S))
        for name, value in (("dollar_volume", dollar_volume), ("adv", adv), ("funding", funding)):
            if value is not None:
                _check_grid(name, value, (T, S))
        splits = dict(
            zip(
                ("train", "val", "test"),
                purged_splits(
                    T,
                    windows.val_fraction,
                    windows.test_fraction,
                    window=windows.window,
                    horizon=windows.horizon,
                    embargo=windows.embargo,
                ),
                strict=True,
            )
        )
        normaliser = None
        if windows.normalise == "train_zscore":
            normaliser = fit_normaliser(tensors, splits["train"].input_rows)
        return cls(
            tensors=tensors,
            returns=np.asarray(returns),
            volatility=np.asarray(volatility),
            splits=splits,
            periods_per_year=infer_periods_per_year(tensors.timestamps),
            normaliser=normaliser,
            dollar_volume=dollar_volume,
            adv=dollar_volume if adv is None else adv,
            funding=funding,
        )

    # ----------------------------------------------------------------------------------
    # Episodes
    # ----------------------------------------------------------------------------------

    def start_rows(self, split: str, window: int, length: int) -> np.ndarray:
        """int64: the rows an episode of ``length`` bars may start at in ``split``.

        Every bar t of the episode is an end row of the split with ``window`` rows of
        history, its return t → t+1 lies before the split's purge limit, the row after
        the last bar exists (the episode's final observation), and at the first bar at
        least one symbol has a complete feature row.
        """
        T = self.tensors.n_rows
        if split not in SPLITS:
            raise ValueError(f"reinforcement.env.split={split!r}: use one of {', '.join(SPLITS)}")
        if split == "all":
            rows, limit = range(window - 1, T), T
        else:
            rows, limit = self.splits[split].rows, self.splits[split].target_limit
        lo = max(rows.start, window - 1)
        hi = min(rows.stop - length, limit - 1 - length, T - 1 - length)
        starts = np.arange(lo, hi + 1, dtype=np.int64)
        starts = starts[np.asarray(self.tensors.mask, dtype=bool)[starts].any(axis=1)]
        if not len(starts):
            raise ValueError(
                f"reinforcement.env.episode_length={length} does not fit in the {split} rows "
                f"{rows.start}..{rows.stop - 1} ({len(rows)} bars with window {window}) — "
                "shorten the episode, pick another reinforcement.env.split, or load more history"
            )
        return starts

    def bar_tensors(self, num_regimes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """CPU tensors of what a step reads: ``[T, S, 5]`` float32 simulator inputs
        (:data:`BAR_FIELDS`; NaN kept only in returns), ``present`` ``[T, S]``, the regime
        label clipped to ``0 .. num_regimes-1`` and the market state's volatility."""
        T, S = self.returns.shape
        columns = []
        for name in BAR_FIELDS:
            value = getattr(self, name)
            value = np.zeros((T, S)) if value is None else np.asarray(value, dtype=np.float64)
            # NaN σ / volume / ADV / funding charge nothing, as in simulate_execution
            columns.append(value if name == "returns" else np.nan_to_num(value, nan=0.0))
        bars = torch.as_tensor(np.stack(columns, axis=-1), dtype=torch.float32)
        present = torch.as_tensor(np.asarray(self.tensors.present, dtype=bool))
        tensors = self.tensors
        regime = np.zeros((T, S), dtype=np.int64) if tensors.regimes is None else tensors.regimes
        regime = torch.as_tensor(np.asarray(regime), dtype=torch.long).clamp(0, num_regimes - 1)
        # the market state's volatility: the raw realised_vol_* input training embeds, else σ
        column = volatility_column(tensors.feature_names)
        if column is None:
            state_vol = bars[:, :, 1]
        else:
            raw = np.asarray(tensors.inputs[:, :, column], dtype=np.float32) * tensors.mask
            state_vol = torch.as_tensor(np.nan_to_num(raw, nan=0.0).clip(min=0.0))
        return bars, present, regime, state_vol

    def check_frictions(self, cfg: SimulationConfig) -> None:
        """Refuse frictions whose market inputs are missing, naming the option (at build time)."""
        if cfg.participation_cap is not None and self.dollar_volume is None:
            raise ValueError(
                "simulation.participation_cap needs per-bar dollar volume: add a dollar_volume "
                "column (or volume and close) or set participation_cap=null"
            )
        if cfg.impact_coef and self.adv is None:
            raise ValueError(
                "simulation.impact_coef needs average dollar volume: add a dollar_volume column "
                "(or volume and close) or set impact_coef=0"
            )

    def start_volatility(self) -> np.ndarray:
        """float64 ``[T]``: the market's σ at each row, the mean of the symbols' σ at t.

        σ at t is known at t (:attr:`volatility`), so ranking start rows by it looks at
        nothing later than the start; NaN where no symbol's σ is known yet.
        """
        vol = np.asarray(self.volatility, dtype=np.float64)
        known = np.isfinite(vol)
        count = known.sum(axis=1)
        total = np.where(known, vol, 0.0).sum(axis=1)
        return np.divide(total, count, out=np.full(len(vol), np.nan), where=count > 0)


def _check_grid(name: str, value: np.ndarray, shape: tuple[int, int]) -> None:
    if np.shape(value) != shape:
        raise ValueError(f"{name} must be [T, S] = {list(shape)}, got {list(np.shape(value))}")
