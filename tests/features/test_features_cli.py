"""``plus-ultra features list | compute | docs`` through the real entry point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli import _common
from market_nn_plus_ultra.cli.features import _spread
from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.data.panel import read_panel
from market_nn_plus_ultra.features import REGISTRY, FeaturePipeline, features_markdown

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("features_cli") / "market.db"
    write_fixture(path, ["SPY", "QQQ", "BTC-USD"], rows=200, freq="1h", alt_features=0)
    return str(path)


def test_list_shows_every_feature_with_dependencies_and_warmup(monkeypatch):
    # A wide console, whatever width an earlier test left it with.
    monkeypatch.setattr(_common.out, "width", 200)
    result = runner.invoke(app, ["features", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for row in REGISTRY.describe().itertuples():
        assert row.name in result.output
    assert "│ atr_14 " in result.output and "high, low, close" in result.output
    narrowed = runner.invoke(app, ["features", "list", "--tag", "trend"], env={"COLUMNS": "200"})
    assert "macd_signal" in narrowed.output and "rsi_14" not in narrowed.output


def test_compute_writes_the_selected_features(db, tmp_path):
    out = tmp_path / "sub" / "features.parquet"
    args = ["features", "compute", db, "-o", str(out), "--symbols", "SPY", "BTC-USD"]
    result = runner.invoke(app, [*args, "--features", "rsi_14", "macd,atr_14"])
    assert result.exit_code == 0, result.output
    assert f"features: {out}" in result.output.replace("\n", "")
    assert not list(out.parent.glob(".*tmp"))  # the temp file was renamed away
    frame = pd.read_parquet(out)
    assert list(frame.index.names) == ["timestamp", "symbol"]
    assert sorted(frame.index.get_level_values("symbol").unique()) == ["BTC-USD", "SPY"]
    expected_cols = ["rsi_14", "macd", "macd_signal", "macd_hist", "atr_14"]
    assert list(frame.columns[-5:]) == expected_cols
    panel = read_panel(db, ["SPY", "BTC-USD"], cache=False)
    reference = FeaturePipeline(names=expected_cols).transform_panel(panel)
    np.testing.assert_array_equal(frame[expected_cols].to_numpy(), reference[expected_cols])


def test_compute_default_set_with_config_overrides(db, tmp_path):
    out = tmp_path / "all.parquet"
    sets = ["--set", "features.dtype=float32", "--set", "features.fft_window=16"]
    result = runner.invoke(app, ["features", "compute", db, "--output", str(out), *sets])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    defaults = [o for outs in REGISTRY.select().values() for o in outs]
    assert list(frame.columns[-len(defaults) :]) == defaults
    assert (frame[defaults].dtypes == np.float32).all()
    spy = frame.xs("SPY", level="symbol")["fft_energy_low"]
    assert spy.isna().sum() == 16  # the fft window override reached the pipeline


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--features", "rsi14"], "unknown feature `rsi14` — did you mean `rsi_14`"),
        (["--symbols", "SPX"], "no rows for SPX (did you mean SPY?)"),
        (["--set", "features.fft_windw=8"], "fft_windw"),
    ],
)
def test_compute_user_errors_are_clean(db, tmp_path, extra, message):
    result = runner.invoke(
        app, ["features", "compute", db, "-o", str(tmp_path / "x.parquet"), *extra]
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_docs_writes_the_generated_reference(tmp_path):
    out = tmp_path / "generated_features.md"
    result = runner.invoke(app, ["features", "docs", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == features_markdown()


def test_help_has_an_example():
    for command in ("list", "compute", "docs"):
        result = runner.invoke(app, ["features", command, "--help"])
        assert result.exit_code == 0 and "Example: plus-ultra features" in result.output


def test_list_flags_take_several_values():
    assert _spread(["DB.db", "--symbols", "A", "B", "--features", "x", "y", "-o", "f.parquet"]) == [
        "DB.db", "--symbols", "A", "--symbols", "B", "--features", "x", "--features", "y",
        "-o", "f.parquet",
    ]  # fmt: skip
    assert _spread(["--symbols", "A", "B", "market.db"]) == [
        "--symbols", "A", "--symbols", "B", "market.db"
    ]  # fmt: skip
    assert _spread(["--features", "--symbols", "A"]) == ["--features", "--symbols", "A"]
