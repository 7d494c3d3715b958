"""Guardrails on served positions, with the live book the path-dependent rules read.

Each prediction's positions go through :func:`~market_nn_plus_ultra.evaluation.guardrails.
apply_guardrails` — the rules and order of the backtests — on a frame of the bars served
before (the :class:`LiveBook`: positions as served, realised returns as reported to
``/outcomes``, the last ``service.guardrail_history`` bars) followed by this request's
bars. The cross-sectional rules (position, sector, factor, gross and net caps) act on the
request's bars; CVaR, drawdown and market-beta read the served history, so a live
drawdown flattens the book exactly as it would in a backtest of the served positions.

The turnover cap (rule 7) limits the move from the position *served last* for each
symbol: mean_s |target − held| above ``max_turnover`` moves every symbol the same
fraction ``cap / turnover`` of the way (a drawdown flatten is never slowed) — the
backtest's rule on one bar, with the live book's held positions.

``guardrails.on_breach`` is the de-risking action when any rule changed a position:
``cap`` serves the limited positions, ``flatten`` serves 0 for every breached symbol,
``reject`` serves nothing (HTTP 409 with the breaches).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import GuardrailsConfig
from ..evaluation.guardrails import BREACH_COLUMNS, apply_guardrails

__all__ = ["GuardResult", "Guardrails", "LiveBook"]

_TOL = 1e-12  # as the backtest's breach log: smaller changes are not breaches


class LiveBook:
    """Positions served and returns reported per (timestamp, symbol), newest bars kept."""

    def __init__(self, history: int) -> None:
        self.history = history
        self._cells: dict[str, dict[int, list[float]]] = {}  # symbol → ts ns → [pos, ret]
        self._lock = threading.Lock()

    def record_positions(self, stamps: np.ndarray, symbols: np.ndarray, pos: np.ndarray) -> None:
        """Remember served positions (``stamps`` int64 ns UTC)."""
        with self._lock:
            for t, s, p in zip(stamps.tolist(), symbols.tolist(), pos.tolist(), strict=True):
                cells = self._cells.setdefault(s, {})
                cell = cells.setdefault(t, [p, np.nan])
                cell[0] = p
                if len(cells) > 2 * self.history:  # trim rarely: amortised O(1)
                    for old in sorted(cells)[: len(cells) - self.history]:
                        del cells[old]

    def record_return(self, stamp: int, symbol: str, realised: float) -> None:
        """Remember the realised return of a served cell (ignored for unknown cells)."""
        with self._lock:
            cell = self._cells.get(symbol, {}).get(stamp)
            if cell is not None:
                cell[1] = realised

    def frame(self, before: int) -> pd.DataFrame:
        """The last ``history`` bars of every symbol before ``before`` (int64 ns)."""
        rows: list[tuple[int, str, float, float]] = []
        with self._lock:
            for symbol, cells in self._cells.items():
                stamps = sorted(t for t in cells if t < before)[-self.history :]
                rows.extend((t, symbol, *cells[t]) for t in stamps)
        stamps, symbols, pos, ret = zip(*rows, strict=True) if rows else ((), (), (), ())
        return pd.DataFrame(
            {
                "timestamp": pd.to_datetime(np.asarray(stamps, dtype=np.int64), utc=True),
                "symbol": np.asarray(symbols, dtype=object),
                "position": np.asarray(pos, dtype=np.float64),
                "realised_return": np.asarray(ret, dtype=np.float64),
            }
        )

    def held(self, symbols: np.ndarray, before: int) -> np.ndarray:
        """Each symbol's newest served position before ``before`` (0 when none)."""
        out = np.zeros(len(symbols))
        with self._lock:
            for i, symbol in enumerate(symbols.tolist()):
                stamps = [t for t in self._cells.get(symbol, {}) if t < before]
                if stamps:
                    out[i] = self._cells[symbol][max(stamps)][0]
        return out


@dataclass(frozen=True)
class GuardResult:
    """Served positions of one prediction: ``positions`` (aligned with the input frame),
    ``breaches`` (``BREACH_COLUMNS`` rows of this request's bars) and the ``action``."""

    positions: np.ndarray
    breaches: pd.DataFrame
    action: str  # none | cap | flatten | reject


