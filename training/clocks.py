"""How a file's clock is read when it is not a clock, or when it is a local one.

A plant export's time column says more than it seems: a temperature named as the time column by
mistake reads as 1970 stamps (:func:`not_a_clock`), and a local wall clock without a UTC offset
repeats an hour in autumn (:func:`turned_back_hours`) and skips one in spring
(:func:`sprang_forward`); an epoch column beside the stamps is a second clock
(:func:`second_clocks`), no sensor. Kept apart from ``tables`` (finding the columns and reading the stamps).
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
SPRING_MONTHS = (3, 4, 9, 10)  # clocks go forward in March or April (north), September or October (south)
NIGHT_HOURS = 4  # a clock change's new time is at most this hour of the night (Chile 00:00, EU 03:00)
MISSING_AT_CHANGE = 3  # readings (at most SHORT_CHANGE_S of them) missing at a change: it is one still
SHORT_CHANGE_S = 900


def _changes(before: pd.Timestamp, after: pd.Timestamp, months: tuple[int, ...]) -> bool:
    """Whether a clock change between these local times (``after`` as the clock reads it once
    changed) could be daylight saving time: a month clocks change in, a Sunday on either side
    (Chile changes at Saturday 24:00), at night. A clock set back by hand at 15:37 on an October
    Sunday, or an hour back on a June Tuesday, was read as one (walks)."""
    return before.month in months and 6 in (before.day_of_week, after.day_of_week) and after.hour <= NIGHT_HOURS


def _missing(period: float) -> float:
    """The seconds of readings a clock change may miss and still be read as one."""
    return min(MISSING_AT_CHANGE * period, SHORT_CHANGE_S)


def _spring_end(t: np.ndarray, after: int, period: float) -> int | None:
    """The first row (index into ``t``, in file order) past ``after`` where a spring's change ends
    an autumn's correction: a step of an hour and a period (readings missing there allowed), in a
    month clocks go forward in, at night; any weekday, since the autumn was judged already (Israel
    goes forward on a Friday). Exact steps alone let one missing row carry the correction on to the
    file's end, an hour off from then (a review)."""
    step = np.diff(t)
    for k in np.flatnonzero((step > 3600 + period / 2) & (step <= 3600 + period + _missing(period))):
        if k > after and (now := pd.Timestamp(t[k + 1], unit="s")).month in SPRING_MONTHS and now.hour <= NIGHT_HOURS:
            return int(k)
    return None


def _springs(t: np.ndarray, period: float) -> np.ndarray:
    """Indices ``k`` of one machine's local times (in order) where the clock went forward an hour
    after row ``k`` (a step of an hour and a sample period skipping one whole hour of the clock)."""
    out = []
    for k in np.flatnonzero(np.abs(np.diff(t) - 3600 - period) <= period / 2):
        before, after = pd.Timestamp(t[k], unit="s"), pd.Timestamp(t[k + 1], unit="s")
        skipped = (before + pd.Timedelta(hours=1)).floor("h")  # the whole hour the clock skipped
        if after.floor("h") == skipped + pd.Timedelta(hours=1) and _changes(before, after, SPRING_MONTHS):
            out.append(k)
    return np.array(out, dtype=np.int64)


def turned_back_hours(times: np.ndarray, values: np.ndarray, groups: np.ndarray | None
                      ) -> tuple[np.ndarray, list[tuple[float, float | None]]]:
    """Local times where the clock went back an hour (daylight saving time ending), undone.

    In file order, each machine's times rise by about one step, then once fall back by an hour
    less a step (02:59 -> 02:00) and rise again: sorted, that hour's two passes interleaved and
    the second was dropped as duplicate stamps. The rows after each such fall, up to the next
    spring's change, are read an hour later, as the plant lived them (``score`` then writes their
    times an hour later too); after that change the clock is the summer's again (a year's file
    drifted an hour further at each autumn: a walk). Not when the repeated stamps hold the same
    varying values (an export appended twice, which stays duplicates), nor with sampling slower
    than every 30 minutes (a repeated hour is then a repeated stamp), nor when times also fall
    otherwise by more than a few steps or often (rows out of order: a shuffle, not a clock). A
    couple of rows swapped elsewhere turned it off and the repeated hour was dropped as
    duplicates; so did a row missing at the fall (walks: up to ``MISSING_AT_CHANGE`` may be, at
    either change). Only where :func:`_changes` allows.
    Returns the times and, per change, the (corrected) time it happened at and the spring change
    that ended it (None: none in the file)."""
    out, where = times.copy(), []
    for rows in _machines(times, groups):
        rows = rows[np.isfinite(times[rows])]
        step = np.diff(times[rows])
        if (period := _period(step)) is None:
            continue
        falls = np.flatnonzero(step < 0)
        hour = (step[falls] >= -3600 - period / 2) & (step[falls] <= -3600 + period + _missing(period))
        clock, other = falls[hour], step[falls[~hour]]
        if not len(clock) or len(clock) > 8 or (other < -SWAPPED_STEPS * period).any() or len(other) > max(
                2, 0.01 * len(step)):
            continue
        for f in clock:
            fell, back = pd.Timestamp(times[rows[f]], unit="s"), pd.Timestamp(times[rows[f + 1]] + 3600, unit="s")
            if not _changes(fell, back, FALL_MONTHS):
                continue
            end = _spring_end(times[rows], f, period)
            before, after = rows[: f + 1], rows[f + 1: None if end is None else end + 1]
            again = np.isin(times[after], times[before])
            if again.any():
                same = pd.DataFrame(values[before]).assign(t=times[before]).drop_duplicates("t").set_index("t")
                repeat = values[after][again]
                varied = any(len(np.unique(c[np.isfinite(c)])) > 1 for c in repeat.T)  # (an idle machine's
                if varied and np.allclose(same.loc[times[after][again]].to_numpy(), repeat, equal_nan=True):
                    continue  # same flat values prove nothing) the same readings again: an export appended twice
            out[after] += 3600.0
            where.append((float(out[after[0]]), None if end is None else float(times[rows[end + 1]])))
    return out, where


