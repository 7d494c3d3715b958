"""Every registered feature is causal: its value at t depends on bars up to t only.

Two checks per feature on a ragged multi-symbol panel (equities on session hours, crypto
24/7): (1) scramble every input after t — prices, volumes, side-table columns — and (2)
drop every row after t. Neither may change a single value at or before t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.features import REGISTRY, FeaturePipeline
from tests.features.feature_panels import ragged_panel, with_columns

_SPLIT = 0.6  # t sits at 60 % of the panel's time span


def _inputs() -> list[str]:
    return sorted({c for spec in REGISTRY for c in spec.inputs if c != "timestamp"})


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    base = ragged_panel(rows=300)
    return with_columns(base, [c for c in _inputs() if c not in base])


def _scrambled_after(panel: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    later = panel.index.get_level_values("timestamp") > cutoff
    rng = np.random.default_rng(11)
    noisy = panel.copy()
    factor = rng.uniform(0.5, 2.0, (int(later.sum()), 1))  # positive: prices stay valid
    noisy.loc[later] = noisy.loc[later].to_numpy() * factor
    return noisy


@pytest.mark.parametrize("group", [spec.name for spec in REGISTRY])
def test_feature_is_causal(panel, group):
    stamps = panel.index.get_level_values("timestamp")
    cutoff = stamps[int(len(stamps) * _SPLIT)]
    pipeline = FeaturePipeline(names=[group])
    full = pipeline.transform_panel(panel)[pipeline.output_names]
    assert pipeline.last_report.computed == pipeline.output_names  # nothing skipped
    assert full.notna().to_numpy().any()

    upto = stamps <= cutoff
    scrambled = pipeline.transform_panel(_scrambled_after(panel, cutoff))[pipeline.output_names]
    pd.testing.assert_frame_equal(scrambled[upto], full[upto], check_exact=True)
    # The scramble really reaches the later rows of at least one output column.
    assert not scrambled[~upto].equals(full[~upto]) or group == "calendar"

    truncated = pipeline.transform_panel(panel[upto])[pipeline.output_names]
    pd.testing.assert_frame_equal(truncated, full[upto], check_exact=True)