class Guardrails:
    """The configured limits and the live book, applied to each prediction."""

    def __init__(
        self, cfg: GuardrailsConfig, book: LiveBook, sectors: Mapping[str, str] | None = None
    ) -> None:
        self.cfg = cfg
        self.book = book
        self.sectors = sectors
        self._rules = cfg.model_copy(update={"max_turnover": None})
        self._path = (
            cfg.cvar_limit is not None
            or cfg.drawdown_stop is not None
            or ("market_beta" in cfg.factor_caps and "market_beta" not in cfg.factor_loadings)
        )
        caps = (cfg.max_gross, cfg.max_net, cfg.max_sector_gross, cfg.max_turnover)
        self._position_only = (
            all(c is None for c in caps)
            and not (cfg.sector_caps or cfg.factor_caps)
            and not self._path
        )

    def apply(
        self,
        frame: pd.DataFrame | Callable[[], pd.DataFrame],
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> GuardResult:
        """Guard the positions of ``frame`` (timestamp, symbol, position; sorted).
        ``columns``: the same columns as numpy arrays (``timestamp`` int64 ns), when the
        caller has them; ``frame`` may then be a function that builds the frame, called
        only by a rule that needs it (the default cap never does unless it bites)."""
        if callable(frame):
            frame = _Lazy(frame)
        if columns is None:
            pos = frame["position"].to_numpy(dtype=np.float64)
        else:
            pos = np.asarray(columns["position"], dtype=np.float64)
        if self._position_only:
            after, breaches = self._cap_positions(frame, pos)
        else:
            frame = frame.value if isinstance(frame, _Lazy) else frame
            after, breaches = self._full(frame, pos)
        if self.cfg.max_turnover is not None:
            frame = frame.value if isinstance(frame, _Lazy) else frame
            after, more = self._turnover(frame, after, breaches)
            breaches = pd.concat([breaches, more], ignore_index=True) if len(more) else breaches
        if not len(breaches):
            return GuardResult(after, breaches, "none")
        action = self.cfg.on_breach
        if action == "flatten":
            hit = frame["symbol"].isin(set(breaches["symbol"])).to_numpy()
            after = np.where(hit, 0.0, after)
        return GuardResult(after, breaches, action)

    def record(
        self,
        frame: pd.DataFrame | None,
        served: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Put the served positions in the live book (``columns`` as in :meth:`apply`;
        with them, ``frame`` is not read)."""
        if columns is None:
            stamps, symbols = _ns(frame["timestamp"]), frame["symbol"].to_numpy(dtype=object)
        else:
            stamps, symbols = columns["timestamp"], columns["symbol"]
        self.book.record_positions(stamps, symbols, served)

    # ----------------------------------------------------------------------------------

    def _cap_positions(
        self, frame: pd.DataFrame, pos: np.ndarray
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Rule 1 alone (the default config): ``apply_guardrails``' result without pandas."""
        cap = self.cfg.max_position
        if cap is None:
            return pos, _no_breaches()
        after = np.clip(pos, -cap, cap)
        changed = np.abs(after - pos) > _TOL
        if not changed.any():
            return after, _no_breaches()
        detail = [f"|position| {round(v, 4)} > {cap:g}" for v in pos[changed]]
        return after, pd.DataFrame(
            {
                "timestamp": frame["timestamp"].to_numpy()[changed],
                "symbol": frame["symbol"].to_numpy()[changed],
                "rule": "max_position",
                "before": pos[changed],
                "after": after[changed],
                "detail": detail,
            }
        )

    def _full(self, frame: pd.DataFrame, pos: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """Every rule but turnover, over the live book's history and this request's bars."""
        now = frame[["timestamp", "symbol"]].assign(position=pos, realised_return=np.nan)
        if self._path:
            first = int(_ns(frame["timestamp"]).min())
            past = self.book.frame(before=first)
            now = pd.concat([past, now], ignore_index=True) if len(past) else now
        adjusted, breaches = apply_guardrails(now, self._rules, self.sectors)
        # apply_guardrails sorts by (timestamp, symbol) and every book row is older than
        # this request's bars, so they are its last rows, in the request's (sorted) order
        tail = adjusted.iloc[len(adjusted) - len(frame) :]
        if np.array_equal(tail["symbol"].to_numpy(), frame["symbol"].to_numpy()) and (
            np.array_equal(_ns(tail["timestamp"]), _ns(frame["timestamp"]))
        ):
            first = _ns(frame["timestamp"]).min()
            mine = _ns(breaches["timestamp"]) >= first if len(breaches) else np.zeros(0, bool)
            served = tail["position"].to_numpy(dtype=np.float64)
            return served, breaches[mine].reset_index(drop=True)
        keys = pd.MultiIndex.from_frame(frame[["timestamp", "symbol"]])  # an unsorted frame
        served = adjusted.set_index(["timestamp", "symbol"])["position"].reindex(keys)
        mine = pd.MultiIndex.from_frame(breaches[["timestamp", "symbol"]]).isin(keys)
        return served.to_numpy(dtype=np.float64), breaches[mine].reset_index(drop=True)

    def _turnover(
        self, frame: pd.DataFrame, pos: np.ndarray, breaches: pd.DataFrame
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Rule 7 on this request's bars against the positions served before them."""
        cap = float(self.cfg.max_turnover)
        stamps = _ns(frame["timestamp"])
        symbols = frame["symbol"].to_numpy(dtype=object)
        flat = frame["symbol"].isin(
            set(breaches.loc[breaches["rule"] == "drawdown_stop", "symbol"])
        )
        after = pos.copy()
        blocks = []
        for t in np.unique(stamps):
            rows = np.flatnonzero(stamps == t)
            held = self.book.held(symbols[rows], int(t))
            target = pos[rows]
            turnover = float(np.mean(np.abs(target - held)))
            if turnover <= cap:
                continue
            moved = held + (target - held) * cap / turnover
            moved = np.where(flat.to_numpy()[rows], 0.0, moved)
            after[rows] = moved
            changed = np.abs(moved - target) > _TOL
            blocks.append(
                pd.DataFrame(
                    {
                        "timestamp": frame["timestamp"].to_numpy()[rows][changed],
                        "symbol": symbols[rows][changed],
                        "rule": "max_turnover",
                        "before": target[changed],
                        "after": moved[changed],
                        "detail": f"turnover {round(turnover, 4)} > {cap:g}: trades scaled",
                    }
                )
            )
        return after, pd.concat(blocks, ignore_index=True) if blocks else _no_breaches()


class _Lazy:
    """A frame built on first use (``value``); reading a column builds it too."""

    def __init__(self, build: Callable[[], pd.DataFrame]) -> None:
        self._build = build
        self._value: pd.DataFrame | None = None

    @property
    def value(self) -> pd.DataFrame:
        if self._value is None:
            self._value = self._build()
        return self._value

    def __getitem__(self, key: str) -> pd.Series:
        return self.value[key]


def _ns(stamps: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch (UTC), whatever the column's unit."""
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


_EMPTY = pd.DataFrame({c: pd.Series(dtype=object) for c in BREACH_COLUMNS})


def _no_breaches() -> pd.DataFrame:
    """An empty breach log (a copy of one built once: building it costs ~0.25 ms)."""
    return _EMPTY.copy()