def sprang_forward(times: np.ndarray, groups: np.ndarray | None) -> list[float]:
    """Local times where the clock went forward an hour (daylight saving time starting, 01:59 ->
    03:00, or 00:59 -> 02:00 in the UK; :func:`_springs`), once per machine. That hour holds no
    readings; said, as the autumn hour is (a walk found it unsaid, 31 rows unscored). A nightly
    outage of an hour in January is no clock change (a review). A spring that ends an autumn's
    correction (:func:`turned_back_hours`) leaves no gap in the corrected times: not said."""
    where = []
    for rows in _machines(times, groups):
        t = np.sort(times[rows][np.isfinite(times[rows])])
        if (period := _period(np.diff(t))) is not None:
            where.extend(float(t[k + 1]) for k in _springs(t, period))
    return where


def _hour(ts: float) -> str:
    return f"{pd.Timestamp(ts, unit='s').floor('h'):%Y-%m-%d %H:%M}"


def clock_notes(fell: list[tuple[float, float | None]], sprang: list[float]) -> list[str]:
    """The notes for :func:`turned_back_hours` and :func:`sprang_forward`: one per change, however
    many machines it was seen on, by the hour it happened (machines sampling at other phases,
    or a minute apart, each had their own note: a walk)."""
    backs: dict[tuple[str, str | None], int] = {}
    for ts, until in fell:
        key = (_hour(ts), None if until is None else _hour(until))
        backs[key] = backs.get(key, 0) + 1
    forwards: dict[str, int] = {}
    for ts in sprang:
        forwards[_hour(ts)] = forwards.get(_hour(ts), 0) + 1

    def machines(n: int) -> str:
        return f"; {n} machines" if n > 1 else ""

    return [*(f"the clock went back an hour at {at} (daylight saving time ending, local times{machines(n)}): the "
              f"rows after it{'' if until is None else f' until it went forward again at {until}'} are read an "
              "hour later (give times with a UTC offset to avoid this)" for (at, until), n in backs.items()),
            *(f"the clock went forward an hour at {at} (daylight saving time starting, local times{machines(n)}): "
              "that hour holds no readings, a gap to the cleaning (give times with a UTC offset to avoid this)"
              for at, n in forwards.items())]


YEAR_2000 = 946684800.0  # epoch seconds


def second_clocks(frame: pd.DataFrame, times: np.ndarray, skip: set) -> list[tuple[str, str]]:
    """Numeric columns that hold each row's timestamp again, as epoch seconds, ms, us or ns, within
    26 hours (a local clock's offset and its daylight saving hour) and spanning as long: no sensor
    reads 946,684,800 or more, whatever its name. Each with its unit."""
    found: list[tuple[str, str]] = []
    timed = np.isfinite(times)
    if timed.sum() < 2 or np.min(times[timed]) < YEAR_2000:  # (elapsed seconds: a sensor's 60 sat within 26
        return found  # hours of stamps near 1970)
    for col in frame.columns:
        if col in skip or not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            continue
        values = frame[col].to_numpy(dtype=np.float64)
        if not np.nanmax(np.abs(values), initial=0.0) >= YEAR_2000:  # no stamp in any unit: the cheap test
            continue  # first (the four units on every column took 1.25 s for 42 columns of 1M rows; a review)
        both = timed & np.isfinite(values)
        if both.sum() < 0.9 * timed.sum():
            continue
        span = np.ptp(times[both])
        for per_second, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "us"), (1e9, "ns")):
            read = values[both] / per_second
            if np.max(np.abs(read - times[both])) <= 26 * 3600 and 0.5 * span <= np.ptp(read) <= 1.5 * span + 3600:
                found.append((str(col), unit))
                break
    return found
