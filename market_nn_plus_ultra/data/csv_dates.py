"""Timestamps of imported files → UTC, with the date order detected, never guessed per row.

A file's dates are read with ONE layout for every row:

- year first (ISO-8601: ``2024-01-02``, ``2024/01/02 14:30``, ``…T14:30:00Z``): read as is;
- ``A/B/YYYY`` (also ``-`` or ``.``, two-digit years, an optional time): a value above 12
  in the first place anywhere in the file means day-first, in the second place
  month-first; a file in which every first and second field is 12 or less cannot be told
  apart and is refused with a message naming ``--date-format``;
- month names (``19-Sep-03``, ``Jan 2, 2024``): the first of a short list of layouts
  that reads every row;
- ``--date-format`` (a strftime format such as ``%d/%m/%Y``) overrides all of the above.

Rows that do not fit the file's layout are an error naming them — pandas' per-row
``format="mixed"`` guessing, which reads ``03/04/2000`` as 4 March in one row and
``13/04/2000`` as 13 April in the next, is never used.

Daily versus intraday (how ``--timezone`` applies): a file whose every timestamp is a
date, or midnight, holds **daily bars**; each is stored at 00:00 UTC of its own date (the
session date), whatever ``--timezone`` or offset it carries, so no bar moves to the
previous or next day. Any other timestamp is an instant: naive wall-clock times are read
in ``--timezone`` and converted to UTC; times with an offset are converted as written.
"""

from __future__ import annotations

import difflib
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

__all__ = ["DataImportError", "ParsedTimes", "check_timezone", "parse_timestamps"]

#: A time at the end of a text timestamp with a UTC offset (or Z / UTC).
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})$"
# Plain patterns (no named groups or back-references) so pandas can hand them to
# pyarrow's vectorised regex kernels: 1M rows in well under a second.
_SEP = r"[-/.]"
_TIME = r"(?:[T ]\s*\d.*)?$"
_YEAR_FIRST = rf"^\d{{4}}{_SEP}\d{{1,2}}{_SEP}\d{{1,2}}{_TIME}"
_NUMERIC = rf"^\d{{1,2}}{_SEP}\d{{1,2}}{_SEP}(?:\d{{4}}|\d{{2}}){_TIME}"
_PADDED_ISO = rf"^\d{{4}}-\d{{2}}-\d{{2}}{_TIME}"
#: Canonical (ISO) text whose time, if any, is midnight: a daily bar.
_MIDNIGHT = r"^\d{4}-\d{2}-\d{2}(?:[T ]\s*00:00(?::00(?:\.0+)?)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})?$"
#: Layouts with month names, tried in order when pandas cannot name one from the first row.
_NAMED_MONTHS = (
    "%d-%b-%y", "%d-%b-%Y", "%d %b %Y", "%d %b %y", "%b %d, %Y", "%b %d %Y",
    "%d %B %Y", "%B %d, %Y", "%B %d %Y", "%d-%B-%Y",
)  # fmt: skip
_EXAMPLE_FORMATS = "e.g. --date-format '%d/%m/%Y' (day first) or '%m/%d/%Y' (month first)"


class DataImportError(ValueError):
    """Source data cannot be imported; the message names the file, the column and the fix."""


@dataclass(frozen=True)
class ParsedTimes:
    """UTC timestamps of one column and how they were read.

    ``utc`` is tz-aware UTC, one per row; ``daily`` is True when every value was a date
    (or midnight) and so is stored at 00:00 UTC of that date; ``layout`` says how the text
    was read: ``iso``, ``day-first``, ``month-first``, a strftime format, or ``datetime``
    for a column that was already typed.
    """

    utc: pd.DatetimeIndex
    daily: bool
    layout: str

    def note(self, where: str) -> str | None:
        """A line for the import report when the reading was a choice the user should see."""
        if self.layout in ("day-first", "month-first"):
            return f"{where}: dates read {self.layout} (detected from a field above 12)"
        if self.layout.startswith("%"):
            return f"{where}: dates read with {self.layout!r}"
        return None


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA zone, else an error with a did-you-mean hint."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        match = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f" — did you mean {match[0]!r}?" if match else ""
        raise DataImportError(
            f"--timezone {name!r} is not an IANA time zone (e.g. 'America/New_York', 'UTC'){hint}"
        ) from None
    return name


def _rows(text: pd.Series, mask: np.ndarray, limit: int = 3) -> str:
    """``row 2: '13/01/2000'; row 9: …`` (CSV line numbers: header is line 1)."""
    picks = np.flatnonzero(mask)[:limit]
    return "; ".join(f"row {i + 2}: {text.iloc[i]!r}" for i in picks)


