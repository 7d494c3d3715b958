"""CSV/Parquet import: column mapping, UTC conversion across DST, symbols, idempotent appends."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.data.importers import DataImportError, import_frames, normalise_frame
from market_nn_plus_ultra.data.store import StoreError, read_metadata, read_table

runner = CliRunner()


def _bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 + np.cumsum(rng.normal(0, 0.5, n))
    return pd.DataFrame(
        {
            "Open": close + 0.1,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Volume": rng.integers(100, 1000, n).astype(float),
        }
    )


def _dump(path) -> dict[str, list]:
    with sqlite3.connect(path) as con:
        return {
            t: con.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall()
            for t in ("series", "assets", "metadata")
        }


def test_new_york_times_become_utc_across_both_dst_changes(tmp_path):
    # 2024 US DST: starts Sun 10 Mar (EST −5 → EDT −4), ends Sun 3 Nov (back to −5).
    local = ["2024-03-08 09:30", "2024-03-11 09:30", "2024-11-01 16:00", "2024-11-04 16:00"]
    utc = ["2024-03-08 14:30", "2024-03-11 13:30", "2024-11-01 20:00", "2024-11-04 21:00"]
    src = _bars(4, 0).assign(Datetime=local)
    src.to_csv(tmp_path / "SPY.csv", index=False)

    result = import_frames(tmp_path / "m.db", tmp_path / "SPY.csv", timezone="America/New_York")

    got = read_table(tmp_path / "m.db", "series")
    assert result.rows == 4 and result.symbols == ("SPY",)
    assert list(got["symbol"]) == ["SPY"] * 4  # symbol from the file stem
    assert list(got["timestamp"]) == list(pd.to_datetime(utc).tz_localize("UTC"))
    for src_col, col in (("Open", "open"), ("High", "high"), ("Low", "low"), ("Close", "close")):
        np.testing.assert_array_equal(got[col].to_numpy(), src[src_col].to_numpy())
    np.testing.assert_array_equal(got["volume"].to_numpy(), src["Volume"].to_numpy())
    with sqlite3.connect(tmp_path / "m.db") as con:
        text = [r[0] for r in con.execute("SELECT timestamp FROM series ORDER BY timestamp")]
    assert text[1] == "2024-03-11T13:30:00Z"


def test_offsets_in_text_win_over_timezone_and_daily_dates_stay_on_their_day():
    frame = _bars(2, 1).assign(
        date=["2024-07-01T09:30:00-04:00", "2024-07-01T15:00:00+01:00"], ticker="X"
    )
    out = normalise_frame(frame, timezone="Asia/Tokyo")
    assert list(out["timestamp"]) == [
        pd.Timestamp("2024-07-01 13:30", tz="UTC"),
        pd.Timestamp("2024-07-01 14:00", tz="UTC"),
    ]
    daily = normalise_frame(_bars(2, 1).assign(Date=["2024-01-02", "2024-01-03"], Symbol="X"))
    assert list(daily["timestamp"]) == list(pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True))


def test_adjusted_close_scales_ohlc_unless_asked_not_to():
    frame = pd.DataFrame(
        {
            "Date": ["2024-01-02"],
            "Open": [10.0],
            "High": [12.0],
            "Low": [9.0],
            "Close": [11.0],
            "Adj Close": [5.5],
            "Volume": [7.0],
        }
    )
    adj = normalise_frame(frame, symbol="A").iloc[0]
    assert (adj["open"], adj["high"], adj["low"], adj["close"]) == (5.0, 6.0, 4.5, 5.5)
    assert adj["volume"] == 7.0
    raw = normalise_frame(frame, symbol="A", adjust=False).iloc[0]
    assert (raw["open"], raw["close"]) == (10.0, 11.0)


def test_explicit_mapping_and_long_multi_symbol_file(tmp_path):
    frame = pd.concat(
        [_bars(3, 2).assign(code="AAA"), _bars(3, 3).assign(code="BBB")], ignore_index=True
    ).rename(columns={"Close": "px_last"})
    frame["dt"] = np.tile(["2024-01-02", "2024-01-03", "2024-01-04"], 2)
    frame.to_csv(tmp_path / "long.csv", index=False)
    result = import_frames(
        tmp_path / "m.db",
        tmp_path / "long.csv",
        mapping={"DT": "timestamp", "px_last": "close", "code": "symbol"},
    )
    assert result.symbols == ("AAA", "BBB") and result.rows == 6
    got = read_table(tmp_path / "m.db", "series").sort_values(["symbol", "timestamp"])
    np.testing.assert_array_equal(got["close"].to_numpy(), frame["px_last"].to_numpy())
    assets = read_table(tmp_path / "m.db", "assets")
    assert list(assets["symbol"]) == ["AAA", "BBB"] and list(assets["asset_id"]) == [1, 2]


def test_missing_close_lists_the_columns_and_suggests_map(tmp_path):
    _bars(2, 4).rename(columns={"Close": "Last"}).assign(Date=["2024-01-02", "2024-01-03"]).to_csv(
        tmp_path / "x.csv", index=False
    )
    with pytest.raises(DataImportError) as err:
        import_frames(tmp_path / "m.db", tmp_path / "x.csv")
    message = str(err.value)
    assert "x.csv" in message and "no close column" in message
    assert "'Last'" in message and "--map" in message
    assert not (tmp_path / "m.db").exists()


def test_user_errors_name_the_column_and_the_fix():
    frame = _bars(2, 5).assign(Date=["2024-01-02", "2024-01-03"], Symbol="X")
    with pytest.raises(DataImportError, match="did you mean 'close'"):
        normalise_frame(frame, mapping={"Close": "clsoe"})
    with pytest.raises(DataImportError, match="did you mean 'America/New_York'"):
        normalise_frame(frame, timezone="America/New_Yrok")
    with pytest.raises(DataImportError, match="symbol column and --symbol"):
        normalise_frame(frame, symbol="Y")
    bad = frame.astype({"Close": object})
    bad.loc[1, "Close"] = "n/a"
    with pytest.raises(DataImportError, match=r"column close: 1 values are not numbers \(row 3"):
        normalise_frame(bad)
    # 01:30 happens twice in New York on 3 Nov 2024.
    fold = frame.assign(Date=["2024-11-03 01:30", "2024-11-04 01:30"])
    with pytest.raises(DataImportError, match="daylight-saving"):
        normalise_frame(fold, timezone="America/New_York")


def test_append_is_idempotent_and_new_symbols_get_the_next_asset_id(tmp_path):
    db = tmp_path / "m.db"
    _bars(5, 6).assign(Date=pd.date_range("2024-01-01", periods=5).strftime("%Y-%m-%d")).to_csv(
        tmp_path / "AAA.csv", index=False
    )
    import_frames(db, tmp_path / "AAA.csv")
    before = _dump(db)
    again = import_frames(db, tmp_path / "AAA.csv", append=True)
    assert again.new_symbols == () and _dump(db) == before

    with pytest.raises(StoreError, match="--append"):
        import_frames(db, tmp_path / "AAA.csv")
    with pytest.raises(DataImportError, match="exclude each other"):
        import_frames(db, tmp_path / "AAA.csv", append=True, overwrite=True)

    frame = _bars(2, 7).assign(Date=["2024-02-01", "2024-02-02"])
    import_frames(db, frame, symbol="BBB", append=True)
    assets = read_table(db, "assets")
    assert dict(zip(assets["symbol"], assets["asset_id"], strict=True)) == {"AAA": 1, "BBB": 2}
    assert len(read_table(db, "series")) == 7
    assert '"files": ["AAA.csv"]' in read_metadata(db)["source:AAA"]


def test_parquet_with_a_tz_aware_index(tmp_path):
    idx = pd.DatetimeIndex(["2024-06-03 09:30", "2024-06-03 09:31"], name="Datetime").tz_localize(
        "America/New_York"
    )
    _bars(2, 8).set_index(idx).to_parquet(tmp_path / "bars.parquet")
    import_frames(tmp_path / "m.db", tmp_path / "bars.parquet", symbol="QQQ")
    got = read_table(tmp_path / "m.db", "series")
    assert list(got["timestamp"].dt.strftime("%H:%M")) == ["13:30", "13:31"]
    assert set(got["symbol"]) == {"QQQ"}


def test_conflicting_rows_and_inconsistent_ohlc_write_nothing(tmp_path):
    dup = _bars(2, 9).assign(Date=["2024-01-02", "2024-01-02"], Symbol="X")
    with pytest.raises(DataImportError, match="share a"):
        import_frames(tmp_path / "m.db", dup)
    broken = _bars(2, 9).assign(Date=["2024-01-02", "2024-01-03"], Symbol="X")
    broken.loc[0, "High"] = broken.loc[0, "Close"] - 5  # high below close
    with pytest.raises(ValueError, match="series"):
        import_frames(tmp_path / "m.db", broken)
    assert not (tmp_path / "m.db").exists()


def test_cli_imports_several_files_after_one_flag(tmp_path):
    for name, seed in (("AAA", 10), ("BBB", 11)):
        _bars(3, seed).assign(Date=["2024-01-02", "2024-01-03", "2024-01-04"]).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
    db = tmp_path / "out.db"
    args = [
        "data",
        "import",
        str(db),
        "--csv",
        str(tmp_path / "AAA.csv"),
        str(tmp_path / "BBB.csv"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 rows for 2 symbol(s)" in result.output and str(db) in result.output
    assert sorted(read_table(db, "series")["symbol"].unique()) == ["AAA", "BBB"]

    again = runner.invoke(app, [*args, "--append"])
    assert again.exit_code == 0 and len(read_table(db, "series")) == 6

    missing = runner.invoke(
        app,
        [
            "data",
            "import",
            str(tmp_path / "o2.db"),
            "--csv",
            str(tmp_path / "AAA.csv"),
            "--map",
            "Nope=close",
        ],
    )
    assert missing.exit_code == 2 and "no column 'Nope'" in missing.output


def _wide_csv(path) -> pd.DataFrame:
    """Closes of three symbols by date; CCC starts on the 11th bar (a ragged calendar)."""
    dates = pd.bdate_range("2024-01-02", periods=60)
    rng = np.random.default_rng(12)
    closes = {sym: 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60))) for sym in ("AAA", "BBB")}
    wide = pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), **closes})
    wide[" CCC "] = np.where(np.arange(60) < 10, np.nan, closes["AAA"] * 2)  # header stripped
    wide.to_csv(path, index=False)
    return wide


def test_wide_layout_imports_several_symbols_marked_close_only(tmp_path):
    wide = _wide_csv(tmp_path / "closes.csv")
    db = tmp_path / "w.db"
    result = runner.invoke(
        app, ["data", "import", str(db), "--csv", str(tmp_path / "closes.csv"), "--layout", "wide"]
    )
    assert result.exit_code == 0, result.output
    assert "170 rows for 3 symbol(s)" in result.output  # 60 + 60 + 50
    assert "close_only" in result.output
    got = read_table(db, "series").set_index(["symbol", "timestamp"]).sort_index()
    assert got.groupby(level="symbol").size().to_dict() == {"AAA": 60, "BBB": 60, "CCC": 50}
    np.testing.assert_allclose(got.loc["BBB", "close"].to_numpy(), wide["BBB"].to_numpy())
    np.testing.assert_allclose(got.loc["CCC", "close"].to_numpy(), wide[" CCC "].dropna())
    assert (got["open"] == got["close"]).all() and (got["high"] == got["low"]).all()
    assert (got["volume"] == 0).all()
    flags = read_table(db, "asset_flags")
    assert sorted(zip(flags["symbol"], flags["flag"], strict=True)) == [
        (s, f) for s in ("AAA", "BBB", "CCC") for f in ("close_only", "no_volume")
    ]
    assert "closes.csv" in flags["note"].iloc[0]
    assert list(read_table(db, "assets")["symbol"]) == ["AAA", "BBB", "CCC"]  # the contract
    assert '"layout": "wide"' in read_metadata(db)["source:AAA"]

    bad = runner.invoke(
        app,
        [
            *("data", "import", str(tmp_path / "x.db"), "--csv", str(tmp_path / "closes.csv")),
            *("--layout", "wide", "--map", "AAA=close"),
        ],
    )
    assert bad.exit_code == 2 and "only --map COLUMN=timestamp applies" in bad.output


def test_features_needing_high_low_or_volume_are_skipped_for_close_only_symbols(tmp_path, caplog):
    from market_nn_plus_ultra.config import DataConfig, FeaturesConfig
    from market_nn_plus_ultra.data.asset_flags import unknown_inputs
    from market_nn_plus_ultra.features import FeaturePipeline, compute_features

    _wide_csv(tmp_path / "closes.csv")
    db = tmp_path / "w.db"
    import_frames(db, tmp_path / "closes.csv", layout="wide")
    names = ["atr_14", "volume_z_20", "rsi_14"]
    frame, report = compute_features(
        DataConfig(sqlite_path=db, cache=False, alternative_data=[]), FeaturesConfig(names=names)
    )
    assert report.computed == ["rsi_14"]
    assert set(report.skipped) == {"atr_14", "volume_z_20"}
    assert report.skipped["atr_14"] == "high, low unknown for AAA, BBB, CCC"
    assert report.skipped["volume_z_20"] == "volume unknown for AAA, BBB, CCC"
    assert "atr_14" not in frame.columns and frame["rsi_14"].notna().any()
    assert "feature atr_14 skipped" in caplog.text
    # Without the marks the pipeline would compute ATR on flat bars (true range = |Δclose|).
    panel = frame.drop(columns="rsi_14")
    plain = FeaturePipeline(names=["atr_14"]).transform_panel(panel)
    assert plain["atr_14"].notna().any()
    assert unknown_inputs(db, ["AAA"]) == {
        c: frozenset({"AAA"}) for c in ("open", "high", "low", "volume")
    }


def test_close_only_long_file_and_samples_are_marked_but_full_bars_are_not(tmp_path):
    close_only = _bars(3, 13)[["Close"]].assign(Date=["2024-01-02", "2024-01-03", "2024-01-04"])
    full = _bars(3, 14).assign(Date=["2024-01-02", "2024-01-03", "2024-01-04"])
    result = import_frames(
        tmp_path / "m.db", [close_only.assign(Symbol="C"), full.assign(Symbol="F")]
    )
    assert result.flags == {"close_only": ("C",), "no_volume": ("C",)}
    flags = read_table(tmp_path / "m.db", "asset_flags")
    assert set(flags["symbol"]) == {"C"}
