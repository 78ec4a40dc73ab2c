"""Timestamps read: the time column found, its stamps parsed to epoch seconds, and what clock they keep.

Plant exports write time every way there is: ISO stamps with or without offsets, ``d/m/y`` or
``m/d/y`` dates, dates and times of day in two columns, 12-hour clocks, epoch seconds to
nanoseconds, Excel serial dates. Each reading here is decided once for the whole column (pandas
guesses per value) and says so in a note where it had to guess; what cannot be read raises
:class:`~sensorguard.training.tables.DataError` with one line naming the file and column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sensorguard.training.tables import TIME_NAMES, DataError, cols

DATE_NAMES = {"date", "datum", "fecha", "data", "dato", "day"}  # beside a time-of-day column
EXCEL_EPOCH_DAYS = 25569  # 1970-01-01 as an Excel serial date


def find_time_column(frame: pd.DataFrame, time_column: str | None, name: str) -> str:
    if time_column is not None:
        if time_column not in frame.columns:
            raise DataError(f"{name}: time column {time_column!r} not found (columns: {cols(frame)})")
        return time_column
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    for candidate in TIME_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    for col in frame.columns:  # a column stored as dates (Parquet: an unnamed DatetimeIndex is "index")
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            return col
    for col in frame.columns:  # first text column that parses as dates
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            head = frame[col].dropna().astype(str).head(50)
            if len(head) and pd.to_datetime(head, errors="coerce", utc=True, format="mixed").notna().mean() > 0.9:
                return col
    raise DataError(f"{name}: no timestamp column found; name one with --time-column (columns: {cols(frame)})")


def parse_times(column: pd.Series, tcol: str, name: str, notes: list[str] | None = None,
                decimal_comma: bool = False) -> np.ndarray:
    """Timestamps to epoch seconds (float64). Numbers are epoch seconds (or ms when huge), or
    Excel serial dates (days since 1899-12-30) when they are days of 2000-2100 minutes apart.
    ``decimal_comma``: the file writes numbers so (a European locale), where ``01/03`` is March 1st."""
    if not len(column):
        raise DataError(f"{name}: no data rows (a header only)")
    written = column  # (what a bad stamp's note quotes)
    if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_datetime64_any_dtype(column):
        numbers = pd.to_numeric(column, errors="coerce")  # epoch stamps with a "--" among them: text to pandas
        if numbers.notna().mean() > 0.5:  # ("300 unparseable timestamps (e.g. '1767225600')": found by review)
            column = numbers.astype(np.float64)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        secs = column.to_numpy(dtype=np.float64)
        size = np.nanmedian(np.abs(secs)) if np.isfinite(secs).any() else 0.0
        for limit, per_second in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):  # epoch ns, us, ms
            if size > limit:
                secs = secs / per_second
                break
        else:
            if _excel_days(secs):
                secs = np.round((secs - EXCEL_EPOCH_DAYS) * 86400.0, 3)  # (a day's float holds ~1 us)
                if notes is not None:
                    notes.append(f"column {tcol!r} read as Excel serial dates (days since 1899-12-30)")
    else:
        day_first, guessed = _day_first(column, name, decimal_comma)
        parsed = pd.to_datetime(column, errors="coerce", utc=True, format="mixed", dayfirst=day_first)
        if guessed is not None and notes is not None:
            notes.append(_ambiguous_note(tcol, day_first, *guessed, decimal_comma))
        secs = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    bad = ~np.isfinite(secs)
    if bad.mean() > 0.01 or bad.all():
        example = written[bad].astype(str).iloc[0] if bad.any() else "?"
        raise DataError(f"{name}: {int(bad.sum())} unparseable timestamps in column {tcol!r} (e.g. {example!r})")
    if bad.any():
        secs = secs.copy()
        secs[bad] = np.nan
        if notes is not None:  # those rows are dropped: say so
            example = written[bad].astype(str).iloc[0]
            notes.append(f"{int(bad.sum())} row{'s' if bad.sum() > 1 else ''} with unparseable timestamps in column "
                         f"{tcol!r} left out (e.g. {example!r})")
    return secs


ZONED = r"(?:Z|[+-]\d\d:?\d\d)$"  # a stamp that says its UTC offset


def zoned_stamps(column: pd.Series) -> np.ndarray | None:
    """Per stamp, whether it says its UTC offset (``Z``, ``+01:00``), as text; None for a column of
    numbers (every stamp is looked at: with offsets after the first 200, one without beside one
    with, an hour apart, was read as a clock going back: a walk)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return None
    return column.dropna().astype(str).str.strip().str.contains(ZONED, regex=True).to_numpy(dtype=bool)


