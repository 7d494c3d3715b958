"""Package-shipped samples: values equal the package's frames, licences, quirks, CLI."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli import _common as cli_common
from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.importers import DataImportError
from market_nn_plus_ultra.data.samples import (
    SAMPLES,
    SampleUnavailableError,
    import_samples,
    load_sample,
)
from market_nn_plus_ultra.data.store import read_metadata, read_table

pytest.importorskip("arch.data")


def _arch(name: str) -> pd.DataFrame:
    return importlib.import_module(f"arch.data.{name}").load()


runner = CliRunner()


def test_declared_licences_match_the_installed_packages():
    assert importlib.metadata.metadata("arch")["License-Expression"] == "NCSA"
    classifiers = importlib.metadata.metadata("matplotlib").get_all("Classifier")
    assert "License :: OSI Approved :: Python Software Foundation License" in classifiers
    assert {"sp500", "nasdaq"} <= set(SAMPLES)
    for sample in SAMPLES.values():
        assert sample.license == ("NCSA" if sample.package == "arch" else "Matplotlib License")
        assert sample.quirks and sample.description and sample.frequency in ("daily", "monthly")


@pytest.mark.parametrize(("name", "symbol"), [("sp500", "^GSPC"), ("nasdaq", "^IXIC")])
def test_index_samples_equal_the_arch_frames(tmp_path, name, symbol):
    ref = _arch(name)
    result = import_samples(tmp_path / "m.db", [name])
    got = read_table(tmp_path / "m.db", "series")

    assert result.rows == len(got) == 5031
    assert got["timestamp"].iloc[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert got["timestamp"].iloc[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    assert (got["symbol"] == symbol).all()
    np.testing.assert_array_equal(
        got["timestamp"].dt.tz_localize(None).to_numpy(), ref.index.to_numpy(dtype="datetime64[ns]")
    )
    for col in ("Open", "High", "Low", "Close", "Volume"):
        np.testing.assert_array_equal(got[col.lower()].to_numpy(), ref[col].to_numpy(dtype=float))
    asset = read_table(tmp_path / "m.db", "assets").iloc[0]
    assert (asset["symbol"], asset["asset_class"], asset["currency"]) == (symbol, "index", "USD")
    assert f'"sample": "{name}"' in read_metadata(tmp_path / "m.db")[f"source:{symbol}"]


def test_recorded_quirks_hold():
    sp = _arch("sp500")
    assert (sp["Adj Close"] == sp["Close"]).all()
    nq = _arch("nasdaq")
    assert list(nq.index[nq["Volume"] == 0].strftime("%Y-%m-%d")) == ["2015-05-12", "2018-01-09"]
    gaps = pd.Series(sp.index).diff().dt.days
    assert gaps.max() == 7 and sp.index[gaps.argmax()] == pd.Timestamp("2001-09-17")


def test_close_only_samples_become_flat_bars_without_holiday_rows():
    vix = load_sample("vix")
    ref = _arch("vix")["vix"].dropna()
    assert len(vix) == 1305 - 46 == len(ref)
    np.testing.assert_array_equal(vix["close"].to_numpy(), ref.to_numpy())
    assert (vix["open"] == vix["close"]).all() and (vix["high"] == vix["low"]).all()
    assert (vix["volume"] == 0).all()


def test_monthly_closes_are_relabelled_to_the_month_end():
    monthly = load_sample("stocks_monthly").set_index(["symbol", "timestamp"])["close"]
    # ^GSPC closed 1990-01-31 at 329.08; Yahoo's file dates that close 1990-01-01.
    assert monthly[("^GSPC", pd.Timestamp("1990-01-31", tz="UTC"))] == pytest.approx(
        329.0799865722656
    )
    amzn = monthly.loc["AMZN"]
    assert amzn.index[0] == pd.Timestamp("1997-06-30", tz="UTC")
    assert monthly.index.get_level_values("timestamp").max() == pd.Timestamp("2022-06-28", tz="UTC")
    assert len(monthly.loc["^GSPC"]) == 390


def test_msft_is_sorted_and_dividend_adjusted():
    msft = load_sample("msft")
    assert msft["timestamp"].is_monotonic_increasing and len(msft) == 65
    first = msft.iloc[0]  # 2003-06-19: O 26.09 H 26.39 L 26.01 C 26.07, Adj 25.92
    assert first["timestamp"] == pd.Timestamp("2003-06-19", tz="UTC")
    assert first["close"] == pytest.approx(25.92)
    assert first["open"] == pytest.approx(26.09 * 25.92 / 26.07)


def test_bad_requests_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(DataImportError, match="did you mean 'sp500'"):
        import_samples(tmp_path / "m.db", ["sp5000"])
    with pytest.raises(DataImportError, match="both hold MSFT"):
        import_samples(tmp_path / "m.db", ["msft", "stocks_monthly"])
    monkeypatch.setitem(sys.modules, "arch.data.sp500", None)
    with pytest.raises(
        SampleUnavailableError, match=r"pip install 'market-nn-plus-ultra\[samples\]'"
    ):
        load_sample("sp500")


def test_cli_lists_and_imports_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_common.out, "width", 250)  # one line per cell, whatever the terminal
    listing = runner.invoke(app, ["data", "samples"])
    assert listing.exit_code == 0, listing.output
    for text in ("sp500", "nasdaq", "^GSPC", "5,031", "NCSA", "1999-01-04 →", "2018-12-31"):
        assert text in listing.output

    db = tmp_path / "s.db"
    result = runner.invoke(
        app, ["data", "import", str(db), "--sample", "sp500", "--sample", "nasdaq"]
    )
    assert result.exit_code == 0, result.output
    assert read_table(db, "series").groupby("symbol").size().to_dict() == {
        "^GSPC": 5031,
        "^IXIC": 5031,
    }
    again = runner.invoke(app, ["data", "import", str(db), "--sample", "vix", "wti", "--append"])
    assert again.exit_code == 0, again.output
    assets = read_table(db, "assets")
    assert list(assets["symbol"]) == ["^GSPC", "^IXIC", "WTI", "^VIX"]
    assert list(assets["asset_id"]) == [1, 2, 3, 4]
