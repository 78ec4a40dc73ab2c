"""One cleaning policy, one implementation: how a stream of readings becomes rows on a sample grid.

The daemon (per asset, one reading at a time) and the offline verbs (a whole file, rows sorted by
time) run the same :class:`Cleaner`, so they see the same rows, the same window restarts and so
the same scores. The policy is the bundle's (``bundle.json`` ``cleaning``, decided from the
training data); ``serve --fill-limit`` and ``--max-gap-s`` override it.

Per reading, in order:

1. **Gap.** More than ``restart_gap`` seconds since the previous reading (``fill_limit + 1.5``
   sample periods, from where more than ``fill_limit`` grid rows are missing, and at least
   ``1 + jitter``; ten times ``fill_limit + 1`` for irregular sampling) restarts the window, and forward fill
   has nothing to fill from. A shorter gap of more than 1.5 periods on a regular grid gets the
   missing grid rows inserted (``round(gap / period) - 1`` of them), every channel missing.
2. **Missing or NaN channel.** A channel absent from a reading, NaN or infinite, takes its last
   value, at most ``fill_limit`` rows in a row (counted per channel, inserted rows included).
3. **Incomplete row.** A row a channel cannot be filled in is dropped, and the next kept row
   starts a new window: no window holds a made-up value older than the fill limit. The channel's
   last real value stays the fill source for the others.

Duplicate and older timestamps are the caller's business (live: rejected and counted; offline:
rows are sorted and duplicate stamps dropped first).

Before all that, :meth:`Cleaner.admit` holds each reading against the model's rate (on a regular
grid only). The asset's publishing period is followed as the mean of its steps with two steps of
the model's period in front (so one short or long first step decides nothing), then, from the
sixth step, as a moving average (weight 1/8); each step is capped at two periods, so one outage
weighs little. A publisher twice too fast is recognised from its fifth step, three times from its
third. An asset publishing **faster** (its steps averaging under ``FAST_RATE``, 2/3 of a
period) is resampled: a reading less than ``period - average / 2`` after the last kept one is
dropped (``resampled``), which keeps every k-th reading of a publisher k times too fast (jitter
included), so the windows span the time the model learned. At the model's rate with jitter up to
0.3 periods either way nothing is dropped (tested over many seeds). An asset publishing
**slower** than ``SLOW_RATE`` (1.75) periods on average is refused (``slow_rate``):
sample-and-hold would feed the model staircases it never saw, and past ``fill_limit + 1.5`` periods
every reading would restart the window and nothing would ever be scored without a word. A feed at
the model's rate that loses readings is not slow: losing a share ``p`` averages ``1 + p`` periods
(steps capped at two), and at 1.5 one losing every third reading sat on the limit and had about
half its readings refused (a walk); at 1.75 it keeps them all, and a feed at half the model's
rate (2 periods) is still refused, from its seventh step. Both are counted (live:
``messages_rejected_total{reason}``; offline: a note).

>>> policy = CleaningPolicy(sample_period=1.0, fill_limit=2)
>>> cleaner = Cleaner(2)
>>> cleaner.step(0.0, [1.0, 5.0], policy), cleaner.step(1.0, [2.0, NAN], policy)
([(0.0, [1.0, 5.0], False)], [(1.0, [2.0, 5.0], False)])
>>> cleaner.step(4.0, [4.0, 6.0], policy)  # two grid rows; the second holds a channel filled too long
[(2.0, [2.0, 5.0], False), (3.0, None, False), (4.0, [4.0, 6.0], True)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NAN = float("nan")
REGULAR_TOLERANCE = 0.1  # a grid is regular when 80 % of the steps are within 10 % of the period
REGULAR_SHARE = 0.8
IRREGULAR_GAP_FACTOR = 10  # irregular sampling: only a much longer silence restarts the window
SLOW_RATE = 1.75  # an asset whose steps average over this many sample periods is refused (slow_rate)
FAST_RATE = 2 / 3  # ... under this many, it is resampled (at the model's rate, jitter drops nothing)
RATE_WEIGHT = 1 / 8  # of each step in the asset's moving average
RATE_PRIOR = 2  # steps of the model's period the average starts from: one odd first step decides nothing


@dataclass(frozen=True)
class CleaningPolicy:
    """How readings are put on the sample grid and filled (recorded in ``bundle.json``).

    sample_period: seconds between readings (the training data's median step); None: unknown.
    regular: the training data sat on a grid (gaps are filled); False: only long gaps restart.
    fill_limit: readings in a row a missing channel takes its last value.
    max_gap_s: a serve override of the gap that restarts the window (None: the bundle's).
    jitter: how far off the grid a reading may come, in periods: a step up to ``1 + jitter``
        periods is one step (no grid row inserted); below 1.
    gap_s: the bundle's gap that restarts the window (``restart_gap_s``; None: ``fill_limit + 1.5``
        sample periods (at least ``1 + jitter``), so a ``--fill-limit`` override moves it too).
    """

    sample_period: float | None = None
    regular: bool = True
    fill_limit: int = 5
    max_gap_s: float | None = None
    jitter: float = 0.5
    gap_s: float | None = None

    @property
    def restart_gap(self) -> float | None:
        """Seconds of silence after which the window restarts (None: never)."""
        if self.max_gap_s is not None:
            return self.max_gap_s
        if self.gap_s is not None:
            return self.gap_s
        if self.sample_period is None:
            return None
        if not self.regular:
            return IRREGULAR_GAP_FACTOR * (self.fill_limit + 1) * self.sample_period
        # a gap under n + 1.5 periods misses at most n grid rows (grid_rows rounds): still the fill
        # limit's, not a restart (at fill_limit 0 a reading 1.02 periods late restarted the window:
        # half of a jittered 10 s series); and a step up to 1 + jitter periods is no gap at all
        return max(1.0 + self.jitter, self.fill_limit + 1.5) * self.sample_period

    def grid_rows(self, gap: float) -> int:
        """Grid rows missing between two readings ``gap`` seconds apart (0 off a regular grid)."""
        period = self.sample_period
        if period is None or not self.regular or gap <= (1 + self.jitter) * period:
            return 0
        return int(round(gap / period)) - 1

    def to_dict(self) -> dict[str, Any]:
        """The ``cleaning`` record of ``bundle.json`` (the sample period is recorded beside it)."""
        return {"regular": self.regular, "fill_limit": self.fill_limit, "jitter": self.jitter,
                "restart_gap_s": self.gap_s}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, sample_period: float | None = None) -> CleaningPolicy:
        """The policy of ``bundle.json``; older bundles get the defaults (their sample period, a
        regular grid as the offline path always assumed, fill limit 5, jitter 0.5, derived gap)."""
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise TypeError(f"cleaning must be an object, got {str(raw)[:40]}")
        if unknown := sorted(set(raw) - _POLICY_FIELDS):  # (a hand edit's "fil_limit" was ignored unsaid: a walk)
            raise ValueError(f"cleaning has no field {', '.join(map(repr, unknown))} "
                             f"(its fields: {', '.join(sorted(_POLICY_FIELDS))})")
        regular, fill_limit = raw.get("regular", True), raw.get("fill_limit", 5)
        if not isinstance(regular, bool):  # ("no" read as True)
            raise TypeError(f"cleaning regular must be true or false, got {str(regular)[:40]}")
        if not isinstance(fill_limit, int) or isinstance(fill_limit, bool):  # (2.5 read as 2)
            raise TypeError(f"cleaning fill_limit must be a whole number, got {str(fill_limit)[:40]}")
        period = raw.get("sample_period", sample_period)
        gap = raw.get("restart_gap_s")
        policy = cls(sample_period=None if period is None else float(period), regular=regular,
                     fill_limit=fill_limit, jitter=float(raw.get("jitter", 0.5)),
                     gap_s=None if gap is None else float(gap))
        if policy.sample_period is not None and not (math.isfinite(policy.sample_period) and policy.sample_period > 0):
            raise ValueError(f"cleaning sample_period must be a positive number, got {policy.sample_period}")
        if policy.fill_limit < 0:
            raise ValueError(f"cleaning fill_limit must be >= 0, got {policy.fill_limit}")
        if not 0 <= policy.jitter < 1:
            raise ValueError(f"cleaning jitter must be at least 0 and below 1 (periods), got {policy.jitter}")
        if policy.gap_s is not None and not (math.isfinite(policy.gap_s) and policy.gap_s > 0):
            raise ValueError(f"cleaning restart_gap_s must be a positive number or null, got {policy.gap_s}")
        step = (1 + policy.jitter) * (policy.sample_period or 0.0)  # the longest step that is one step
        if policy.gap_s is not None and policy.gap_s <= step:
            raise ValueError(f"cleaning restart_gap_s {policy.gap_s:g} would restart the window at every reading "
                             f"(one step of the sample period is up to {step:g} s)")
        return policy


_POLICY_FIELDS = frozenset(CleaningPolicy().to_dict()) | {"sample_period"}  # what bundle.json's cleaning may hold


def slow_limit(policy: CleaningPolicy) -> float:
    """The average step (seconds) over which a regular asset's readings are refused (``slow_rate``):
    ``SLOW_RATE`` periods, or the restart gap when shorter (at ``fill_limit`` 0 it is 1.5 periods:
    a feed between the two was taken and restarted its window at every reading, never scored
    without a word; a review)."""
    limit = SLOW_RATE * (policy.sample_period or 0.0)
    gap = policy.restart_gap
    return limit if gap is None else min(limit, gap)


def infer_policy(times: Any, fill_limit: int = 5) -> CleaningPolicy:
    """The policy of training data: its median step and whether it sits on a grid.

    times: one sorted series, or a list of them (several machines: one policy for all, as the
    bundle records one).
    """
    series = times if isinstance(times, list) else [times]
    diffs = np.concatenate([np.diff(np.asarray(t, dtype=np.float64)) for t in series] or [np.zeros(0)])
    diffs = diffs[np.isfinite(diffs)]
    period = float(np.median(diffs)) if len(diffs) else None
    if period is None or period <= 0:
        return CleaningPolicy(None, True, fill_limit)
    regular = bool(np.mean(np.abs(diffs - period) <= REGULAR_TOLERANCE * period) >= REGULAR_SHARE)
    return CleaningPolicy(period, regular, fill_limit)


class Cleaner:
    """One asset's cleaning state: the last reading's time, each channel's last real value and
    how many rows in a row it has been filled."""

    __slots__ = ("last_ts", "last", "fills", "filling", "broken", "seen_ts", "step_avg", "steps", "skipped")

    def __init__(self, n_channels: int) -> None:
        self.seen_ts: float | None = None  # the last reading admit() saw, kept or not
        self.step_avg = NAN  # the asset's average step (NaN: none yet; then from the model's period)
        self.steps = 0  # steps averaged so far
        self.last_ts: float | None = None
        self.last = [NAN] * n_channels  # each channel's last real value (NaN: none yet)
        self.fills = [0] * n_channels  # rows in a row each channel was filled (or missing)
        self.filling = False  # some fills may be > 0 (the common path skips resetting them)
        self.broken = False  # a row was dropped or the gap was long: the next kept row restarts the window
        self.skipped = 0  # the last step's grid rows past every channel's fill limit, not built (all dropped)

    def rate(self) -> tuple[float | None, float, int] | None:
        """The publishing-rate estimate :meth:`admit` follows (None: no step yet), for
        :meth:`resume_rate`: offline the estimate carries on across an asset's silence."""
        return (self.seen_ts, self.step_avg, self.steps) if self.steps else None

    def resume_rate(self, rate: tuple[float | None, float, int], ts: float) -> None:
        """Go on from an earlier buffer's :meth:`rate`, unless the asset's clock went back since (a
        reset device: the negative step drove the average below zero, and its readings were dropped
        as resampled for minutes)."""
        if rate[0] is not None and ts >= rate[0]:
            self.seen_ts, self.step_avg, self.steps = rate

    def admit(self, ts: float, policy: CleaningPolicy) -> str | None:
        """Whether a reading (in time order) is taken at the model's rate: None, ``resampled``
        (faster than the grid: dropped) or ``slow_rate`` (refused); see the module notes."""
        seen, self.seen_ts = self.seen_ts, ts
        period = policy.sample_period
        if seen is None or period is None or not policy.regular:
            return None
        gap = min(ts - seen, 2 * period)
        avg = self.step_avg if self.steps else period
        self.steps += 1
        avg += max(1 / (self.steps + RATE_PRIOR), RATE_WEIGHT) * (gap - avg)  # a mean, then a moving average
        self.step_avg = avg
        if avg > slow_limit(policy):
            return "slow_rate"
        if avg < FAST_RATE * period and self.last_ts is not None and ts - self.last_ts < period - avg / 2:
            return "resampled"
        return None

    def step(self, ts: float, row: list[float], policy: CleaningPolicy) -> list[tuple[float, list[float] | None, bool]]:
        """The grid rows one reading makes, oldest first: ``(ts, values or None if dropped, restart)``.

        ``row``: the reading's values in channel order, NaN where missing. ``restart``: the window
        starts afresh at this row (after a long gap or a dropped row).
        """
        out: list[tuple[float, list[float] | None, bool]] = []
        self.skipped = 0
        if self.last_ts is not None:
            gap = ts - self.last_ts
            limit = policy.restart_gap
            if limit is not None and gap > limit:
                self.break_off()
            else:
                missing = policy.grid_rows(gap)
                if missing:
                    period = policy.sample_period or 0.0
                    blank = [NAN] * len(row)
                    # past fill_limit + 1 blank rows every channel is beyond its limit: the rest would
                    # all be dropped rows, so they are counted (``skipped``), not built (a long
                    # max_gap_s once built 36,000 of them under the ingest's lock)
                    built = min(missing, policy.fill_limit + 1)
                    for k in range(1, built + 1):
                        out.append(self._fill(self.last_ts + k * period, blank, policy.fill_limit))
                    self.skipped = missing - built
                    if self.skipped:
                        self.fills = [f + self.skipped for f in self.fills]
        self.last_ts = ts
        out.append(self._fill(ts, row, policy.fill_limit))
        return out

    def break_off(self) -> None:
        """The next kept row starts the window afresh, and nothing before fills it (a long gap)."""
        self.last = [NAN] * len(self.last)
        self.fills = [0] * len(self.fills)
        self.filling = False
        self.broken = True

    def rewind(self) -> None:
        """The sender's clock stepped back (:meth:`~sensorguard.service.windows.Buffers.add_at`):
        the next reading is taken as the first after a long gap, its rate estimate going on without
        the negative step (it would read as a sender too fast for the grid)."""
        self.break_off()
        self.last_ts = self.seen_ts = None

    def _fill(self, ts: float, row: list[float], fill_limit: int) -> tuple[float, list[float] | None, bool]:
        total = sum(row)
        if total - total == 0.0:  # every value finite: the common case, nothing to fill
            self.last = row
            if self.filling:
                self.fills = [0] * len(row)
                self.filling = False
            restart, self.broken = self.broken, False
            return ts, row, restart
        last, fills = list(self.last), self.fills  # a new list: rows handed out are never changed
        values = list(row)
        complete = True
        for i, value in enumerate(values):
            if value - value == 0.0:  # finite
                last[i] = value
                fills[i] = 0
            else:
                fills[i] += 1
                if fills[i] <= fill_limit and last[i] == last[i]:
                    values[i] = last[i]
                else:
                    complete = False
        self.last, self.filling = last, True
        if not complete:
            self.broken = True
            return ts, None, False
        restart, self.broken = self.broken, False
        return ts, values, restart


def clean_rows(times: Any, values: Any, policy: CleaningPolicy) -> tuple[Any, Any, Any, Any, dict[str, int]]:
    """A time-sorted series (no duplicate stamps) cleaned as the daemon would: ``(times, values,
    segments, source, counts)``; a new segment wherever a window restarts, ``source`` the input row
    each output row comes from (an inserted grid row: the reading before it). counts: rows
    ``inserted``, input values ``missing`` and those ``filled`` (in rows kept: the missing cells of a
    dropped row were not filled, and a note counting them all overstated it), rows ``dropped``,
    ``restarts``."""
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if not len(times):
        counts = {"inserted": 0, "missing": 0, "filled": 0, "dropped": 0, "restarts": 0}
        return times, values, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), counts
    values = values.reshape(len(times), -1)
    diffs = np.diff(times)
    gap = policy.restart_gap
    quiet = not len(diffs) or (policy.grid_rows(float(diffs.max())) == 0 and (gap is None or diffs.max() <= gap))
    if quiet and np.isfinite(values).all():  # the common case: nothing to insert, fill or restart
        counts = {"inserted": 0, "missing": 0, "filled": 0, "dropped": 0, "restarts": 0}
        return times, values, np.zeros(len(times), dtype=np.int64), np.arange(len(times)), counts
    cleaner = Cleaner(values.shape[1])
    out_t: list[float] = []
    out_v: list[list[float]] = []
    segments: list[int] = []
    source: list[int] = []
    segment, inserted, dropped = 0, 0, 0
    taken = np.zeros(len(times), dtype=bool)  # input rows kept (filled where they had gaps)
    for i, (t, row) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
        made = cleaner.step(t, row, policy)
        inserted += len(made) - 1 + cleaner.skipped
        dropped += cleaner.skipped
        for j, (ts, kept, restart) in enumerate(made):
            if kept is None:
                dropped += 1
                continue
            taken[i] |= j == len(made) - 1
            if restart and out_t:
                segment += 1
            out_t.append(ts)
            out_v.append(kept)
            segments.append(segment)
            source.append(i if j == len(made) - 1 else i - 1)
    missing = ~np.isfinite(values)
    counts = {"inserted": inserted, "missing": int(missing.sum()), "filled": int(missing[taken].sum()),
              "dropped": dropped, "restarts": segment}
    return (np.asarray(out_t, dtype=np.float64), np.asarray(out_v, dtype=np.float64).reshape(-1, values.shape[1]),
            np.asarray(segments, dtype=np.int64), np.asarray(source, dtype=np.int64), counts)


def admit_rows(times: Any, policy: CleaningPolicy) -> tuple[Any, dict[str, int]]:
    """Which readings of a time-sorted series (no duplicate stamps) the daemon would take at the
    model's rate (:meth:`Cleaner.admit`): ``(keep mask, counts of resampled and slow_rate)``."""
    times = np.asarray(times, dtype=np.float64)
    keep = np.ones(len(times), dtype=bool)
    counts = {"resampled": 0, "slow_rate": 0}
    period = policy.sample_period
    if len(times) < 2 or period is None or not policy.regular:
        return keep, counts
    diffs = np.diff(times)
    if diffs.min() >= 2 * period / 3 and diffs.max() <= slow_limit(policy):  # nothing can be dropped
        return keep, counts
    cleaner = Cleaner(0)
    for i, t in enumerate(times.tolist()):
        reason = cleaner.admit(t, policy)
        if reason is None:
            cleaner.last_ts = t  # as step() would
        else:
            keep[i] = False
            counts[reason] += 1
    return keep, counts
