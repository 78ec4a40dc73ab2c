"""A table of sensor history understood: its channels, its labels, its numbers.

Plant exports come as comma, semicolon or tab CSVs or Parquet, with label, id or setpoint columns
beside the sensors and numbers written with grouped thousands or decimal commas (the time column
is read by ``training/stamps.py``). Everything here raises
:class:`DataError` with one line naming the file and the problem (``training/data.py`` cleans
what these functions find).
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sensorguard.service.logs import some

BLANK_LABELS = ("", "nan", "none", "<na>")  # an empty label cell, as text: read as normal (0)
LABEL_NAMES = {"anomaly", "anomalies", "label", "labels", "is_anomaly", "target", "fault", "class", "y", "alert",
               "changepoint", "changepoints", "is_fault", "is_anomalous", "outlier", "is_outlier", "attack",
               # a German historian's fault flag (Störung, Störmeldung): trained on as a channel
               # and its rows as normal, where "fault" was left out and counted (a walk)
               "störung", "stoerung", "störmeldung", "stoermeldung", "anomalie"}
SENSOR_LIKE = {"y", "class", "target"}  # label names a sensor may bear too: labels only if whole numbers
TAKEN_AS_NORMAL = "taken as normal data"  # a label-like column's marked rows, read into a model's channels
TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts", "time_stamp", "date_time")


def name_key(column: object) -> str:
    """A column's name as :data:`LABEL_NAMES` holds them: stripped, lower case, composed (a macOS
    export writes ``ö`` as ``o`` and a combining mark)."""
    return unicodedata.normalize("NFC", str(column)).strip().lower()


class DataError(Exception):
    """Input data that cannot be used; the message is one line naming the file and the problem."""


GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")  # 1,034.5: thousands grouped with commas
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")  # 6,26 / 0,250 / 1013,25; 6,313 is either kind


def to_numbers(column: pd.Series) -> pd.Series:
    """A column's cells as numbers (NaN where a cell is not one), a number written with thousands
    separators (``"1,034.5"``, quoted in a comma CSV) included: coerced, it was missing and filled.
    A column holding one number only a decimal comma writes (``"6,26"``, ``"0,250"``: a comma CSV
    from a decimal-comma locale quotes them) has decimal commas in every cell: its ``"6,313"`` is
    6.313, where it was read as 6313 and ``"6,26"`` as missing (a walk)."""
    numbers = pd.to_numeric(column, errors="coerce")
    if pd.api.types.is_numeric_dtype(column) or not numbers.isna().any():
        return numbers
    text = column.astype(str).str.strip()
    unread = numbers.isna()
    commas = unread & text.str.fullmatch(DECIMAL_COMMA)
    grouped = unread & text.str.fullmatch(GROUPED)
    if (commas & ~grouped).any():
        numbers = numbers.astype(np.float64)
        numbers[commas] = pd.to_numeric(text[commas].str.replace(",", ".", regex=False), errors="coerce")
    elif grouped.any():
        numbers = numbers.astype(np.float64)
        numbers[grouped] = pd.to_numeric(text[grouped].str.replace(",", "", regex=False), errors="coerce")
    return numbers



def _as_columns(names: Sequence[str] | None, columns: Sequence[object]) -> list[str] | None:
    """``names`` from a comma-separated flag, with neighbours joined back where together they name a
    column: ``--channels "Temp, inlet (°C),Current"`` was refused as 'channels not found: Temp,
    inlet (°C)', naming a column that looked just like the one in the file (a walk)."""
    if not names:
        return None if names is None else list(names)
    known, items, out, i = set(columns), list(names), [], 0
    while i < len(items):
        joined = next((sep.join(items[i:j]) for j in range(len(items), i + 1, -1) for sep in (", ", ",")
                       if items[i] not in known and sep.join(items[i:j]) in known), None)
        out.append(items[i] if joined is None else joined)
        i += 1 if joined is None else joined.count(",") + 1
    return out


