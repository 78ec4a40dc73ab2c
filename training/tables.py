"""A table of sensor history read and understood: its delimiter, its time column, its channels.

Plant exports come as comma, semicolon or tab CSVs or Parquet, with the time in any column and
format, and label, id or setpoint columns beside the sensors. Everything here raises
:class:`DataError` with one line naming the file and the problem (``training/data.py`` cleans
what these functions find).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_NAMES = {"anomaly", "anomalies", "label", "labels", "is_anomaly", "target", "fault", "class", "y", "alert",
               "changepoint", "changepoints"}
TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts", "time_stamp", "date_time")


class DataError(Exception):
    """Input data that cannot be used; the message is one line naming the file and the problem."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one CSV (comma, semicolon or tab, detected) or Parquet file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV or Parquet file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            sample = fh.read(65536)
        if not sample.strip():
            raise DataError(f"{path}: file is empty")
        return pd.read_csv(path, sep=_sniff_delimiter(sample), low_memory=False)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for broken files
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0][:160]})") from None


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        header = sample.splitlines()[0]
        return max(",;\t", key=header.count)


def find_time_column(frame: pd.DataFrame, time_column: str | None, name: str) -> str:
    if time_column is not None:
        if time_column not in frame.columns:
            raise DataError(f"{name}: time column {time_column!r} not found (columns: {cols(frame)})")
        return time_column
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    for candidate in TIME_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    for col in frame.columns:  # first text column that parses as dates
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            head = frame[col].dropna().astype(str).head(50)
            if len(head) and pd.to_datetime(head, errors="coerce", utc=True, format="mixed").notna().mean() > 0.9:
                return col
    raise DataError(f"{name}: no timestamp column found; name one with --time-column (columns: {cols(frame)})")


def parse_times(column: pd.Series, tcol: str, name: str) -> np.ndarray:
    """Timestamps to epoch seconds (float64). Numbers are epoch seconds (or ms when huge)."""
    if not len(column):
        raise DataError(f"{name}: no data rows (a header only)")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        secs = column.to_numpy(dtype=np.float64)
        size = np.nanmedian(np.abs(secs)) if np.isfinite(secs).any() else 0.0
        for limit, per_second in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):  # epoch ns, us, ms
            if size > limit:
                secs = secs / per_second
                break
    else:
        parsed = pd.to_datetime(column, errors="coerce", utc=True, format="mixed", dayfirst=_day_first(column, name))
        secs = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    bad = ~np.isfinite(secs)
    if bad.mean() > 0.01 or bad.all():
        example = column[bad].astype(str).iloc[0] if bad.any() else "?"
        raise DataError(f"{name}: {int(bad.sum())} unparseable timestamps in column {tcol!r} (e.g. {example!r})")
    if bad.any():
        secs = secs.copy()
        secs[bad] = np.nan
    return secs


def _day_first(column: pd.Series, name: str) -> bool:
    """Whether ``d/m/y``-style dates put the day first, decided once for the whole column.

    pandas guesses per value, so 11/01 and 13/01 in one file came out as November 1st and January
    13th. A first field above 12 means day first; otherwise every row is read month first (a column
    with both kinds is refused).
    """
    text = column.dropna().astype(str).str.strip()
    fields = text.str.extract(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4}(?:\D|$)")
    shaped = fields[0].notna()
    if not len(text) or shaped.mean() < 0.5:
        return False  # ISO (year first) or another shape: nothing to decide
    first, second = fields[0][shaped].astype(int), fields[1][shaped].astype(int)
    if (first > 12).any() and (second > 12).any():
        raise DataError(f"{name}: dates in {column.name!r} put the day first in some rows and the month first in "
                        "others; write them as ISO 8601 (2024-01-13T10:00:00)")
    return bool((first > 12).any())  # no day above 12 anywhere: month first, pandas' default, for every row


def time_of_day_only(column: pd.Series) -> bool:
    """Whether a text column holds times of day without dates (``10:00:00``): plant exports often
    split the date and the time into two columns."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    text = column.dropna().astype(str).str.strip().head(200)
    return bool(len(text)) and text.str.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?").mean() > 0.9


def choose_channels(
    frame: pd.DataFrame,
    tcol: str,
    channels: Sequence[str] | None,
    exclude: Sequence[str],
    label_column: str | None,
    name: str,
    notes: list[str],
    asset_column: str | None = None,
) -> tuple[str, ...]:
    if channels:
        missing = [c for c in channels if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: channels not found: {', '.join(missing)} (columns: {cols(frame)})")
        return tuple(channels)
    unknown = [c for c in exclude if c not in frame.columns]
    if unknown:
        raise DataError(f"{name}: --exclude names unknown columns: {', '.join(unknown)}")
    chosen, constant, timelike = [], [], []
    for col in frame.columns:
        lowered = str(col).strip().lower()
        if col in (tcol, label_column, asset_column) or col in exclude or lowered in LABEL_NAMES or lowered == "asset":
            continue
        if lowered in TIME_NAMES or pd.api.types.is_datetime64_any_dtype(frame[col]):
            timelike.append(str(col))  # a second clock (elapsed seconds, a date): it only grows
            continue
        series = frame[col]
        if pd.api.types.is_bool_dtype(series):
            continue
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.notna().mean() >= 0.9:
            (chosen if numeric.nunique() > 1 else constant).append(str(col))
    if timelike:
        notes.append(f"time columns left out: {', '.join(timelike)} (name them in --channels to keep them)")
    if constant:  # a column constant through the whole file is an id or a setpoint more often than a sensor
        notes.append(f"constant columns left out: {', '.join(constant)} (name them in --channels to keep them)")
    if not chosen:
        raise DataError(f"{name}: no numeric sensor columns found (columns: {cols(frame)})")
    return tuple(chosen)


def cols(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
