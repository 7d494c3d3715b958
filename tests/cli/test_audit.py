"""``plus-ultra audit`` through the real entry point, on a synthetic fixture database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli import _plugins
from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data import regimes as regimes_module
from market_nn_plus_ultra.data.fixtures import write_fixture
from market_nn_plus_ultra.features import REGISTRY

SYMBOLS = ["SPY", "QQQ", "BTC-USD"]
# Small windows keep the run fast; the views and labels are those `data build` writes.
SETTINGS = [
    "data.cache=false",
    "windows.window=16",
    "windows.horizon=3",
    "features.names=[rsi_14,macd,realised_vol_20,log_return_1,alt_sentiment_score]",
    "data.regimes.min_history=40",
    "data.cross_asset.columns=[SPY:close]",
]

LEAKY_PLUGIN = '''
import numpy as np
import pandas as pd

from market_nn_plus_ultra.features import register


@register(inputs=("close",), warmup=4, tags=("custom",), default=False)
def centred_mean_5(close):
    """Centred rolling mean: reads the next two bars."""
    return pd.Series(close).rolling(5, center=True).mean().to_numpy()


@register(inputs=("close",), warmup=0, tags=("custom",), default=False)
def full_sample_z(close):
    """Z-score with the mean and deviation of the whole sample."""
    return (close - close.mean()) / close.std()
'''


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "market.db"
    return write_fixture(path, SYMBOLS, rows=500, freq="1D", alt_features=3, seed=11)


def _invoke(db, *extra: str):
    args = ["audit", str(db), "--cuts", "3", "--seed", "2"]
    for setting in SETTINGS:
        args += ["--set", setting]
    result = CliRunner().invoke(app, [*args, *extra])
    result.text = " ".join(result.output.split())  # rich wraps lines at the terminal width
    return result


@pytest.fixture
def leaky_plugin(tmp_path):
    path = tmp_path / "leaky_features.py"
    path.write_text(LEAKY_PLUGIN)
    yield path
    for name in ("centred_mean_5", "full_sample_z"):
        if name in REGISTRY:
            REGISTRY.remove(name)
    _plugins._LOADED.pop(str(path), None)


def test_fixture_database_is_clean(db):
    result = _invoke(db)
    assert result.exit_code == 0, result.output
    assert result.text.endswith("no look-ahead found")
    # 7 feature columns (macd has three), 3 regime labels, 1 cross-asset column and the
    # 6 joined columns of the 3 side tables the fixture wrote (macro, funding, sentiment).
    assert "Checked: 6 alternative, 7 feature, 3 regime, 1 cross_asset" in result.text


def test_leaky_plugin_features_are_named(db, leaky_plugin):
    result = _invoke(db, "--plugin", str(leaky_plugin))
    assert result.exit_code == 1, result.output
    assert "plugin features: centred_mean_5, full_sample_z" in result.text
    assert "Look-ahead leaks" in result.text
    # Only the two leaky features are named; the clean selection beside them passes.
    assert result.text.endswith("LEAKS in centred_mean_5, full_sample_z")


def test_full_sample_regime_quantiles_are_caught(db, monkeypatch):
    def full_sample(measure, bands, labels, *, window=None, min_history=60):
        """Bands from each symbol's WHOLE history: the future moves today's label."""
        thresholds = measure.groupby(level="symbol").transform(lambda s: s.quantile(bands[0]))
        band = (measure > thresholds).astype(int).to_numpy()
        text = np.asarray(labels, dtype=object)[band]
        return pd.Series(np.where(measure.notna(), text, None), index=measure.index)

    monkeypatch.setattr(regimes_module, "label_by_quantiles", full_sample)
    result = _invoke(db, "--set", "data.regimes.bands=[0.5]")
    assert result.exit_code == 1, result.output
    assert result.text.endswith("LEAKS in liquidity, sector_rotation, volatility")


def test_unknown_plugin_is_a_clean_error(db, tmp_path):
    missing = _invoke(db, "--plugin", "no_such_plugin_module")
    assert missing.exit_code == 2
    assert "no module named 'no_such_plugin_module'" in missing.text
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad plugin')\n")
    failed = _invoke(db, "--plugin", str(broken))
    assert failed.exit_code == 2
    assert "failed to import: RuntimeError: bad plugin" in failed.text
