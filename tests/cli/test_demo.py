"""``plus-ultra demo``: builds and strictly validates the demo databases in one command."""

from __future__ import annotations

from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.store import read_metadata, summarise_series
from market_nn_plus_ultra.data.validation import validate_database


def test_demo_builds_validated_databases(tmp_path) -> None:
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    market, fixture = tmp_path / "market.db", tmp_path / "fixture.db"
    for db in (market, fixture):
        assert validate_database(db).passed(strict=True)
        assert str(db) in result.output.replace("\n", "")
    real = summarise_series(market)
    assert real["symbol"].tolist() == ["^GSPC", "^IXIC"]
    assert (real["rows"] > 5000).all()
    assert real["start"].min().year == 1999 and real["end"].max().year == 2018
    assert "planted_signal" in read_metadata(fixture)
    assert result.output.count("passed") == 2