def choose_channels(
    frame: pd.DataFrame,
    tcol: str,
    channels: Sequence[str] | None,
    exclude: Sequence[str],
    label_column: str | None,
    name: str,
    notes: list[str],
    asset_column: str | None = None,
    normal: bool = False,
) -> tuple[str, ...]:
    channels, exclude = _as_columns(channels, frame.columns), tuple(_as_columns(exclude, frame.columns) or ())
    if channels and (both := [c for c in channels if c in exclude]):
        raise DataError(f"{name}: {', '.join(both)} in both --channels and --exclude")
    if channels:
        missing = [c for c in channels if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: channels not found: {', '.join(missing)} (columns: {cols(frame)})")
        if normal:  # calibrate and retrain in a model's channels: 194 fault rows set a line 25x higher,
            notes += _marks(frame, [c for c in frame.columns if c not in (tcol, label_column) and c not in channels
                                    and name_key(c) in LABEL_NAMES],  # unsaid (a README walk)
                            name, TAKEN_AS_NORMAL)
            others = [str(c) for c in frame.columns if c not in (tcol, label_column, asset_column, *channels, *exclude)
                      and name_key(c) not in (*LABEL_NAMES, "asset")
                      and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]
            # (an empty comments column reads as floats: it was named as one a new model could use, a walk)
            if others:  # (retrain dropped a new sensor's column without a word: a walk)
                notes.append(f"numeric columns not among the channels, left out: {some(others, 6)} (a model keeps the "
                             "channels it was trained on: train a new one to use them)")
                notes += _flag_marks(frame, others, "read as normal data")  # (said, not refused as a label's are)
        elif label_column is None:  # report drew no labels and evaluate was refused for want of them, unsaid
            for col in [c for c in frame.columns if c != tcol and c not in channels  # (a report walk)
                        and name_key(c) in LABEL_NAMES]:
                with contextlib.suppress(DataError):
                    if marked := int(label_rows(frame[col], str(col), name).sum()):
                        notes.append(f"{col} marks {marked} rows as anomalous: evaluate and report take them as "
                                     f"labels with --label-column {col}")
        return tuple(channels)
    unknown = [c for c in exclude if c not in frame.columns]
    if unknown:
        raise DataError(f"{name}: --exclude names unknown columns: {', '.join(unknown)}")
    chosen, constant, timelike, counters, labels, flags, text = [], [], [], [], [], [], []
    for col in frame.columns:
        lowered = str(col).strip().lower()
        if col in (tcol, label_column, asset_column) or col in exclude or lowered == "asset":
            continue
        if label_named(frame[col]):  # a label the
            labels.append(col)  # file carries must never feed the model; a vibration axis y of 0.231 is no label
            continue
        if re.fullmatch(r"unnamed: \d+", lowered) and _row_numbers(frame[col]):
            counters.append(str(col))  # a table written with its index (pandas' to_csv): not a sensor
            continue
        if lowered in TIME_NAMES or pd.api.types.is_datetime64_any_dtype(frame[col]):
            timelike.append(str(col))  # a second clock (elapsed seconds, a date): it only grows
            continue
        series = frame[col]
        if pd.api.types.is_bool_dtype(series):
            flags.append(str(col))
            continue
        numeric = to_numbers(series)
        share = numeric.notna().mean()
        if share >= 0.9:
            (chosen if numeric.nunique() > 1 else constant).append(str(col))
        else:  # mostly text or blanks ("Bad Input", dropouts): a sensor with gaps this long is not usable
            text.append(f"{col} ({100 * share:.0f} % numbers)")
    start = len(notes)
    if counters:
        notes.append(f"row-number columns left out: {', '.join(counters)} (name them in --channels to keep them)")
    if timelike:
        notes.append(f"time columns left out: {', '.join(timelike)} (name them in --channels to keep them)")
    if constant:  # a column constant through the whole file is an id or a setpoint more often than a sensor
        notes.append(f"constant columns left out: {', '.join(constant)} (name them in --channels to keep them)")
    if labels:
        notes.append(f"label-like columns left out: {', '.join(map(str, labels))} (name them in --channels to keep "
                     "them)")
        if normal:  # (replay trains nothing)
            notes += _marks(frame, labels, name, "trained on as normal")
    if normal:
        notes += _flag_marks(frame, chosen, "trained on as normal, as a channel")
    if flags:
        notes.append(f"true/false columns left out: {', '.join(flags)} (name them in --channels to keep them)")
    if text:
        notes.append(f"columns under 90 % numbers left out: {', '.join(text)} (name them in --channels to keep "
                     "them: their other values are read as missing)")
    if not chosen:
        why = "; ".join(n for n in notes[start:] if "left out" in n)  # (it was built and lost: a walk)
        raise DataError(f"{name}: no numeric sensor columns found ({why or f'columns: {cols(frame)}'})")
    return tuple(chosen)


def _fractional(column: pd.Series) -> bool:
    """Whether a column holds numbers with fractions (0.231): a reading, where labels are whole."""
    values = to_numbers(column).to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    return bool(len(values)) and bool(np.any(values != np.round(values)))


def _row_numbers(column: pd.Series) -> bool:
    """Whether a column counts the rows (0, 1, 2, ...): an index written with the table."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    return len(values) > 1 and bool(np.all(np.diff(values) == 1))


def cols(frame: pd.DataFrame) -> str:
    """The columns for an error line: at most 12, each cut to 40 characters. (A headerless file
    separated by spaces, Tennessee Eastman's ``d00.dat``, read as one column named by its whole
    first row: the line quoted 5,000 characters of numbers; a walk.)"""
    names = [str(c) for c in frame.columns]
    text = ", ".join(n if len(n) <= 40 else f"{n[:37]}... ({len(n)} characters)" for n in names[:12])
    text += ", ..." if len(names) > 12 else ""
    if len(names) == 1 and len(names[0].split()) > 2:
        text += "; one column whose name holds spaces: a file separated by spaces is not read (comma, semicolon " \
                "or tab are)"
    return text


MISSING_WORDS = ("nan", "null", "none", "n/a", "na", "-")  # cells that say "missing" in words: not worth a note


def unreadable_note(frame: pd.DataFrame, chosen: Sequence[str], values: np.ndarray) -> str | None:
    """A note naming the channels with cells that hold something but no number (``"35.06 C"``,
    ``"ERR"``), read as missing. Without it, a bundle's channel written with its unit in every
    cell was read as missing on every row and left out of the score, while ``score`` reported
    only "missing values forward-filled" (found by a README walk)."""
    said = []
    for j, col in enumerate(chosen):
        column = frame[col]
        if pd.api.types.is_numeric_dtype(column):
            continue
        text = column.astype(str).str.strip()
        bad = np.isnan(values[:, j]) & column.notna().to_numpy() & (text != "").to_numpy()
        bad &= ~text.str.lower().isin(MISSING_WORDS).to_numpy()
        if bad.any():
            example = text[bad].iloc[0]
            said.append(f"{col} {int(bad.sum())} of {len(column)} (e.g. {example[:20]!r})")
    if not said:
        return None
    return f"cells that are not numbers, read as missing: {'; '.join(said)}"


def label_named(column: pd.Series) -> bool:
    """Whether a column's name is a label's (``LABEL_NAMES``), and it is no vibration axis ``y`` of
    fractions (0.231 is no label)."""
    lowered = name_key(column.name)
    return lowered in LABEL_NAMES and not (lowered in SENSOR_LIKE and _fractional(column))


def reads_as_labels(column: pd.Series, name: str) -> bool:
    """Whether a column is one a file's labels would be in: a label's name (``LABEL_NAMES``, not a
    vibration axis of fractions) over values :func:`label_rows` reads."""
    if not label_named(column):
        return False
    try:
        rows = label_rows(column, str(column.name), name)
    except DataError:
        return False
    # labels mark a few rows anomalous among normal ones; machine numbers (1, 2, 3 in a column named
    # class or target) have no normal 0 or more than two values (a review)
    return bool((rows == 0).any()) and column.nunique(dropna=True) <= 2


def label_rows(column: pd.Series, label_column: str, name: str) -> np.ndarray:
    """0/1 per row from whole numbers (> 0 is anomalous), booleans or true/false text; empty is 0.
    Other text (``fault``/``normal``) is refused: read as 0 it would score every event as missed; so
    is a fraction (a temperature named as the label read every row as anomalous: a README walk), and
    a negative number (scikit-learn's -1 for an outlier beside 1 for an inlier read every inlier as
    anomalous and every outlier as normal)."""
    text = column.astype(str).str.strip().str.lower()
    mapped = text.map({"true": 1.0, "false": 0.0, **dict.fromkeys(BLANK_LABELS, 0.0)})
    numeric = pd.to_numeric(column, errors="coerce").astype(np.float64).fillna(mapped)
    numeric[column.isna().to_numpy()] = 0.0  # a blank cell is normal (pandas 3 keeps it NA through astype(str))
    bad = numeric.isna()
    if bad.any():
        raise DataError(f"{name}: label column {label_column!r} holds {column[bad].iloc[0]!r}; labels must be "
                        "numbers (> 0 anomalous) or true/false")
    negative = numeric < 0  # scikit-learn's outlier labels, -1 anomalous and 1 normal: read backwards (a walk)
    if negative.any():
        raise DataError(f"{name}: label column {label_column!r} holds {column[negative].iloc[0]}; labels must be "
                        "0 (normal) or > 0 (anomalous), or true/false: map a -1/1 column (scikit-learn's, -1 for "
                        "an outlier) to 1/0 first")
    fraction = numeric != np.round(numeric)  # a channel named as the label (35.06 C: every row "anomalous")
    if fraction.any():
        raise DataError(f"{name}: label column {label_column!r} holds {column[fraction].iloc[0]}; labels must be "
                        "whole numbers (0 normal, > 0 anomalous) or true/false: is it a sensor channel?")
    return (numeric.to_numpy() > 0).astype(np.int8)


def _marks(frame: pd.DataFrame, columns: Sequence[object], name: str, taken: str) -> list[str]:
    """A note per label-like column that marks rows, counted as ``--label-column`` would read it
    (a column that is not labels marks none), where those rows were ``taken`` as normal."""
    notes = []
    for col in columns:
        try:
            marked = int(label_rows(frame[col], str(col), name).sum())
        except DataError:
            continue
        if marked:
            notes.append(f"{col} marks {marked} rows: they were {taken} (--label-column {col} leaves them out)")
    return notes


def _flag_marks(frame: pd.DataFrame, columns: Sequence[str], taken: str) -> list[str]:
    """A note per column of another name than a label's that holds only 0 and 1, a few rows 1: a
    fault flag of a name not known here ("failure", "Fehler") reads as a channel or is left out,
    and its marked rows were ``taken`` as normal data without a word (only a line raised over 2x by
    them was said: an open end of session 74)."""
    notes = []
    for col in columns:
        values = to_numbers(frame[col]).dropna()
        ones = int((values == 1).sum())
        if 0 < ones < len(values) / 2 and values.isin((0, 1)).all():
            notes.append(f"{col} holds only 0 and 1 ({ones} of {len(values)} rows 1): if it marks faults, "
                         f"--label-column {col} leaves those rows out; they were {taken}")
    return notes