def local_clock(column: pd.Series, zoned: np.ndarray | None) -> bool:
    """Whether timestamps are a wall clock without a zone (text without a UTC offset or ``Z``, or
    Excel serial dates): the clock plant exports keep, which turns back an hour each autumn.
    ``zoned``: :func:`zoned_stamps` of the column."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return _excel_days(column.to_numpy(dtype=np.float64))
    return zoned is not None and len(zoned) > 0 and not zoned.any()


def _excel_days(values: np.ndarray) -> bool:
    """Whether numbers look like Excel serial dates: every one a day of 2000-2100 and the typical
    step an hour or less (read as epoch seconds they were minutes of 1970-01-01)."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2 or not ((finite > 36525) & (finite < 73051)).all():  # 2000-2100
        return False
    steps = np.diff(np.sort(finite))
    steps = steps[steps > 0]  # at most an hour as days: elapsed seconds step more at 10 Hz or less
    return bool(len(steps)) and float(np.median(steps)) <= 1 / 24 + 1e-9


def dates_only(column: pd.Series) -> bool:
    """Whether a text column holds dates without times of day (``14.03.2024``, ``2024-03-14``)."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    text = column.dropna().astype(str).str.strip().head(200)
    return bool(len(text)) and text.str.fullmatch(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}").mean() > 0.9


def _day_first(column: pd.Series, name: str,
               decimal_comma: bool = False) -> tuple[bool, tuple[str, float, float] | None]:
    """Whether ``d/m/y``-style dates put the day first, decided once for the whole column, and,
    when no field decided it, a date of the column that both readings take apart (a note quotes it)
    with the seconds the dates span read as taken and read the other way.

    pandas guesses per value, so 11/01 and 13/01 in one file came out as November 1st and January
    13th. A first field above 12 means day first, a second one month first (a column with both
    kinds is refused). With no field above 12, the reading whose rows span less time is taken: a
    log's rows are close together, and 01/12 ... 10/12 read month first put ten days of December a
    month apart each, Jan 12 to Oct 12 (found in a walk: such a file was read so, with a note).
    Where both span the same (every row on one date), the file's locale decides: day first where
    it writes decimal commas (a French or Spanish export of one day was read as January 3rd for
    March 1st: a walk), else month first, pandas' default.
    """
    text = column.dropna().astype(str).str.strip()
    fields = text.str.extract(r"^(?P<date>(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4})(?:\D|$)")
    shaped = fields[1].notna()
    if not len(text) or shaped.mean() < 0.5:
        return False, None  # ISO (year first) or another shape: nothing to decide
    if text[shaped].str.match(r"^\d{1,2}\.\d{1,2}\.").mean() > 0.5:
        return True, None  # 05.03.2024: dates written with dots put the day first (German, Nordic, Russian)
    first, second = fields[1][shaped].astype(int), fields[2][shaped].astype(int)
    if (first > 12).any() and (second > 12).any():
        raise DataError(f"{name}: dates in {column.name!r} put the day first in some rows and the month first in "
                        "others; write them as ISO 8601 (2024-01-13T10:00:00)")
    if (first > 12).any() or (second > 12).any():
        return bool((first > 12).any()), None  # a field above 12 decides it
    # no field above 12 anywhere: a guess where a date reads otherwise day first (05/03), not where
    # every day equals its month (01/01)
    apart = (first != second).to_numpy()
    if not apart.any():
        return False, None
    # the dates alone, each once (a million stamps of a few days parse in no time), read as pandas reads
    # them (a 2-digit year 99 is 1999, 00 is 2000: adding 2000 made 99 2099; a review)
    dates = pd.Series(fields["date"][shaped].unique())
    month, day = (_span(dates, day_first) for day_first in (False, True))
    day_first = bool(day < month) or (day == month and decimal_comma)
    return day_first, (str(text[shaped][apart].iloc[0]), *((day, month) if day_first else (month, day)))


def _span(dates: pd.Series, day_first: bool) -> float:
    """Seconds from the earliest to the latest of these dates, read day first or month first."""
    parsed = pd.to_datetime(dates, errors="coerce", format="mixed", dayfirst=day_first).dropna()
    return float((parsed.max() - parsed.min()).total_seconds()) if len(parsed) else 0.0


def _ambiguous_note(tcol: str, day_first: bool, example: str, taken: float, other: float,
                    decimal_comma: bool = False) -> str:
    """The note on dates no field above 12 decided: how they were read, and why."""
    how = "day first" if day_first else "month first"
    why = (f"their rows then span {_span_words(taken)}, not {_span_words(other)}" if taken != other
           else "the file writes decimal commas (a day-first locale)" if day_first
           else "both readings span the same time (pandas' default)")
    return (f"dates in column {tcol!r} (e.g. {example!r}) could put the day or the month first (no field is "
            f"above 12): read {how}, as {why}; write them as ISO 8601 (2024-01-13T10:00:00) to be sure")


def _span_words(seconds: float) -> str:
    """A span in the unit a reader would use: minutes, hours or days."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def time_of_day_only(column: pd.Series) -> bool:
    """Whether a text column holds times of day without dates (``10:00:00``): plant exports often
    split the date and the time into two columns. A 12-hour clock (``10:00:00 PM``) is one too:
    missed, its column was read as today's times and the date column left out (a walk)."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    text = column.dropna().astype(str).str.strip().head(200)
    return bool(len(text)) and text.str.fullmatch(CLOCK).mean() > 0.9


CLOCK = r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(\s*[AaPp]\.?[Mm]\.?)?"  # 10:00, 10:00:00.5, 10:00:00 PM
