"""How a file's clock is read when it is not a clock, or when it is a local one.

A plant export's time column says more than it seems: a temperature named as the time column by
mistake reads as 1970 stamps (:func:`not_a_clock`), and a local wall clock without a UTC offset
repeats an hour in autumn (:func:`turned_back_hours`) and skips one in spring
(:func:`sprang_forward`). Kept apart from ``tables`` (finding the columns and reading the stamps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sensorguard.training.machines import machine_rows
from sensorguard.training.tables import DataError


def _machines(times: np.ndarray, groups: np.ndarray | None) -> list[np.ndarray]:
    """Each machine's row numbers (machines by name; None: one machine, every row)."""
    return [np.arange(len(times))] if groups is None else [rows for _, rows in sorted(machine_rows(groups).items())]


def _period(step: np.ndarray) -> float | None:
    """The typical rise between readings (the median), or None when there is none or it is over
    30 minutes: an hour's clock change is then no longer told from a step."""
    rising = step[step > 0]
    return None if not len(rising) or (period := float(np.median(rising))) > 1800 else period


CLOCK_FALLS = (0.25, 0.9)  # a named time column's numbers falling between these shares of steps: a sensor


def not_a_clock(times: np.ndarray, groups: np.ndarray | None, tcol: str, name: str) -> None:
    """Refuse a time column named with ``--time-column`` whose numbers fall from one row to the next
    as often as a sensor's do (a random walk's half) within a machine's rows: one naming a
    temperature trained a model on 1970 stamps sorted by temperature, exit 0 (a walk). A column
    falling on nearly every step is a clock written newest first; several machines are judged
    each alone (interleaved, their stamps fall between machines)."""
    low, high = CLOCK_FALLS
    for rows in _machines(times, groups):
        steps = np.diff(times[rows][np.isfinite(times[rows])])
        if len(steps) >= 10 and low < (falls := float(np.mean(steps < 0))) < high:
            raise DataError(f"{name}: column {tcol!r} does not read as a clock: {falls:.0%} of its values fall from "
                            "one row to the next (a sensor? --time-column names the column of the timestamps)")


SWAPPED_STEPS = 5  # rows out of order beside a clock change: each back by at most this many steps, and few
FALL_MONTHS = (2, 3, 4, 10, 11)  # clocks go back in October or November (north), February to April (south)


def turned_back_hours(times: np.ndarray, values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, list]:
    """Local times where the clock went back an hour (daylight saving time ending), undone.

    In file order, each machine's times rise by about one step, then once fall back by an hour
    less a step (02:59 -> 02:00) and rise again: sorted, that hour's two passes interleaved and
    the second was dropped as duplicate stamps. The rows after each such fall are read an hour
    later, as the plant lived them (``score`` then writes their times an hour later too). Not when
    the repeated stamps hold the same varying values (an export appended twice, which stays
    duplicates), nor with sampling slower than every 30 minutes (a
    repeated hour is then a repeated stamp), nor when times also fall otherwise by more than a few
    steps or often (rows out of order: a shuffle, not a clock). A couple of rows swapped elsewhere
    turned it off and the repeated hour was dropped as duplicates (found in a walk). Only on a
    Sunday of a month clocks go back in, as :func:`sprang_forward`: an hour back on a June
    Tuesday (a clock set by hand) was read as one (a walk). Returns the times and the (corrected)
    times at which it happened."""
    out, where = times.copy(), []
    for rows in _machines(times, groups):
        rows = rows[np.isfinite(times[rows])]
        step = np.diff(times[rows])
        if (period := _period(step)) is None:
            continue
        falls = np.flatnonzero(step < 0)
        hour = (step[falls] >= -3600 - period / 2) & (step[falls] <= -3600 + 1.5 * period)
        clock, other = falls[hour], step[falls[~hour]]
        if not len(clock) or len(clock) > 8 or (other < -SWAPPED_STEPS * period).any() or len(other) > max(
                2, 0.01 * len(step)):
            continue
        for f in clock:
            fell, back = pd.Timestamp(times[rows[f]], unit="s"), pd.Timestamp(times[rows[f + 1]] + 3600, unit="s")
            if fell.month not in FALL_MONTHS or 6 not in (fell.day_of_week, back.day_of_week):  # (Chile's
                continue  # clocks go back at Saturday 24:00: the row before is a Saturday's, a review)
            before, after = rows[: f + 1], rows[f + 1:]
            again = np.isin(times[after], times[before])
            if again.any():
                same = pd.DataFrame(values[before]).assign(t=times[before]).drop_duplicates("t").set_index("t")
                repeat = values[after][again]
                varied = any(len(np.unique(c[np.isfinite(c)])) > 1 for c in repeat.T)  # (an idle machine's
                if varied and np.allclose(same.loc[times[after][again]].to_numpy(), repeat, equal_nan=True):
                    continue  # same flat values prove nothing) the same readings again: an export appended twice
            out[after] += 3600.0
            where.append(out[after[0]])
    return out, where


SPRING_MONTHS = (3, 4, 9, 10)  # clocks go forward in March or April (north), September or October (south)


def sprang_forward(times: np.ndarray, groups: np.ndarray | None) -> list[float]:
    """Local times where the clock went forward an hour (daylight saving time starting, 01:59 ->
    03:00, or 00:59 -> 02:00 in the UK): a step of an hour and a sample period that skips one whole
    hour of the clock, on a Sunday of a month clocks change in; once per time, whatever the number
    of machines. That hour holds no readings; said, as the autumn hour is (a walk found it unsaid,
    31 rows unscored). A nightly outage of an hour in January is no clock change (a review)."""
    where: dict[float, None] = {}
    for rows in _machines(times, groups):
        t = np.sort(times[rows][np.isfinite(times[rows])])
        step = np.diff(t)
        if (period := _period(step)) is None:
            continue
        for k in np.flatnonzero(np.abs(step - 3600 - period) <= period / 2):
            before, after = pd.Timestamp(t[k], unit="s"), pd.Timestamp(t[k + 1], unit="s")
            skipped = (before + pd.Timedelta(hours=1)).floor("h")  # the whole hour the clock skipped
            if (after.floor("h") == skipped + pd.Timedelta(hours=1) and before.month in SPRING_MONTHS
                    and 6 in (before.day_of_week, after.day_of_week)):  # (Saturday 24:00 -> Sunday 01:00: Chile)
                where[float(t[k + 1])] = None
    return list(where)
