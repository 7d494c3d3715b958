"""Analyst feedback as offline-RL data: export the served actions, replay them with vetoes.

    export_feedback("outputs/feedback.parquet", service_db="outputs/service/service.db",
                    market_db="data/market.db", cost_bps=5.0)
    seeded = load_feedback("outputs/feedback.parquet", market, cfg.windows,
                           action_mode="continuous", gamma=0.99)
    ppo.replay.add(seeded.transitions)        # a PPO with off_policy.enabled

:func:`export_feedback` writes one row per served prediction (rejected requests left
out; a bar served twice by one model keeps the newest) with its observation *by
reference* — ``timestamp``, ``symbol``, ``model_version``, and in the file's metadata
the market database's path and SHA-256 — the served ``action``, the ``reward``
``action × realised_return − cost_bps/1e4 × |action − previous action|`` (the realised
return reported to ``/outcomes``, else the market database's next close) and the
annotations: ``veto`` (+ ``rationale``), ``anomaly``, ``annotation_ids``.

:func:`load_feedback` resolves the references on an :class:`~.market.EnvMarket` — the
fine-tune's own, so windows are the env's (same features, same normaliser, same
gather) — into :class:`~.buffer.Transitions`: one per (model version, bar), the symbols'
actions side by side with a ``known`` mask, ``veto`` flags, and discounted returns of
the portfolio reward (the mean over the known symbols) along runs of consecutive bars.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .._io import atomic_path
from ..config import WindowsConfig
from ..data.annotations import read_annotations
from ..data.prediction_log import read_predictions
from ..data.store import connect, list_tables, read_table
from .buffer import Transitions
from .market import EnvMarket
from .observe import WindowSource

__all__ = [
    "FEEDBACK_COLUMNS",
    "FEEDBACK_FORMAT",
    "FeedbackError",
    "FeedbackExport",
    "SeededFeedback",
    "export_feedback",
    "load_feedback",
]

log = logging.getLogger(__name__)

FEEDBACK_FORMAT = "plus-ultra-feedback"
_VERSION = 1
#: One row per served prediction (the Parquet columns, in order).
FEEDBACK_COLUMNS = {
    "timestamp": "string: the bar predicted from, ISO-8601 UTC (the observation's end row)",
    "symbol": "string: the symbol (the observation's column)",
    "model_version": "string: the served model's version",
    "request_id": "string: the /predict request that served it",
    "action": "float: the served position in [-1, 1] (after the guardrails)",
    "model_position": "float: the model's position before the guardrails",
    "realised_return": "float: simple return from the bar to the next one",
    "reward_source": "string: outcome (POST /outcomes) or market (the next close)",
    "cost": "float: cost_bps/1e4 × |action − previous action of the symbol and model|",
    "reward": "float: action × realised_return − cost",
    "veto": "bool: an analyst vetoed this action",
    "rationale": "string or null: the vetoes' rationales, joined by ' | '",
    "anomaly": "bool: an analyst flagged an anomaly",
    "annotation_ids": "list<int>: every annotation attached to the row",
}


class FeedbackError(ValueError):
    """A feedback dataset cannot be written or read; the message says why and the fix."""


@dataclass(frozen=True)
class FeedbackExport:
    """What :func:`export_feedback` wrote and what it left out."""

    path: Path
    rows: int
    vetoes: int
    anomalies: int
    annotated: int
    reward_sources: dict[str, int]
    rejected: int  # requests the guardrails rejected (nothing was served)
    no_reward: int  # predictions without a known next return (dropped)
    unmatched_annotations: int  # annotations that name no logged prediction


@dataclass(frozen=True)
class SeededFeedback:
    """Transitions resolved from a feedback file, and the rows that could not be."""

    transitions: Transitions
    rows: int
    used: int
    vetoed: int
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        left = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return (
            f"feedback: {self.used} of {self.rows} rows as {len(self.transitions)} transitions "
            f"({self.vetoed} vetoed actions){'; skipped ' + left if left else ''}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601").dt.as_unit("ns")


def _tables(path: Path) -> list[str]:
    with contextlib.closing(connect(path)) as con:
        return list_tables(con)


def _next_returns(market_db: Path, symbols: list[str]) -> pd.Series:
    """Simple return close(t) → close(next bar), indexed by (timestamp, symbol)."""
    if "series" not in _tables(market_db):
        raise FeedbackError(f"--market-db {market_db} has no series table to price the rewards")
    bars = read_table(market_db, "series", symbols=symbols)[["timestamp", "symbol", "close"]]
    bars = bars.sort_values(["symbol", "timestamp"])
    nxt = bars.groupby("symbol")["close"].shift(-1)
    bars["realised"] = nxt / bars["close"] - 1.0
    return bars.set_index(["timestamp", "symbol"])["realised"]


def _attach(predictions: pd.DataFrame, notes: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(prediction id, annotation) pairs: by request + symbol, else bar + symbol + model,
    else bar + symbol; and how many annotations matched nothing."""
    keys = predictions[["id", "request_id", "symbol", "model_version", "ts"]]
    notes = notes.assign(ts=_utc(notes["timestamp"]))
    by_request = notes["request_id"].notna()
    by_model = ~by_request & notes["model_version"].notna()
    parts = [
        notes[by_request].merge(
            keys.drop(columns=["ts", "model_version"]), on=["request_id", "symbol"]
        ),
        notes[by_model].merge(
            keys.drop(columns="request_id"), on=["ts", "symbol", "model_version"]
        ),
        notes[~by_request & ~by_model].merge(keys[["id", "symbol", "ts"]], on=["ts", "symbol"]),
    ]
    pairs = pd.concat(parts, ignore_index=True)
    unmatched = len(notes) - pairs["annotation_id"].nunique()
    return pairs, unmatched


