"""The ``benchmark_return`` column of a predictions frame.

From the database's ``benchmarks`` table (index *levels* by name) when it has one: the
benchmark's simple return over (t, t+1] on its own bars, ``level[next bar] / level[t] - 1``,
placed on the predictions' timestamp t (NaN where the benchmark has no bar at t, and on
its last bar). Which series: the one named, else ``equal_weight`` when present, else the
first name in alphabetical order. Without a ``benchmarks`` table: the equal-weight mean of
the predicted symbols' ``realised_return`` at each t (symbols with an unknown return left
out).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.store import connect, list_tables, read_table

__all__ = ["DEFAULT_BENCHMARK", "benchmark_returns"]

log = logging.getLogger(__name__)

DEFAULT_BENCHMARK = "equal_weight"


def _levels(db: Path) -> pd.DataFrame | None:
    with contextlib.closing(connect(db)) as con:
        if "benchmarks" not in list_tables(con):
            return None
    table = read_table(db, "benchmarks")
    return table if len(table) else None


def _pick(names: list[str], name: str | None, db: Path) -> str:
    if name is None:
        return DEFAULT_BENCHMARK if DEFAULT_BENCHMARK in names else names[0]
    if name not in names:
        guess = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(
            f"{db}: benchmarks has no series named {name!r}.{hint} Names present: {names}."
        )
    return name


def benchmark_returns(frame: pd.DataFrame, db: str | Path, name: str | None = None) -> np.ndarray:
    """float64 ``(N,)`` benchmark return over (t, t+1] for each row of ``frame``.

    ``frame`` needs ``timestamp`` (UTC) and, for the equal-weight fallback,
    ``realised_return``. ``name``: a series of the ``benchmarks`` table (see the module
    docstring for the default); naming one the database lacks is an error.
    """
    db = Path(db)
    levels = _levels(db)
    if levels is None:
        if name is not None:
            raise ValueError(
                f"{db}: no `benchmarks` table to take benchmark {name!r} from — import one, or "
                "leave the benchmark unset to use the equal-weight mean of the symbols' returns"
            )
        mean = frame.groupby("timestamp", sort=False)["realised_return"].transform("mean")
        return mean.to_numpy(dtype=np.float64)
    chosen = _pick(sorted(levels["name"].astype(str).unique()), name, db)
    log.info("benchmark_return: series %r of %s", chosen, db)
    series = (
        levels.loc[levels["name"] == chosen].set_index("timestamp")["value"].sort_index()
    ).astype(np.float64)
    forward = series.shift(-1) / series - 1.0  # (t, t+1] on the benchmark's own bars
    stamps = pd.DatetimeIndex(frame["timestamp"])
    return forward.reindex(stamps).to_numpy(dtype=np.float64)