def _pad(iso: pd.Series, *, digits: bool = True) -> pd.Series:
    """``2000-3-5 …`` → ``2000-03-05 …`` (with ``digits``); a trailing `` UTC`` becomes ``Z``."""
    if digits:
        iso = iso.str.replace(r"^(\d{4})-(\d)-", r"\1-0\2-", regex=True)
        iso = iso.str.replace(r"^(\d{4}-\d{2})-(\d)(\D|$)", r"\1-0\2\3", regex=True)
    if iso.str.endswith("UTC").any():
        iso = iso.str.replace(r"\s*UTC$", "Z", regex=True)
    return iso


def _field(text: pd.Series, pattern: str) -> pd.Series:
    """The integer captured by ``pattern``'s one group in every row."""
    return text.str.replace(pattern, r"\1", regex=True).astype("int64")


def _numeric_order(first: pd.Series, second: pd.Series, text: pd.Series, where: str) -> str:
    """'day-first' or 'month-first' from the fields above 12, else refuse the file."""
    over_first = (first > 12).to_numpy()
    over_second = (second > 12).to_numpy()
    if over_first.any() and over_second.any():
        raise DataImportError(
            f"{where}: mixes day-first and month-first dates — a value above 12 comes first "
            f"in {_rows(text, over_first, 1)} and second in {_rows(text, over_second, 1)}; "
            f"fix the source, or pass the layout of most rows, {_EXAMPLE_FORMATS}"
        )
    if over_first.any():
        return "day-first"
    if over_second.any() or (first == second).all():
        return "month-first"  # a file of 01/01, 02/02, … reads the same either way
    raise DataImportError(
        f"{where}: dates like {text.iloc[0]!r} could be day-first or month-first (every "
        f"first and second field is 12 or less, so nothing tells them apart) — say which "
        f"with --date-format, {_EXAMPLE_FORMATS}"
    )


def _canonical(text: pd.Series, where: str) -> tuple[pd.Series, str] | None:
    """Numeric dates rewritten year first, and their layout; None for month-name dates."""
    if text.str.match(_PADDED_ISO).all():
        return _pad(text, digits=False), "iso"
    is_yf = text.str.match(_YEAR_FIRST).to_numpy(dtype=bool)
    is_num = text.str.match(_NUMERIC).to_numpy(dtype=bool)
    if not (is_yf.any() or is_num.any()):
        return None
    if is_yf.all():
        iso = text.str.replace(rf"^(\d{{4}}){_SEP}(\d{{1,2}}){_SEP}", r"\1-\2-", regex=True)
        return _pad(iso), "iso"
    if not is_num.all():
        odd = ~is_num if is_num.sum() >= is_yf.sum() else ~is_yf
        raise DataImportError(
            f"{where}: the dates do not share one layout ({_rows(text, odd)} differ from "
            f"the rest) — write every date the same way (ISO-8601, 2024-01-02), or pass "
            f"the layout of the file, {_EXAMPLE_FORMATS}"
        )
    first = _field(text, rf"^(\d{{1,2}}){_SEP}.*$")
    second = _field(text, rf"^\d{{1,2}}{_SEP}(\d{{1,2}}){_SEP}.*$")
    order = _numeric_order(first, second, text, where)
    swap = r"\3-\2-\1" if order == "day-first" else r"\3-\1-\2"
    iso = text.str.replace(
        rf"^(\d{{1,2}}){_SEP}(\d{{1,2}}){_SEP}(\d{{4}}|\d{{2}})(\D|$)", swap + r"\4", regex=True
    )
    short = iso.str.match(r"^\d{2}-").to_numpy(dtype=bool)
    if short.any():  # two-digit years as strptime's %y reads them: 69-99 → 19xx, 00-68 → 20xx
        year = _field(iso[short], r"^(\d{2})-.*$")
        iso[short] = np.where(year < 69, "20", "19") + iso[short]
    return _pad(iso), order


def _named_month_format(text: pd.Series, where: str) -> str:
    """The first month-name layout that reads every row (pandas' guess first)."""
    guess = guess_datetime_format(str(text.iloc[0]))
    for fmt in ([guess] if guess else []) + list(_NAMED_MONTHS):
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if parsed.notna().all():
            return fmt
    raise DataImportError(
        f"{where}: cannot tell the layout of dates like {text.iloc[0]!r} — use ISO-8601 "
        f"(2024-01-02, 2024-01-02T14:30:00Z) or pass --date-format, e.g. '%d-%b-%Y'"
    )


def _parse_iso_quickly(iso: pd.Series) -> tuple[pd.DatetimeIndex, bool] | None:
    """One vectorised ISO parse when every row is valid with one (or no) offset, else None.

    Returns naive stamps (daily: each bar's own date; else wall-clock times) or aware
    ones, and whether the bars are daily (every value midnight where it was written).
    """
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(iso, format="ISO8601"))
    except (ValueError, TypeError, OverflowError):
        return None
    if stamps.isna().any():
        return None
    wall = stamps.tz_localize(None) if stamps.tz is not None else stamps
    if bool((wall == wall.normalize()).all()):
        return wall.normalize(), True
    return stamps, False