def _annotation_columns(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """veto / rationale / anomaly / annotation_ids per row of ``frame`` (by its ``cell``)."""
    pairs = pairs.merge(frame[["id", "cell"]], on="id")
    grouped = pairs.groupby("cell")
    veto = grouped["kind"].agg(lambda k: bool((k == "veto").any()))
    anomaly = grouped["kind"].agg(lambda k: bool((k == "anomaly").any()))
    why = pairs[pairs["kind"] == "veto"].groupby("cell")["rationale"]
    rationale = why.agg(lambda r: " | ".join(sorted({str(v) for v in r.dropna()})) or None)
    ids = grouped["annotation_id"].agg(lambda a: sorted({int(v) for v in a}))
    out = pd.DataFrame(index=frame["cell"].unique())
    out["veto"] = veto.reindex(out.index, fill_value=False).astype(bool)
    out["anomaly"] = anomaly.reindex(out.index, fill_value=False).astype(bool)
    out["rationale"] = rationale.reindex(out.index)
    out["annotation_ids"] = ids.reindex(out.index)
    out["annotation_ids"] = out["annotation_ids"].map(lambda v: v if isinstance(v, list) else [])
    return out


def export_feedback(
    output: str | Path,
    *,
    service_db: str | Path,
    annotations_db: str | Path | None = None,
    market_db: str | Path | None = None,
    cost_bps: float = 0.0,
    model_version: str | None = None,
    symbols: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    annotated_only: bool = False,
) -> FeedbackExport:
    """Write the offline-RL dataset (:data:`FEEDBACK_COLUMNS`) to ``output`` (Parquet,
    atomically) from the prediction log in ``service_db`` and the annotations in
    ``annotations_db`` (default: ``service_db``). Rewards use the outcomes the service
    recorded, else the next close in ``market_db`` (which the observations reference).
    """
    service_db = Path(service_db)
    annotations_db = Path(annotations_db) if annotations_db is not None else service_db
    logged = read_predictions(
        service_db, symbols=symbols, model_version=model_version, since=since, until=until
    )
    if logged.empty:
        raise FeedbackError(
            f"{service_db} logs no prediction to export (filters: model_version="
            f"{model_version}, symbols={symbols}, since={since}, until={until}) — serve "
            "predictions first, or point --service-db at the service's database"
        )
    rejected = int((logged["action"] == "reject").sum())
    frame = logged[logged["action"] != "reject"].copy()
    frame["ts"] = _utc(frame["timestamp"])
    notes = read_annotations(annotations_db) if annotations_db.is_file() else None
    pairs, unmatched = (
        _attach(frame, notes) if notes is not None and len(notes) else (pd.DataFrame(), 0)
    )
    frame = frame.sort_values("id")  # oldest first: the newest of a bar wins below
    frame["cell"] = frame.groupby(["model_version", "symbol", "ts"]).ngroup()
    if len(pairs):
        marks = _annotation_columns(frame, pairs)
    else:
        marks = pd.DataFrame(index=frame["cell"].unique())
        marks["veto"], marks["anomaly"], marks["rationale"] = False, False, None
        marks["annotation_ids"] = [[] for _ in range(len(marks))]
    frame = frame.drop_duplicates("cell", keep="last").join(marks, on="cell")
    frame = frame.sort_values(["model_version", "symbol", "ts"]).reset_index(drop=True)
    frame["reward_source"] = np.where(frame["realised_return"].notna(), "outcome", None)
    digest = None
    if market_db is not None:
        market_db = Path(market_db)
        closes = _next_returns(market_db, sorted(set(frame["symbol"])))
        fill = closes.reindex(pd.MultiIndex.from_arrays([frame["ts"], frame["symbol"]]))
        missing = frame["realised_return"].isna().to_numpy() & fill.notna().to_numpy()
        frame.loc[missing, "realised_return"] = fill.to_numpy()[missing]
        frame.loc[missing, "reward_source"] = "market"
        digest = _sha256(market_db)
    previous = frame.groupby(["model_version", "symbol"])["position"].shift(1).fillna(0.0)
    frame["action"] = frame["position"].astype(float)
    frame["cost"] = cost_bps / 1e4 * (frame["action"] - previous).abs()
    frame["reward"] = frame["action"] * frame["realised_return"] - frame["cost"]
    no_reward = int(frame["realised_return"].isna().sum())
    frame = frame[frame["realised_return"].notna()].copy()
    if annotated_only:
        frame = frame[frame["annotation_ids"].map(len) > 0]
    frame["timestamp"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    table = pa.Table.from_pandas(frame[list(FEEDBACK_COLUMNS)], preserve_index=False)
    meta = {
        "format": FEEDBACK_FORMAT,
        "version": _VERSION,
        "market_db": None if market_db is None else str(Path(market_db).resolve()),
        "market_db_sha256": digest,
        "service_db": str(service_db.resolve()),
        "annotations_db": str(annotations_db.resolve()),
        "cost_bps": cost_bps,
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"plus_ultra": json.dumps(meta).encode()}
    )
    output = Path(output)
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return FeedbackExport(
        path=output,
        rows=len(frame),
        vetoes=int(frame["veto"].sum()),
        anomalies=int(frame["anomaly"].sum()),
        annotated=int((frame["annotation_ids"].map(len) > 0).sum()),
        reward_sources={str(k): int(v) for k, v in frame["reward_source"].value_counts().items()},
        rejected=rejected,
        no_reward=no_reward,
        unmatched_annotations=int(unmatched),
    )


# --------------------------------------------------------------------------------------
# Loading into the replay buffer
# --------------------------------------------------------------------------------------


def read_feedback(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """The rows and the metadata of a feedback file; :class:`FeedbackError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(
            f"feedback dataset {path} does not exist — write one with `plus-ultra annotate export`"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise FeedbackError(f"{path} is not a Parquet file ({err})") from None
    raw = (table.schema.metadata or {}).get(b"plus_ultra")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FEEDBACK_FORMAT:
        raise FeedbackError(
            f"{path} is not a feedback dataset (no {FEEDBACK_FORMAT!r} metadata) — write it "
            "with `plus-ultra annotate export`; plain transitions load with load_transitions"
        )
    frame = table.to_pandas()
    missing = [
        c
        for c in ("timestamp", "symbol", "model_version", "action", "reward", "veto")
        if c not in frame
    ]
    if missing:
        raise FeedbackError(
            f"{path}: missing column(s) {missing}. Columns in file: {sorted(frame)}"
        )
    return frame, meta


def _check_reference(meta: dict, market_db: Path | None) -> None:
    """Warn when the fine-tune reads another market database than the export referenced."""
    recorded = meta.get("market_db")
    if recorded is None or market_db is None or Path(recorded) == Path(market_db).resolve():
        return
    same = (
        meta.get("market_db_sha256") == _sha256(Path(market_db))
        if Path(market_db).is_file()
        else False
    )
    if not same:
        log.warning(
            "the feedback dataset's observations refer to %s, the fine-tune reads %s (a "
            "different file): windows come from the fine-tune's data",
            recorded,
            market_db,
        )


def _returns(reward: np.ndarray, episode_start: np.ndarray, gamma: float) -> np.ndarray:
    out, acc = np.empty_like(reward), 0.0
    for i in range(len(reward) - 1, -1, -1):
        nxt_starts = i + 1 >= len(reward) or episode_start[i + 1]
        acc = reward[i] + (0.0 if nxt_starts else gamma * acc)
        out[i] = acc
    return out


def load_feedback(
    path: str | Path,
    market: EnvMarket,
    windows: WindowsConfig,
    *,
    action_mode: str = "continuous",
    gamma: float = 0.99,
    window: int | None = None,
    market_state: bool = False,
    num_regimes: int = 8,
    device: str | torch.device = "cpu",
    market_db: str | Path | None = None,
) -> SeededFeedback:
    """Resolve a feedback dataset on ``market`` into replay transitions.

    Rows whose bar or symbol the market lacks, or whose bar has fewer than ``window``
    (default ``windows.window``) rows of history, are skipped and counted. Actions are
    stored as the policy samples them (``atanh`` of the position; discrete: the nearest
    of short/flat/long as class 0/1/2). The portfolio part of an observation holds the
    previous bar's action (0 at a run's start), the run's equity and no unrealised PnL.
    """
    frame, meta = read_feedback(path)
    _check_reference(meta, Path(market_db) if market_db is not None else None)
    tensors = market.tensors
    W = int(window or windows.window)
    stamps = pd.DatetimeIndex(_utc(frame["timestamp"]))
    t = tensors.timestamps.get_indexer(stamps)
    s = pd.Index(tensors.symbols).get_indexer(frame["symbol"].astype(str))
    skipped = {
        "outside the market's bars": int((t < 0).sum()),
        "of symbols the policy does not trade": int(((t >= 0) & (s < 0)).sum()),
        f"with under {W} bars of history": int(((t >= 0) & (s >= 0) & (t < W - 1)).sum()),
    }
    keep = (t >= W - 1) & (s >= 0)
    rows = frame[keep].assign(t=t[keep], s=s[keep]).sort_values(["model_version", "t"])
    rows = rows.drop_duplicates(["model_version", "t", "s"], keep="last")
    if rows.empty:
        raise FeedbackError(
            f"{path}: none of its {len(frame)} rows falls on the market's bars and symbols "
            f"({', '.join(f'{n} {why}' for why, n in skipped.items() if n)}) — export from "
            "the service that served this model's data, or fine-tune on that database"
        )
    cell = rows.groupby(["model_version", "t"], sort=False).ngroup().to_numpy()
    n, S = int(cell.max()) + 1, tensors.n_symbols
    positions = np.zeros((n, S), np.float32)
    known, veto = np.zeros((n, S), bool), np.zeros((n, S), bool)
    positions[cell, rows["s"]] = rows["action"].to_numpy(np.float32).clip(-1, 1)
    known[cell, rows["s"]] = True
    veto[cell, rows["s"]] = rows["veto"].to_numpy(bool)
    reward = np.zeros(n)
    np.add.at(reward, cell, rows["reward"].to_numpy(np.float64))
    reward /= np.maximum(known.sum(1), 1)  # the portfolio: mean over the known symbols
    first = rows.drop_duplicates(["model_version", "t"])
    bar = first["t"].to_numpy(np.int64, copy=True)
    version = first["model_version"].to_numpy()
    start = np.ones(n, bool)
    start[1:] = (bar[1:] != bar[:-1] + 1) | (version[1:] != version[:-1])
    returns = _returns(reward, start, gamma).astype(np.float32)
    held = np.where(start[:, None], 0.0, np.roll(positions, 1, axis=0)).astype(np.float32)
    equity = np.ones(n)
    for i in range(1, n):
        equity[i] = 1.0 if start[i] else equity[i - 1] * (1.0 + reward[i - 1])
    dev = torch.device(device)
    source = WindowSource(market, windows, dev)
    if source.max_window != W:
        source.resize(W)
    rows_t = torch.as_tensor(bar, dtype=torch.long, device=dev)
    portfolio = np.stack([held, np.repeat(equity[:, None], S, 1), np.zeros((n, S))], -1)
    obs = {
        "window": source.gather(rows_t),
        "portfolio": torch.as_tensor(portfolio, dtype=torch.float32, device=rows_t.device),
    }
    if market_state:
        _, _, regime, state_vol = market.bar_tensors(num_regimes)
        obs["regime"] = regime[torch.as_tensor(bar)].to(rows_t.device)
        obs["volatility"] = state_vol[torch.as_tensor(bar)].to(rows_t.device)
    pos = torch.as_tensor(positions)
    if action_mode == "discrete":
        actions = (pos.round().clamp(-1, 1) + 1).long()
    else:
        actions = torch.atanh(pos.clamp(-1 + 1e-6, 1 - 1e-6))
    transitions = Transitions(
        obs,
        actions.to(rows_t.device),
        torch.as_tensor(returns, device=rows_t.device),
        torch.as_tensor(known, device=rows_t.device),
        torch.as_tensor(veto, device=rows_t.device),
    )
    return SeededFeedback(transitions, len(frame), int(keep.sum()), int(veto.sum()), skipped)
