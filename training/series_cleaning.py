"""One machine's rows cleaned as the daemon cleans them, and which notes say what that cleaning did.

:func:`clean_series` sorts the rows by time, keeps the first of each repeated stamp, holds them to
a bundle's rate, runs the sensor watch over them and then the one cleaning the daemon runs (grid
rows, forward fill, window restarts: :mod:`sensorguard.service.cleaning`), naming the rows labelled
anomalous it removed. Kept apart from :mod:`~sensorguard.training.data`, which reads a table and
finds its columns, machines and labels, and calls this for each machine's rows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sensorguard.service.cleaning import CleaningPolicy, admit_rows, clean_rows, infer_policy
from sensorguard.service.series_faults import watch_rows
from sensorguard.training.series import SensorData, renumber

# what the cleaning did to the rows (``clean_series``, ``_fill_and_segment``), as its notes begin after the count
CLEANING_NOTES = ("duplicate timestamps:", "grid rows inserted", "missing values forward-filled",
                  "rows still incomplete after filling", "window restarts")


def cleaning_note(note: str) -> bool:
    """Whether ``note`` says what the cleaning did to the rows (not how the file was read): replay
    sends the rows raw and said "kept the first row of each" of repeats it then sent (a walk)."""
    text = note.split(": ", 1)[1] if ": " in note and not note[:1].isdigit() else note  # ("pump-1: 3 ...")
    return any(phrase in text for phrase in CLEANING_NOTES)


_ROW = "\0row"  # (a label key no column can have) the input row of each kept row, while cleaning


def clean_series(times, values, labels, channels, fill_limit, notes, policy=None, sensors=None,
                 hold_rate=False) -> SensorData:
    """Sort one machine's rows by time, drop duplicate stamps, fill short gaps, split at long ones.

    A row labelled anomalous that the cleaning removes is named in a note: ``evaluate`` cannot
    judge it, and a fault inside a stretch of empty rows left no trace in its counts (found by review).
    """
    positives = {k: np.asarray(v) > 0 for k, v in labels.items()}
    stamps = times
    if labels:
        labels = {**labels, _ROW: np.arange(len(times))}  # which input row each kept row came from
    order = np.argsort(times, kind="stable")
    if (np.diff(times[np.isfinite(times)]) < 0).any():  # (a row without a time, sorted last, is not "out of order")
        notes.append("rows were not in time order: sorted")
    times, values = times[order], values[order]
    labels = {k: v[order] for k, v in labels.items()}
    dup = np.concatenate([[False], times[1:] == times[:-1]])
    if dup.any():  # the first, as the daemon keeps the first and rejects a repeat as duplicate_ts
        whole = times[np.isfinite(times)]
        minutes = dup.mean() > 0.5 and len(whole) > 0 and bool((np.mod(whole, 60.0) == 0).all())
        notes.append(f"{int(dup.sum())} duplicate timestamps: kept the first row of each" + (
            " (every stamp is a whole minute: were the seconds cut, as Excel's m/d/yyyy h:mm shows them? "
            "save the times with seconds)" if minutes else ""))  # (83 % of 10 s rows went, unsaid: a walk)
        keep = ~dup
        times, values = times[keep], values[keep]
        labels = {k: v[keep] for k, v in labels.items()}
    alive = None  # the stamps that keep the asset alive live: refused for their rate, or taken
    if hold_rate and policy is not None:  # a bundle's grid: readings off its rate are not taken, as live
        ok = np.isfinite(times)
        times, values = times[ok], values[ok]
        alive = times
        labels = {k: v[ok] for k, v in labels.items()}
        keep, counts = admit_rows(times, policy)
        if not keep.all():
            times, values = times[keep], values[keep]
            labels = {k: v[keep] for k, v in labels.items()}
            notes.append(f"published off the model's {policy.sample_period:.4g} s grid: {counts['resampled']} "
                         f"readings resampled away (too fast), {counts['slow_rate']} refused (too slow)")
    faulted = None
    if sensors is not None:  # before cleaning, in time order, as the daemon's watch sees readings
        ok = np.isfinite(times)
        times, values = times[ok], values[ok]
        labels = {k: v[ok] for k, v in labels.items()}
        values, faulted, opened = watch_rows(times, values, sensors, alive)
        if opened:
            names = ", ".join(sensors.channels[j] for j in np.flatnonzero(faulted.any(axis=0)))
            notes.append(f"{opened} sensor faults opened ({names}): those channels are held and left out of the "
                         "score")
    data = _fill_and_segment(times, values, labels, channels, fill_limit, notes, policy, faulted)
    if not positives:
        return data
    rows = np.unique(data.labels[_ROW])
    for column, positive in positives.items():
        # a repeated stamp is judged by its first row: lost only where that row is not labelled anomalous too
        judged = np.unique(stamps[rows[positive[rows]]])
        if lost := int((~np.isin(np.unique(stamps[positive]), judged)).sum()):
            notes.append(f"{lost} rows labelled anomalous in {column!r} removed by the cleaning (readings off the "
                         "model's rate, rows still incomplete after filling, no valid time, a repeated stamp "
                         "whose first row is labelled normal): not judged")
    return replace(data, labels={k: v for k, v in data.labels.items() if k != _ROW}, notes=tuple(notes))


def _fill_and_segment(
    times: np.ndarray,
    values: np.ndarray,
    labels: dict[str, np.ndarray],
    channels: tuple[str, ...],
    fill_limit: int,
    notes: list[str],
    policy: CleaningPolicy | None = None,
    faulted: np.ndarray | None = None,
) -> SensorData:
    """Grid rows, forward fill and window restarts by the one cleaning implementation the daemon runs."""
    ok_time = np.isfinite(times)
    times, values = times[ok_time], values[ok_time]
    labels = {k: v[ok_time] for k, v in labels.items()}
    if policy is None:
        policy = infer_policy(times, fill_limit)
        if policy.sample_period is not None and not policy.regular:
            notes.append("sampling is irregular: no gap filling, only splits at long gaps")
    elif len(times) > 1 and policy.sample_period:
        own = float(np.median(np.diff(times)))
        if abs(own - policy.sample_period) > 0.1 * policy.sample_period:
            notes.append(f"sampled every {own:.4g} s, the model every {policy.sample_period:.4g} s: "
                         "gaps are judged on the model's grid (resample the file, or train a model at its rate)")
    new_times, new_values, segment, source, counts = clean_rows(times, values, policy)
    if counts["inserted"]:
        notes.append(f"{counts['inserted']} grid rows inserted in short gaps and forward-filled "
                     f"(up to {policy.fill_limit} samples)")
    if counts["filled"]:
        notes.append(f"{counts['filled']} missing values forward-filled (up to {policy.fill_limit} in a row)")
    if counts["dropped"]:
        notes.append(f"{counts['dropped']} rows still incomplete after filling: dropped, series split there")
    if counts["restarts"]:
        notes.append(f"{counts['restarts']} window restarts (long gaps, dropped rows): "
                     f"{counts['restarts'] + 1} segments")
    return SensorData(
        values=new_values,
        times=new_times,
        segments=renumber(segment),
        channels=channels,
        sample_period=policy.sample_period,
        labels={k: v[source] for k, v in labels.items()},
        notes=tuple(notes),
        cleaning=policy,
        faulted=None if faulted is None else faulted[ok_time][source],
    )
