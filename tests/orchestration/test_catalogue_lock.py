"""Two processes appending to one catalogue at once keep every row (the exclusive lock)."""

from __future__ import annotations

import multiprocessing as mp

import pandas as pd

from market_nn_plus_ultra.orchestration.catalogue import append_catalogue, read_catalogue

APPENDS = 8


def _append_many(path: str, worker: int) -> None:
    for k in range(APPENDS):
        append_catalogue(path, [{"sweep_id": f"w{worker}", "scenario": f"{worker}-{k}"}])


def test_concurrent_appends_keep_every_row(tmp_path):
    path = tmp_path / "catalogue.parquet"
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    frame = read_catalogue(path)
    assert len(frame) == 3 * APPENDS
    assert frame.groupby("sweep_id").size().to_dict() == {f"w{w}": APPENDS for w in range(3)}
    assert sorted(frame["scenario"]) == sorted(f"{w}-{k}" for w in range(3) for k in range(APPENDS))
    assert isinstance(frame, pd.DataFrame) and not list(tmp_path.glob(".*.tmp"))
