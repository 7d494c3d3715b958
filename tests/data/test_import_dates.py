"""Dates are never guessed wrong: detected day/month order, --date-format, session dates,
weekend bars of weekday markets flagged. CSVs are generated here (no committed files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.importers import DataImportError, import_frames, normalise_frame
from market_nn_plus_ultra.data.store import read_table
from market_nn_plus_ultra.data.validation import validate_database, validate_tables

runner = CliRunner()
#: 300 NYSE-like weekday sessions (no holidays needed: only the dates matter here).
SESSIONS = pd.bdate_range("2000-01-03", periods=300)


def _bars(dates: pd.DatetimeIndex, fmt: str) -> pd.DataFrame:
    close = 50 + np.cumsum(np.random.default_rng(len(dates)).normal(0, 0.5, len(dates)))
    return pd.DataFrame(
        {
            "Date": dates.strftime(fmt),
            "Open": close,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Volume": 1_000.0,
        }
    )


def _import(db, path, *extra: str):
    return runner.invoke(app, ["data", "import", str(db), "--csv", str(path), *extra])


def _stored_dates(db) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(read_table(db, "series")["timestamp"]).tz_localize(None)


def test_day_first_300_bar_file_imports_at_the_right_dates(tmp_path):
    # 03/01/2000 first: pandas inferred %m/%d/%Y from it and re-guessed every row that
    # failed (13/01/2000 …), storing 203 of these 300 bars on the wrong day, 42 on weekends.
    _bars(SESSIONS, "%d/%m/%Y").to_csv(tmp_path / "DF.csv", index=False)
    result = _import(tmp_path / "m.db", tmp_path / "DF.csv")
    assert result.exit_code == 0, result.output
    stored = _stored_dates(tmp_path / "m.db")
    assert len(stored) == 300 and (stored == SESSIONS).all()
    assert (stored.day_of_week < 5).all()
    assert "dates read day-first" in result.output


def test_a_file_that_cannot_tell_day_from_month_is_refused_naming_date_format(tmp_path):
    ambiguous = SESSIONS[SESSIONS.day <= 12]  # every first and second field is 12 or less
    _bars(ambiguous, "%d/%m/%Y").to_csv(tmp_path / "AMB.csv", index=False)
    result = _import(tmp_path / "m.db", tmp_path / "AMB.csv")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "AMB.csv: column Date" in text and "could be day-first or month-first" in text
    assert "--date-format '%d/%m/%Y'" in text and "'%m/%d/%Y'" in text
    assert not (tmp_path / "m.db").exists()

    ok = _import(tmp_path / "m.db", tmp_path / "AMB.csv", "--date-format", "%d/%m/%Y")
    assert ok.exit_code == 0, ok.output
    assert (_stored_dates(tmp_path / "m.db") == ambiguous).all()


@pytest.mark.parametrize(
    ("fmt", "layout"),
    [("%m/%d/%Y", "month-first"), ("%d.%m.%y", "day-first"), ("%m-%d-%Y %H:%M", "month-first")],
)
def test_detected_order_from_a_field_above_12(fmt, layout):
    dates = pd.DatetimeIndex(["2000-01-12", "2000-01-13", "2000-02-01"])
    if "%H" in fmt:
        dates = dates + pd.Timedelta(hours=14, minutes=30)
    frame = _bars(dates, fmt).assign(Symbol="X")
    out = normalise_frame(frame)
    assert list(out["timestamp"]) == list(dates.tz_localize("UTC"))


def test_rows_in_another_layout_or_order_are_refused_not_guessed():
    mixed_order = _bars(pd.DatetimeIndex(["2000-01-13", "2000-01-14"]), "%d/%m/%Y")
    mixed_order.loc[1, "Date"] = "01/14/2000"  # month-first in a day-first file
    with pytest.raises(DataImportError, match=r"mixes day-first and month-first.*row 3"):
        normalise_frame(mixed_order, symbol="X")
    mixed_layout = _bars(pd.DatetimeIndex(["2000-01-13", "2000-01-14"]), "%d/%m/%Y")
    mixed_layout.loc[1, "Date"] = "2000-01-14"
    with pytest.raises(DataImportError, match=r"do not share one layout \(row 3: '2000-01-14'"):
        normalise_frame(mixed_layout, symbol="X")
    wrong = _bars(pd.DatetimeIndex(["2000-01-13"]), "%d/%m/%Y")
    with pytest.raises(DataImportError, match=r"1 values do not match --date-format '%m/%d/%Y'"):
        normalise_frame(wrong, symbol="X", date_format="%m/%d/%Y")
    with pytest.raises(DataImportError, match="no strftime codes"):
        normalise_frame(wrong, symbol="X", date_format="dd/mm/yyyy")
    named = _bars(pd.DatetimeIndex(["2003-09-19", "2003-09-18"]), "%d-%b-%y")
    assert list(normalise_frame(named, symbol="X")["timestamp"].dt.day) == [18, 19]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo", "Pacific/Kiritimati"])
def test_daily_bars_keep_their_session_date_whatever_the_timezone(tmp_path, zone):
    # Before: New York dates became 05:00Z, Tokyo (+9) and Kiritimati (+14) dates the
    # previous UTC day.
    dates = pd.DatetimeIndex(["2024-01-02", "2024-07-01", "2024-11-04"])
    _bars(dates, "%Y-%m-%d").to_csv(tmp_path / "D.csv", index=False)
    result = _import(tmp_path / "m.db", tmp_path / "D.csv", "--timezone", zone)
    assert result.exit_code == 0, result.output
    assert list(read_table(tmp_path / "m.db", "series")["timestamp"]) == list(
        dates.tz_localize("UTC")
    )
    # Intraday times in the same zone are instants: converted to UTC.
    intraday = _bars(dates + pd.Timedelta(hours=9, minutes=30), "%Y-%m-%d %H:%M")
    out = normalise_frame(intraday, symbol="X", timezone=zone)
    expected = (dates + pd.Timedelta(hours=9, minutes=30)).tz_localize(zone).tz_convert("UTC")
    assert list(out["timestamp"]) == list(expected)


def test_daily_dates_with_offsets_or_zone_aware_midnights_stay_on_their_date(tmp_path):
    # Yahoo's daily index is midnight New York (05:00Z / 04:00Z); text exports add offsets.
    idx = pd.DatetimeIndex(["2024-03-08", "2024-03-11"], name="Date").tz_localize(
        "America/New_York"
    )
    frame = _bars(pd.DatetimeIndex(["2024-03-08", "2024-03-11"]), "%Y-%m-%d").drop(columns="Date")
    frame.set_index(idx).to_parquet(tmp_path / "bars.parquet")
    import_frames(tmp_path / "m.db", tmp_path / "bars.parquet", symbol="SPY")
    assert list(read_table(tmp_path / "m.db", "series")["timestamp"]) == list(
        pd.to_datetime(["2024-03-08", "2024-03-11"], utc=True)
    )
    text = frame.assign(Date=["2024-03-08T00:00:00+09:00", "2024-03-11T00:00:00+09:00"])
    assert list(normalise_frame(text, symbol="X")["timestamp"].dt.day) == [8, 11]


def test_weekend_bars_of_an_equity_are_flagged_and_fail_strict_validation():
    # Fri 5, Sat 6, Sun 7, Mon 8 … Fri 19 January 2024: two weekend bars.
    stamps = pd.date_range("2024-01-05", "2024-01-19", freq="D")
    stamps = stamps[
        (stamps.day_of_week < 5) | stamps.isin(pd.to_datetime(["2024-01-06", "2024-01-07"]))
    ]
    series = pd.DataFrame(
        {"timestamp": stamps, "symbol": "EQ", "open": 1.0, "high": 1.0, "low": 1.0}
    ).assign(close=1.0, volume=0.0)
    for cls, expected in (("equity", 2), ("ETF", 2), ("fx", 1), ("crypto", 0)):
        assets = pd.DataFrame({"asset_id": [1], "symbol": ["EQ"], "asset_class": [cls]})
        report = validate_tables({"series": series, "assets": assets})
        found = [f for f in report.failures if f.check == "weekend_bars"]
        assert [f.n_rows for f in found] == ([expected] if expected else [])
        if expected:
            (failure,) = found
            assert failure.severity == "warning" and report.ok
            assert not report.passed(strict=True)
            assert failure.first_keys[0] == ("EQ", "2024-01-06T00:00:00Z")
            assert "EQ (" in failure.fix and "first Sat 2024-01-06" in failure.fix
            assert "--date-format" in failure.fix
    # No asset class: flagged only as a sparse scatter (2 weekend bars against 11 weekdays
    # over 5 weekday columns: 1 < 0.5 × 2.2), not a 7-day market.
    unknown = pd.DataFrame({"asset_id": [1], "symbol": ["EQ"], "asset_class": [None]})
    assert any(
        f.check == "weekend_bars" and f.n_rows == 2
        for f in validate_tables({"series": series, "assets": unknown}).failures
    )
    every_day = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=28, freq="D"), "symbol": "BTC"}
    ).assign(open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0)
    crypto_like = pd.DataFrame({"asset_id": [1], "symbol": ["BTC"], "asset_class": [None]})
    report = validate_tables({"series": every_day, "assets": crypto_like})
    assert not [f for f in report.failures if f.check == "weekend_bars"]


def test_a_wrong_date_format_shows_up_as_weekend_bars_of_an_equity(tmp_path):
    ambiguous = SESSIONS[SESSIONS.day <= 12]
    _bars(ambiguous, "%d/%m/%Y").to_csv(tmp_path / "AMB.csv", index=False)
    db = tmp_path / "m.db"
    result = runner.invoke(
        app,
        [
            *("data", "import", str(db), "--csv", str(tmp_path / "AMB.csv")),
            *("--date-format", "%m/%d/%Y", "--asset-class", "equity"),
        ],
    )
    assert result.exit_code == 0, result.output
    stored = _stored_dates(db)
    n_weekend = int((stored.day_of_week >= 5).sum())
    assert n_weekend > 0
    text = " ".join(result.output.split())
    assert f"{n_weekend} daily bars fall on a weekend" in text and "--date-format" in text
    assert read_table(db, "assets")["asset_class"].tolist() == ["equity"]
    report = validate_database(db)
    (weekend,) = [f for f in report.failures if f.check == "weekend_bars"]
    assert weekend.n_rows == n_weekend
    strict = runner.invoke(app, ["data", "validate", str(db), "--strict"])
    assert strict.exit_code == 1
