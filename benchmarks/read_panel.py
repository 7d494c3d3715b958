"""Benchmark: SQLite → pandas panel, side by side with pandas.read_sql and plain Parquet.

Builds (once) a database of ``--symbols`` × ``--rows`` OHLCV bars with the project's
DDL, then times in fresh subprocesses (so peak memory is per method):

- ``read_sql``:     ``pandas.read_sql("SELECT * FROM series")`` — the usual way;
- ``cold``:         ``read_panel(cache=False)`` — bulk Arrow reads, parallel per symbol;
- ``cached``:       ``read_panel()`` with a warm Parquet cache;
- ``parquet``:      ``pyarrow.parquet.read_table(...).to_pandas()`` of the same rows.

    python benchmarks/read_panel.py --symbols 10 --rows 1000000 --repeats 3

Writes ``benchmarks/results/read_panel.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, sys, time, sqlite3
import pandas as pd, pyarrow.parquet as pq
method, db, pq_path, cache_dir = sys.argv[1:5]
from market_nn_plus_ultra.data.panel import read_panel
base_mb = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
t = time.perf_counter()
if method == "read_sql":
    with sqlite3.connect(db) as con:
        df = pd.read_sql("SELECT * FROM series", con)
elif method == "cold":
    df = read_panel(db, cache=False)
elif method == "cached":
    df = read_panel(db, cache_dir=cache_dir)
elif method == "parquet":
    df = pq.read_table(pq_path).to_pandas()
seconds = time.perf_counter() - t
# VmHWM is this process's own high-water mark (ru_maxrss would carry the parent's over exec).
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
peak_mb = int(status) / 1024 - base_mb
print(json.dumps({"seconds": seconds, "rows": len(df), "peak_mb": peak_mb}))
"""


def build_database(path: Path, n_symbols: int, n_rows: int) -> None:
    from market_nn_plus_ultra.data.schema import ddl

    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    for stmt in ddl():
        con.execute(stmt)
    stamps = pd.date_range("2001-01-01", periods=n_rows, freq="min", tz="UTC")
    text = np.char.add(
        np.datetime_as_string(stamps.tz_localize(None).to_numpy("datetime64[s]"), unit="s"), "Z"
    ).tolist()
    rng = np.random.default_rng(0)
    for i in range(n_symbols):
        sym = f"SYM{i:03d}"
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n_rows)))
        opn = close * (1 + rng.normal(0, 2e-4, n_rows))
        high = np.maximum(opn, close) * 1.001
        low = np.minimum(opn, close) * 0.999
        vol = rng.integers(100, 10_000, n_rows).astype(float)
        con.executemany(
            "INSERT INTO series VALUES (?,?,?,?,?,?,?)",
            zip(text, [sym] * n_rows, opn, high, low, close, vol, strict=True),
        )
        con.execute("INSERT INTO assets(asset_id, symbol) VALUES (?, ?)", (i, sym))
        con.commit()
        print(f"  built {sym}", file=sys.stderr)
    con.close()
    tmp.replace(path)


def run(method: str, db: Path, pq_path: Path, cache_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, method, str(db), str(pq_path), str(cache_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per symbol")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--read-sql-repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=HERE / ".data")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "read_panel.md")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from market_nn_plus_ultra.data.panel import read_panel

    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"bench_{args.symbols}x{args.rows}.db"
    pq_path = args.workdir / f"bench_{args.symbols}x{args.rows}.parquet"
    cache_dir = args.workdir / "cache"
    print(f"database {db}", file=sys.stderr)
    build_database(db, args.symbols, args.rows)
    run("cached", db, pq_path, cache_dir)  # warms the cache (in a child: keeps this process small)
    if not pq_path.exists():
        panel = read_panel(db, cache_dir=cache_dir)
        pq.write_table(
            __import__("pyarrow").Table.from_pandas(panel.reset_index(), preserve_index=False),
            pq_path,
        )
        del panel

    results = {}
    for method, repeats in (
        ("read_sql", args.read_sql_repeats),
        ("cold", args.repeats),
        ("cached", args.repeats),
        ("parquet", args.repeats),
    ):
        runs = [run(method, db, pq_path, cache_dir) for _ in range(repeats)]
        results[method] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs),
            "rows": runs[0]["rows"],
        }
        print(f"{method:9s} {results[method]}", file=sys.stderr)

    base = results["read_sql"]["seconds"]
    lines = [
        "# read_panel benchmark",
        "",
        f"Data: {args.symbols} symbols × {args.rows:,} rows = {args.symbols * args.rows:,} "
        f"OHLCV rows in SQLite ({db.stat().st_size / 2**30:.2f} GiB).",
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
        f"Median of {args.repeats} runs (read_sql: {args.read_sql_repeats}), "
        "each in a fresh process; OS page cache warm.",
        "",
        "| method | seconds | rows/s | peak memory over imports (MiB) | vs read_sql |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, r in results.items():
        lines.append(
            f"| {method} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_mb']:,.0f} | {base / r['seconds']:.1f}× |"
        )
    ratio = results["cached"]["seconds"] / results["parquet"]["seconds"]
    lines += ["", f"Cached read_panel / plain Parquet: {ratio:.2f}×."]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
