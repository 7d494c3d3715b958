"""Small panels shared by the feature tests (built in memory, deterministic)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from market_nn_plus_ultra.data.fixtures import generate_fixture


def ragged_panel(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Two equities on New York session hours and one crypto pair 24/7, hourly bars.

    Indexed (timestamp, symbol) and sorted by time, as ``read_panel`` returns it; the
    symbols' calendars differ, so most timestamps hold only some of the symbols.
    """
    tables = generate_fixture(["SPY", "QQQ", "BTC-USD"], rows=rows, freq="1h", seed=seed)
    series = tables["series"]
    panel = series.set_index(["timestamp", "symbol"]).sort_index()
    return panel[["open", "high", "low", "close", "volume"]].astype(np.float64)


def with_columns(panel: pd.DataFrame, names: list[str], seed: int = 0) -> pd.DataFrame:
    """``panel`` plus positive random columns ``names`` (stand-ins for joined side tables)."""
    rng = np.random.default_rng(seed)
    extra = {name: rng.gamma(2.0, 1.0, len(panel)) for name in names if name not in panel}
    return panel.assign(**extra)
