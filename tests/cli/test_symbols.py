"""Symbols: one rule for every front door, no silent default for an empty --symbols,
and a per-symbol side table with no rows for the chosen symbol."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data import read_table
from market_nn_plus_ultra.data.symbols import SymbolError, check_symbols, split_symbols


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_features_for_spy_of_the_default_fixture(tmp_path):
    # alt_funding is per symbol and holds crypto rows only: none for SPY
    db = tmp_path / "fixture.db"
    made = CliRunner().invoke(app, ["data", "fixture", str(db), "--rows", "400"])
    assert made.exit_code == 0, made.output
    funding = read_table(db, "alt_funding")
    assert len(funding) > 0 and "SPY" not in set(funding["symbol"])
    output = tmp_path / "spy.parquet"
    args = ["features", "compute", str(db), "--symbols", "SPY", "-o", str(output)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(output)
    assert set(frame.index.get_level_values("symbol")) == {"SPY"} and len(frame) == 400
    assert "funding_rate" in frame.columns and frame["sentiment_score"].notna().any()


@pytest.mark.parametrize(
    "command",
    [
        ["features", "compute", "{db}", "--symbols", ",", "-o", "{out}"],
        ["features", "compute", "{db}", "--symbols", " , ", "-o", "{out}"],
        ["data", "fixture", "{out}", "--symbols", ","],
    ],
)
def test_an_empty_symbols_list_is_an_error_not_the_defaults(tmp_path, command):
    db, output = tmp_path / "f.db", tmp_path / "out.db"
    CliRunner().invoke(app, ["data", "fixture", str(db), "--rows", "50", "--symbols", "SPY"])
    result = CliRunner().invoke(app, [a.format(db=db, out=output) for a in command])
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert "--symbols" in text and "no symbol in it" in text and not output.exists()


def test_fixture_accepts_every_symbol_import_accepts(tmp_path):
    symbols = ["^GSPC", "BRK B", "EURUSD=X", "BTC/USDT"]
    csv = tmp_path / "bars.csv"
    rows = [
        {"date": f"2024-01-0{d}", "symbol": s, "open": 10, "high": 11, "low": 9, "close": 10.5}
        for s in symbols
        for d in (2, 3, 4)
    ]
    pd.DataFrame(rows).to_csv(csv, index=False)
    imported = CliRunner().invoke(
        app, ["data", "import", str(tmp_path / "i.db"), "--csv", str(csv)]
    )
    assert imported.exit_code == 0, imported.output
    assert sorted(read_table(tmp_path / "i.db", "series")["symbol"].unique()) == sorted(symbols)
    db = tmp_path / "fixture.db"
    made = CliRunner().invoke(
        app, ["data", "fixture", str(db), "--rows", "50", "--symbols", ",".join(symbols)]
    )
    assert made.exit_code == 0, made.output
    assert sorted(read_table(db, "series")["symbol"].unique()) == sorted(symbols)


def test_both_refuse_the_same_symbols_with_the_same_rule(tmp_path):
    bad = "A\tB"
    csv = tmp_path / "bars.csv"
    pd.DataFrame(
        {
            "date": ["2024-01-02", "2024-01-03"],
            "symbol": bad,
            "open": 1,
            "high": 1,
            "low": 1,
            "close": 1,
        }
    ).to_csv(csv, index=False)
    imported = CliRunner().invoke(
        app, ["data", "import", str(tmp_path / "i.db"), "--csv", str(csv)]
    )
    made = CliRunner().invoke(app, ["data", "fixture", str(tmp_path / "f.db"), "--symbols", bad])
    for result in (imported, made):
        assert result.exit_code == 2, result.output
        assert "control character" in _flat(result.output)


def test_the_rule():
    assert check_symbols([" SPY ", "BRK.B", "^GSPC"], "x") == ["SPY", "BRK.B", "^GSPC"]
    with pytest.raises(SymbolError, match=r"x: '' is empty"):
        check_symbols(["SPY", "  "], "x")
    with pytest.raises(SymbolError, match="at most 64"):
        check_symbols(["A" * 65], "x")
    with pytest.raises(SymbolError, match=r"\['SPY'\] given more than once"):
        check_symbols(["SPY", "SPY"], "x")
    assert split_symbols(None) is None and split_symbols([]) is None
    assert split_symbols(["SPY,QQQ", "SPY", " IWM "]) == ["SPY", "QQQ", "IWM"]
    with pytest.raises(SymbolError, match="--symbols ',': no symbol in it"):
        split_symbols([","])