def _parse_text(
    text: pd.Series, date_format: str | None, where: str
) -> tuple[pd.DatetimeIndex, bool, str]:
    """Text → (naive or UTC stamps, daily?, layout); every row read with one layout."""
    if date_format is not None:
        if "%" not in date_format:
            raise DataImportError(
                f"--date-format {date_format!r} has no strftime codes — write it like "
                "'%d/%m/%Y' (%d day, %m month, %Y four-digit year, %H:%M time)"
            )
        aware = "%z" in date_format or "%Z" in date_format
        parsed = pd.to_datetime(text, format=date_format, errors="coerce", utc=aware)
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise DataImportError(
                f"{where}: {int(bad.sum()):,} values do not match --date-format "
                f"{date_format!r} ({_rows(text, bad)}) — check the format against the file"
            )
        stamps = pd.DatetimeIndex(parsed)
        daily = stamps.tz is None and bool((stamps == stamps.normalize()).all())
        return stamps, daily, date_format
    found = _canonical(text, where)
    if found is None:
        fmt = _named_month_format(text, where)
        stamps = pd.DatetimeIndex(pd.to_datetime(text, format=fmt))
        return stamps, bool((stamps == stamps.normalize()).all()), fmt
    iso, layout = found
    quick = _parse_iso_quickly(iso)
    if quick is not None:
        return (*quick, layout)
    # Mixed offsets, naive beside aware, or bad rows: the careful path says which.
    aware = iso.str.contains(_OFFSET, regex=True).to_numpy(dtype=bool)
    if aware.any() and not aware.all():
        raise DataImportError(
            f"{where}: mixes times with and without a UTC offset "
            f"(e.g. {text.iloc[int(np.flatnonzero(~aware)[0])]!r}) — write every time with "
            "an offset, or none and pass --timezone"
        )
    daily = bool(iso.str.match(_MIDNIGHT).all())
    if daily:  # the session date, whatever offset came with it
        iso = iso.str.slice(0, 10)
    parsed = pd.to_datetime(
        iso, format="ISO8601", errors="coerce", utc=bool(aware.all()) and not daily
    )
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise DataImportError(
            f"{where}: {int(bad.sum()):,} timestamps are not valid dates ({_rows(text, bad)}) "
            "— fix them at the source, or pass --date-format if the layout was misread"
        )
    return pd.DatetimeIndex(parsed), daily, layout


def _localise(stamps: pd.DatetimeIndex, timezone: str, where: str) -> pd.DatetimeIndex:
    try:
        local = stamps.tz_localize(check_timezone(timezone), ambiguous="raise", nonexistent="raise")
    except (ValueError, TypeError) as err:
        raise DataImportError(
            f"{where}: {err} — this wall-clock time does not exist or repeats in {timezone} "
            "(a daylight-saving change); export the file with UTC offsets to remove the doubt"
        ) from None
    return local.tz_convert("UTC")


def parse_timestamps(
    values: pd.Series, *, timezone: str = "UTC", date_format: str | None = None, where: str
) -> ParsedTimes:
    """One timestamp column (text or datetimes) → :class:`ParsedTimes` in UTC.

    ``values``: one per row; ``timezone``: IANA zone of naive intraday times; ``date_format``:
    a strftime format for text (ignored for a datetime-typed column); ``where`` names the
    file and column in every error (:class:`DataImportError`).
    """
    check_timezone(timezone)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise DataImportError(
            f"{where}: holds numbers ({values.iloc[0]!r}, …), not dates — convert epoch "
            "numbers to ISO-8601 text or datetimes before importing"
        )
    typed = isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values)
    if typed:
        stamps, layout = pd.DatetimeIndex(values), "datetime"
        empty = stamps.isna()
    else:
        text = values.astype("string").str.strip()
        empty = (text.isna() | (text == "")).to_numpy()
    if empty.any():
        raise DataImportError(f"{where}: {int(empty.sum()):,} empty timestamps — drop those rows")
    if typed:
        # A typed column is daily when every value is midnight in its own zone.
        daily = bool((stamps == stamps.normalize()).all())
        if daily and stamps.tz is not None:
            stamps = stamps.tz_localize(None)
    else:
        stamps, daily, layout = _parse_text(text.reset_index(drop=True), date_format, where)
    if daily:
        utc = stamps.normalize().tz_localize("UTC")
    elif stamps.tz is not None:
        utc = stamps.tz_convert("UTC")
    else:
        utc = _localise(stamps, timezone, where)
    return ParsedTimes(utc=utc, daily=daily, layout=layout)
