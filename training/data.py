"""Loading sensor history and cleaning it (reading the table and finding its columns:
``tables.py``; each machine's rows cleaned: ``series_cleaning.py``; splitting by time and windows:
``splits.py``).

Real plant exports are messy: semicolon CSVs, unsorted rows, repeated timestamps, short dropouts
and long outages, a label column next to the sensors. ``load_frame`` turns any of that into one
clean, time-sorted frame of float channels plus a segment id per row (a new segment starts at
every long gap, so no window ever spans an outage) and a list of notes saying what it did.
Every problem a user can cause raises :class:`DataError` with one readable line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sensorguard.service.cleaning import CleaningPolicy, infer_policy
from sensorguard.service.logs import some
from sensorguard.service.sensors import SensorRules
from sensorguard.training.clocks import clock_notes, not_a_clock, second_clocks, sprang_forward, turned_back_hours
from sensorguard.training.csvfiles import read_table
from sensorguard.training.machines import machine_hint, machine_rows, rates_apart, shown_name, spaced_names
from sensorguard.training.markers import no_data_markers
from sensorguard.training.series import SensorData, concat_series, drop_labeled
from sensorguard.training.series_cleaning import clean_series
from sensorguard.training.stamps import (
    DATE_NAMES,
    dates_only,
    find_time_column,
    local_clock,
    parse_times,
    time_of_day_only,
    zoned_stamps,
)
from sensorguard.training.tables import (
    BLANK_LABELS,
    DataError,
    choose_channels,
    cols,
    label_named,
    label_rows,
    reads_as_labels,
    to_numbers,
    unreadable_note,
)

__all__ = ["DataError", "SensorData", "concat_series", "drop_labeled", "load_frame", "machine_rows", "read_table",
           "series_from_frame"]


def load_frame(
    paths: Sequence[str | Path],
    time_column: str | None = None,
    channels: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    label_column: str | None = None,
    fill_limit: int = 5,
    asset_column: str | None = None,
    policy: CleaningPolicy | None = None,
    sensors: SensorRules | None = None,
    normal: bool = False,
    trained_asset_column: str | None = None,
) -> SensorData:
    """Load, sort, de-duplicate, then clean as the daemon does (:mod:`sensorguard.service.cleaning`).

    fill_limit: gaps of up to this many missing samples are forward-filled; longer gaps start a
    new segment. policy: the cleaning policy to apply (a bundle's, when scoring); None: inferred
    from the data (training) with ``fill_limit``. sensors: a bundle's sensor limits: faulted
    channels are held and marked (``faulted``) as the daemon does.
    asset_column: rows of several machines in one table (default: a column named ``asset``, as
    written by the daemon's recorder); each machine is cleaned as its own series.
    normal: the rows are taken as normal data (``train``, ``calibrate``, ``retrain``): the rows a
    label-like column marks are noted (not for ``score`` or ``replay``, which learn nothing).
    trained_asset_column: the column that named the machines when the model was trained (its
    bundle's), taken when ``asset_column`` is not given and the table has it.
    """
    if not paths:
        raise DataError("no data files given")
    frames = [read_table(p) for p in paths]
    columns = list(frames[0].columns)
    for k, (p, f) in enumerate(zip(paths[1:], frames[1:], strict=True), start=1):
        if set(f.columns) != set(columns):  # (it said "columns differ" alone, also for another order: a walk)
            missing = [c for c in columns if c not in set(f.columns)]
            extra = [c for c in f.columns if c not in set(columns)]
            said = [*([f"without {some(missing)}"] if missing else []), *([f"with {some(extra)} too"] if extra else [])]
            raise DataError(f"{p}: columns differ from {paths[0]}: {'; '.join(said)} (every file needs the same "
                            "columns, in any order)")
        attrs = f.attrs
        frames[k] = f[columns]  # the same columns in another order: lined up by name
        frames[k].attrs = attrs
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame.attrs["notes"] = list(dict.fromkeys(n for f in frames for n in f.attrs.get("notes", ())))
    frame.attrs["decimal_comma"] = any(f.attrs.get("decimal_comma") for f in frames)
    name = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"
    return series_from_frame(frame, name, time_column, channels, exclude, label_column, fill_limit, asset_column,
                             policy, sensors, normal, trained_asset_column)


def _absent(frame: pd.DataFrame, channels: Sequence[str], known: set) -> list[str]:
    """The model's channels ``frame`` lacks, when it can be read as a feed without them: fewer than
    those it has, and no column of its own that is not the model's (``known``: time, machines, labels)
    that could be one of them misspelled or renamed (``C`` for ``c``: a review). Else none."""
    absent = [c for c in channels if c not in frame.columns]
    if len(absent) * 2 >= len(channels) or any(c not in known and c not in channels  # a label-named column
                                               and not label_named(frame[c])  # is no renamed sensor
                                               for c in frame.columns):
        return []
    return absent


def _sensor_like(cells: pd.Series) -> bool:
    """Whether a column reads as measurements: 20 or more filled cells, nearly all numbers, most
    with a fraction (machine names are words or whole numbers)."""
    filled = cells[cells.notna() & (cells.astype(str).str.strip() != "")]  # (gaps are no words: a review)
    numbers = pd.to_numeric(filled, errors="coerce")
    finite = numbers[np.isfinite(numbers)]
    return len(filled) >= 20 and len(finite) >= 0.9 * len(filled) and bool((finite % 1 != 0).mean() > 0.5)


def trained_asset_column(bundle: Any) -> str | None:
    """The column that named the machines when ``bundle`` was trained (``training.asset_column``),
    for :func:`load_frame`'s ``trained_asset_column``; None without a bundle or one."""
    return None if bundle is None else (bundle.training or {}).get("asset_column")


def series_from_frame(
    frame: pd.DataFrame,
    name: str,
    time_column: str | None = None,
    channels: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    label_column: str | None = None,
    fill_limit: int = 5,
    asset_column: str | None = None,
    policy: CleaningPolicy | None = None,
    sensors: SensorRules | None = None,
    normal: bool = False,
    trained_asset_column: str | None = None,
) -> SensorData:
    """The cleaning half of :func:`load_frame`, for a table already in memory; ``name`` labels errors.

    policy: a bundle's cleaning policy (its readings off the bundle's rate are not taken, as live);
    None: inferred from the data (training: no rate to hold it to)."""
    notes: list[str] = list(frame.attrs.get("notes", ()))  # how the file was read (its encoding)
    hold_rate = policy is not None

    tcol = find_time_column(frame, time_column, name)
    if channels and tcol in channels:  # its values would be read as epoch seconds (a flow of 120: 1970); said
        # before they are read as times, which refuses a sensor's as no clock
        raise DataError(f"{name}: {tcol} is the time column and also a channel (the model's, or --channels)")
    stamps, dated, clocks = frame[tcol], tcol, {tcol}  # (dated: the column the dates are in, as notes name it)
    # a date column and a time-of-day column, as plant exports often write them (Date/Time, Datum/Uhrzeit)
    if time_of_day_only(stamps):
        dates = [c for c in frame.columns
                 if c != tcol and (str(c).strip().lower() in DATE_NAMES or dates_only(frame[c]))]
        if dates:
            stamps = frame[dates[0]].astype(str).str.strip() + " " + stamps.astype(str).str.strip()
            exclude, dated = (*exclude, dates[0]), dates[0]  # ("dates in column 'Time'": a walk)
            clocks.add(dates[0])
            notes.append(f"timestamps from columns {dates[0]!r} and {tcol!r} together")
        else:
            notes.append(f"column {tcol!r} holds times of day without dates: read as today's")
    elif dates_only(stamps):  # found (or named: --time-column Datum was refused with a hint that the seconds
        # were cut, a walk) the dates: the times sit beside them
        clock = next((c for c in frame.columns if c != tcol and time_of_day_only(frame[c])), None)
        if clock is not None:
            stamps = stamps.astype(str).str.strip() + " " + frame[clock].astype(str).str.strip()
            exclude = (*exclude, clock)
            clocks.add(clock)
            notes.append(f"timestamps from columns {tcol!r} and {clock!r} together")
    times = parse_times(stamps, dated, name, notes, decimal_comma=bool(frame.attrs.get("decimal_comma")))
    if asset_column is None and trained_asset_column in frame.columns:  # (forgotten, the machines were merged,
        asset_column = trained_asset_column  # two thirds of the rows dropped as duplicates, exit 0: a walk)
        notes.append(f"machines named by column {asset_column!r}, as when the model was trained (--asset-column)")
    elif asset_column is None:  # several machines in one table, the column named in any case
        asset_column = next((c for c in frame.columns if str(c).strip().lower() == "asset"), None)
        if asset_column is None and (hint := machine_hint(frame, tcol, times)) is not None:
            notes.append(hint)
    elif asset_column not in frame.columns:
        raise DataError(f"{name}: asset column {asset_column!r} not found (columns: {cols(frame)})")
    elif asset_column == label_column or asset_column in clocks:  # (the labels' 0 and 1 as two machines: a walk)
        raise DataError(f"{name}: {asset_column!r} is the {'label' if asset_column == label_column else 'time'} "
                        "column and cannot also name the machines (--asset-column)")
    elif label_column is None and reads_as_labels(frame[asset_column], name):  # (not named: the same mistake)
        raise DataError(f"{name}: {asset_column!r} reads as labels (0 normal, > 0 anomalous: --label-column "
                        f"{asset_column}) and cannot also name the machines (--asset-column)")
    elif _sensor_like(frame[asset_column]) and (
            names := frame[asset_column].nunique()) > frame[asset_column].notna().sum() // 2:  # (of the filled)
        # a sensor column named so was taken for thousands of one-row machines and said "too little
        # data" (a walk); a fleet snapshot (a row per machine, named or numbered) is no such column
        raise DataError(f"{name}: column {asset_column!r} has {names:,} different values in {len(frame):,} rows: a "
                        "column naming the machines repeats each name over its rows (--asset-column: is it a "
                        "sensor column?)")
    if time_column is not None and pd.to_numeric(stamps, errors="coerce").notna().mean() > 0.5:  # numbers named
        not_a_clock(times, frame[asset_column].astype(str).to_numpy() if asset_column is not None else None, tcol, name)
    if not channels:  # (an export's epoch column beside its text stamps was trained on as a sensor
        for col, unit in second_clocks(frame, times, {tcol, asset_column, label_column, *exclude, *clocks}):
            exclude = (*exclude, col)  # that only climbs: every later window scored over 10x the line, a walk)
            notes.append(f"column {col!r} holds the timestamps again (epoch {unit}): a second clock, left out "
                         "(name it in --channels to keep it)")
    if sensors is not None and not normal and channels and (
            absent := _absent(frame, channels, {tcol, asset_column, label_column, *exclude, *clocks})):
        # a model's channel the file lacks is missing in every row, as the daemon takes readings without it
        # (a missing fault, the model fills it in): refused here, old history could not be scored (a walk)
        frame = frame.assign(**dict.fromkeys(absent, np.nan))
        notes.append(f"{', '.join(map(repr, absent))} not in {name}: read as missing in every row, as the daemon "
                     "takes readings without it (a missing sensor fault; the model fills it in)")
    chosen = choose_channels(frame, tcol, channels, exclude, label_column, name, notes, asset_column, normal)
    values = frame[list(chosen)].apply(to_numbers).to_numpy(dtype=np.float64, copy=True)
    if (unreadable := unreadable_note(frame, chosen, values)) is not None:
        notes.append(unreadable)
    notes += no_data_markers(values, chosen, normal)
    zoned = zoned_stamps(stamps[np.isfinite(times)])  # (an unreadable one, left out, was counted as unzoned: a walk)
    if zoned is not None and zoned.any() and not zoned.all():  # (mixed: read as one clock going back, a walk)
        bare = int((~zoned).sum())
        notes.append(f"{bare} timestamp{'s' if bare != 1 else ''} without a UTC offset among ones with one: read "
                     "as UTC (give every stamp its offset)")
    if local_clock(stamps, zoned):
        groups = frame[asset_column].astype(str).to_numpy() if asset_column in frame.columns else None
        times, fell = turned_back_hours(times, values, groups)
        notes += clock_notes(fell, sprang_forward(times, groups))
    labels = {}
    if label_column is not None:
        if label_column not in frame.columns:
            raise DataError(f"{name}: label column {label_column!r} not found (columns: {cols(frame)})")
        labels[label_column] = label_rows(frame[label_column], label_column, name)
        if blank := blank_labels(frame[label_column]):
            notes.append(f"{blank} row{' has' if blank == 1 else 's have'} an empty {label_column} cell: "
                         f"{'it counts' if blank == 1 else 'they count'} as normal (0)")

    if asset_column is None:
        data = clean_series(times, values, labels, chosen, fill_limit, notes, policy, sensors, hold_rate)
    else:  # several machines in one file: each is its own series, never stitched to another
        if asset_column not in frame.columns:
            raise DataError(f"{name}: asset column {asset_column!r} not found (columns: {cols(frame)})")
        cells = frame[asset_column]
        blank = (cells.isna() | (cells.astype(str).str.strip() == "")).to_numpy()
        assets = np.where(blank, "", cells.astype(str).to_numpy()).astype(object)
        machines = sorted(machine_rows(assets).items())  # one pass, not a scan of every row per machine
        if blank.any():  # (they were a machine called "nan", scored and judged as one: a walk)
            machines = [(asset, rows) for asset, rows in machines if not blank[rows[0]]]
            times = np.where(blank, np.nan, times)  # no row of any machine: replay sends none (a review)
            notes.append(f"{int(blank.sum())} row{'s' if blank.sum() > 1 else ''} with an empty {asset_column} cell "
                         "left out: no machine to score them as")
            if not machines:
                raise DataError(f"{name}: every {asset_column} cell is empty: no machine to score")
        if twins := spaced_names([asset for asset, _ in machines]):  # ("P1 " was a machine of its own, unsaid)
            notes.append(f"machines whose names differ only in spaces are machines apart: {some(twins, 6)}")
        parts = []
        if policy is None:  # one policy for all machines: the bundle records one, serve applies one
            policy = infer_policy([np.unique(t[np.isfinite(t)]) for t in (times[rows] for _, rows in machines)],
                                  fill_limit)
            if policy.sample_period is not None and not policy.regular:
                notes.append("sampling is irregular: no gap filling, only splits at long gaps")
            if (rates := rates_apart([(asset, times[rows]) for asset, rows in machines])) is not None:
                notes.append(rates)
        for asset, rows in machines:
            part_notes: list[str] = []
            sub_labels = {k: v[rows] for k, v in labels.items()}
            part = clean_series(times[rows], values[rows], sub_labels, chosen, fill_limit, part_notes, policy,
                                sensors, hold_rate)
            parts.append(replace(part, assets=np.full(len(part), asset, dtype=object)))
            notes += [f"{shown_name(asset)}: {n}" for n in part_notes]
        data = replace(concat_series(parts, notes), source_assets=assets, asset_column=str(asset_column))
    if len(data) == 0:
        empty = [str(c) for j, c in enumerate(chosen) if not np.isfinite(values[:, j]).any()]
        why = "; ".join([*([f"no value at all in {', '.join(empty)}"] if empty else []), *data.notes])
        why = why or "all channels empty?"  # (a channel named in --channels with no value was not named)
        raise DataError(f"{name}: no complete rows after cleaning ({why})")
    raw = np.where(np.isfinite(values), values, np.nan)
    left_out = tuple(str(c) for c in frame.columns if c not in chosen and c not in (tcol, asset_column))
    return replace(data, source_times=times, source_values=raw, left_out=left_out)


def blank_labels(column: pd.Series) -> int:
    """How many label cells are empty, which :func:`label_rows` reads as normal: said in a note, since
    blanks inside a fault silently turned its rows into false alarms (a README walk)."""
    text = column.astype(str).str.strip().str.lower()
    return int((column.isna() | text.isin(BLANK_LABELS)).sum())
