"""Registry: declaration, custom features by decorator, selection, hints, skips, docs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from market_nn_plus_ultra.features import (
    REGISTRY,
    FeatureError,
    FeaturePipeline,
    FeatureRegistry,
    features_markdown,
    write_feature_docs,
)
from tests.features.feature_panels import ragged_panel

DEFAULT_NAMES = [
    "log_return_1", "velocity_5", "rsi_14", "macd", "macd_signal", "macd_hist", "bb_width_20",
    "atr_14", "volume_z_20", "realised_vol_20", "skew_20", "kurt_20", "regime_bull_prob",
    "fft_energy_low", "fft_energy_mid", "fft_energy_high", "hour_sin", "hour_cos", "dow_sin",
    "dow_cos",
]  # fmt: skip


def test_default_selection_is_the_documented_feature_set():
    assert [o for outs in REGISTRY.select().values() for o in outs] == DEFAULT_NAMES
    assert REGISTRY.get("macd_hist").name == "macd"
    assert REGISTRY.get("macd").outputs == ("macd", "macd_signal", "macd_hist")
    assert "alternative" in REGISTRY.tags()  # alternative-data features register too
    assert all(not REGISTRY.get(n).default for n in REGISTRY.select(tags=["alternative"]))


def test_select_by_tag_and_name():
    assert REGISTRY.select(tags=["volatility"]) == {
        "bb_width_20": ("bb_width_20",),
        "atr_14": ("atr_14",),
        "realised_vol_20": ("realised_vol_20",),
    }
    # A single output of a group keeps only that output; order follows registration.
    assert REGISTRY.select(names=["macd_signal", "rsi_14"]) == {
        "rsi_14": ("rsi_14",),
        "macd": ("macd_signal",),
    }
    both = REGISTRY.select(names=["log_return_1"], tags=["spectral"])
    assert list(both) == ["log_return_1", "fft_energy"]
    pipeline = FeaturePipeline(names=["macd_signal"])
    assert pipeline.output_names == ["macd_signal"]


def test_unknown_names_tags_and_parameters_suggest_the_fix():
    with pytest.raises(FeatureError, match="unknown feature `rsi14` — did you mean `rsi_14`"):
        REGISTRY.select(names=["rsi14"])
    with pytest.raises(FeatureError, match=r"unknown feature tag `volatilty`.*`volatility`"):
        REGISTRY.select(tags=["volatilty"])
    with pytest.raises(FeatureError, match=r"unknown parameter `periood`.*`period`"):
        FeaturePipeline(names=["rsi_14"], params={"rsi_14": {"periood": 10}})


def test_custom_feature_by_decorator_computes_per_symbol():
    registry = REGISTRY.copy()

    @registry.register(inputs=("high", "low", "close"), tags=("custom",), warmup=lambda w: w - 1)
    def range_position(high, low, close, *, w: int = 3):
        """Where the close sits in its trailing ``w``-bar range (0 = low, 1 = high)."""
        from numpy.lib.stride_tricks import sliding_window_view

        out = np.full(len(close), np.nan)
        if len(close) >= w:
            hi = sliding_window_view(high, w).max(axis=1)
            lo = sliding_window_view(low, w).min(axis=1)
            out[w - 1 :] = (close[w - 1 :] - lo) / (hi - lo)
        return out

    spec = registry.get("range_position")
    assert spec.params == {"w": 3} and spec.tags == ("custom",) and spec.warmup_rows() == 2
    assert spec.summary.startswith("Where the close sits")
    assert "range_position" not in REGISTRY  # the copy leaves the default registry alone

    panel = ragged_panel(rows=60)
    pipeline = FeaturePipeline(registry, tags=["custom"], params={"range_position": {"w": 4}})
    out = pipeline.transform_panel(panel)
    assert pipeline.last_report.warmup == {"range_position": 3}
    spy = out.xs("SPY", level="symbol")
    t = 10
    rows = spy.iloc[t - 3 : t + 1]
    expected = (rows["close"].iloc[-1] - rows["low"].min()) / (
        rows["high"].max() - rows["low"].min()
    )
    assert spy["range_position"].iloc[t] == pytest.approx(expected)
    assert np.isnan(spy["range_position"].iloc[:3]).all()


def test_bad_declarations_are_rejected():
    registry = FeatureRegistry()
    with pytest.raises(FeatureError, match="snake_case"):
        registry.register("RSI", inputs=("close",), warmup=0)(lambda close: close)
    registry.register("twice", inputs=("close",), warmup=0)(lambda close: close)
    with pytest.raises(FeatureError, match=r"already registered.*replace=True"):
        registry.register("twice", inputs=("close",), warmup=0)(lambda close: close)
    with pytest.raises(FeatureError, match="warm-up must be a whole number"):
        registry.register("neg", inputs=("close",), warmup=-1)(lambda close: close)
    registry.register("short", inputs=("close",), warmup=0)(lambda close: close[1:])
    with pytest.raises(FeatureError, match=r"output short has shape \(19,\), expected \(20,\)"):
        FeaturePipeline(registry, names=["short"]).transform_panel(ragged_panel(rows=20))


def test_missing_dependency_skips_with_a_structured_log_line(caplog):
    panel = ragged_panel(rows=60).drop(columns=["volume", "high"])
    pipeline = FeaturePipeline(names=["volume_z_20", "atr_14", "rsi_14"])
    with caplog.at_level(logging.WARNING, logger="market_nn_plus_ultra.features.pipeline"):
        out = pipeline.transform_panel(panel)
    assert "rsi_14" in out and "volume_z_20" not in out and "atr_14" not in out
    assert pipeline.last_report.skipped == {
        "atr_14": "missing column high",
        "volume_z_20": "missing column volume",
    }
    fields = [r.fields for r in caplog.records if getattr(r, "fields", None)]
    assert fields == [
        {
            "event": "feature_skipped",
            "feature": "atr_14",
            "outputs": ["atr_14"],
            "missing": ["high"],
            "tables": ["series"],
        },
        {
            "event": "feature_skipped",
            "feature": "volume_z_20",
            "outputs": ["volume_z_20"],
            "missing": ["volume"],
            "tables": ["series"],
        },
    ]
    assert "feature volume_z_20 skipped: panel has no column volume" in caplog.text


def test_docs_list_every_feature_with_dependencies_and_warmup(tmp_path):
    text = features_markdown()
    table = REGISTRY.describe()
    assert f"{len(table)} feature columns in {len(REGISTRY)} groups." in text
    for row in table.itertuples():
        assert f"| `{row.name}` | {row.tags} | {row.dependencies} | {row.warmup} |" in text
    for spec in REGISTRY:
        assert f"## `{spec.name}`" in text
        assert "Dependencies: " + ", ".join(f"`{c}`" for c in spec.inputs) in text
    assert "| `atr_14` | technical, volatility | high, low, close | 14 | period=14 |" in text
    path = write_feature_docs(tmp_path / "docs" / "generated.md")
    assert path.read_text(encoding="utf-8") == text


def test_committed_reference_is_up_to_date():
    committed = Path(__file__).resolve().parents[2] / "docs" / "generated_features.md"
    assert committed.read_text(encoding="utf-8") == features_markdown(), (
        "docs/generated_features.md is stale — run "
        "`plus-ultra features docs --output docs/generated_features.md`"
    )
