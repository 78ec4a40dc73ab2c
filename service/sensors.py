"""Sensor faults, told apart from process anomalies: a stuck, an implausible or a missing channel.

A dead thermocouple is a maintenance ticket, not a process alarm. Per asset and channel, a
:class:`SensorWatch` looks at each reading as it arrives (before cleaning) and opens or closes a
fault of one of three kinds:

- ``stuck``: the value has not changed for ``stuck_after`` readings in a row, where training saw
  the channel moving (``stuck_after`` is twice its longest unchanged run in training, at least
  ``MIN_STUCK``; None for a channel constant in training: it cannot be told stuck). A channel
  that held its value on most training steps (quantized: ``HOLDS_SHARE``) is stuck only at a
  value inside its training range (``seen``): a frozen sensor
  repeats its last good reading, while a quantized channel that steps to a level training never
  read and holds it (a flow reading 26.0 while a valve stays shut, where training read 31-33) is
  the process, for the model to judge. Called stuck, it was left out of the score for the rest of
  the fault (found by a README walk). A channel that moves at every reading is stuck at any value
  after ``MIN_STUCK`` equal readings: that is no process (the simulated test bench's frozen
  sensors, after the plant had moved past its training range, were missed that way). Beyond the
  plausible limits a value is ``out_of_range`` all the same (in a model of two or more channels).
- ``out_of_range``: the value is outside ``[low, high]``: the training range widened by
  ``RANGE_MARGIN`` (3) times its width on each side, the width being at least a tenth of the
  channel's magnitude (so a channel idle in training is not flagged by its first move); for a
  channel constant in training, the scaler's unit for it, ``max(|value|, 1)``: far beyond
  a process excursion the model should judge. Learned limits are not the instrument's range, so a
  value past them is a sensor's only if it jumped there: a step of at least ``jump``
  (``JUMP_WIDTHS`` training widths) from the channel's last plausible value (a fresh watch, with
  none: from the nearest limit, so a value that far past them); one that walked past them is the
  process's, scored as it reads (a failing sensor jumps to a rail or a marker; a process moves
  through its dynamics). A restart goes on from the last plausible value of each channel that
  walked past its limits (saved with the state of an asset with a judged window:
  :meth:`SensorWatch.past_limits`; not after a silence, where offline starts a new watch too); a
  cluster takeover's starts where the replayed readings and the saved values, carried in the state
  bucket, place the walk (``walked_channels.along_walk``).
  Or limits set per channel in ``bundle.json`` (``sensors``; without ``jump`` any value past them
  is a fault). Not in a model of one channel (:attr:`SensorRules.judges_range`): with no other
  channel to fill it in, an extreme value is the process's, scored as it reads.
- ``missing``: the channel was absent, NaN or infinite in more than ``fill_limit`` readings in a
  row (forward fill gave up).

A fault closes (``sensor_ok``) at the first reading that no longer shows it. Silence of the whole
asset is the fourth kind, ``silent`` (channel None): the daemon opens it after ``stale_after_s``
without a reading while connected and closes it at the asset's first reading back
(``service/asset_faults.py``; :class:`~sensorguard.service.windows.Buffers` tells every asset's first reading).

While a channel has a fault open in any row of a window
(:func:`~sensorguard.service.series_faults.window_faults`), the process
score leaves it out: the model fills the channel in from the others (``Scorer._impute``: start
at the training center, take the reconstruction three times) and the window's error is the mean
over the other channels (a window with every channel faulted is not judged). So one dead sensor
does not raise a process alarm on every window, and a process fault in the others is still
caught (``tests/test_sensors.py``). An implausible or missing value is also replaced by the
channel's last plausible one (none yet: the middle of its limits) before cleaning, so the window
does not restart. The same watch
runs offline, before cleaning, over the readings in time order (``score``'s ``sensor_faults``
column, and the same exclusions: :mod:`~sensorguard.service.series_faults`), so live equals offline.

>>> rules = SensorRules(("t", "p"), (ChannelLimits(0.0, 100.0, 3), ChannelLimits(0.0, 9.0, None)), fill_limit=1)
>>> watch = SensorWatch(2)
>>> for i, v in enumerate([50.0, 50.0, 50.0, 120.0, 60.0, 61.0, 62.0]):
...     for e in watch.step(float(i), [v, float(i)], rules):
...         print(e.ts, e.kind, e.channel, "sensor_fault" if e.fault else "sensor_ok")
2.0 stuck t sensor_fault
3.0 stuck t sensor_ok
3.0 out_of_range t sensor_fault
6.0 out_of_range t sensor_ok

``out_of_range`` ends after ``BACK_IN_RANGE`` readings in range in a row (an off-delay, as
ISA-18.2 prescribes against chattering alarms): a value flapping across its limit is one fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

KINDS = ("stuck", "out_of_range", "missing", "silent")
RANGE_MARGIN = 3.0  # the plausible range: the training range widened by three widths on each side
MIN_STUCK = 10  # readings: no channel is called stuck sooner
BACK_IN_RANGE = 3  # readings in range in a row that end an out_of_range fault (an off-delay against chatter)
HOLDS_SHARE = 0.5  # a channel unchanged on this share of its training steps holds values (quantized)
# learned limits: a value past them is a sensor's only if it got there in a step of at least this many
# training widths from the channel's last plausible value (none: from the nearest limit): a process walks out, through
# the plant's dynamics (Tennessee Eastman's faults 1, 2, 6, 7, 8, 12, 13, 17 and 18 walk a channel 44 times
# past 3 widths, none in a step over 1.3), a failing sensor jumps (an open circuit, a rail, -9999)
JUMP_WIDTHS = 2.0


@dataclass(frozen=True)
class ChannelLimits:
    low: float
    high: float
    stuck_after: int | None  # readings unchanged in a row that make a stuck fault; None: never
    seen: tuple[float, float] | None = None  # the training range: stuck only at a value in it (None: any)
    # the least step into the implausible zone that is a sensor's (None: any value past the limits is):
    # learned limits only, a process walks past them, a failing sensor jumps (``JUMP_WIDTHS``)
    jump: float | None = None

    def can_stick(self, value: float) -> bool:
        """Whether a run of ``value`` counts towards a stuck fault: a value training read."""
        return self.seen is None or self.seen[0] <= value <= self.seen[1]

    @property
    def hold(self) -> float:
        """A value inside the limits to hold a faulted channel at when it never had a plausible one."""
        middle = (self.low + self.high) / 2
        return next((v for v in (middle, self.low, self.high) if math.isfinite(v)), 0.0)


@dataclass(frozen=True)
class SensorRules:
    """Per channel (in model order) the limits a reading is checked against."""

    channels: tuple[str, ...]
    limits: tuple[ChannelLimits, ...]
    fill_limit: int = 5
    silence_s: float | None = None  # offline: a longer gap starts the watch afresh, as the daemon's silence does

    @cached_property
    def judges_range(self) -> bool:
        """Whether a value outside its limits is an ``out_of_range`` sensor fault: not in a model of
        one channel. There no other channel can fill it in, so holding it left the window unjudged:
        the largest spike of a one-channel series (NAB's latency, 3x its training peak) was never
        an alert, only a sensor fault that ``evaluate`` counts as missed (found by a walk). With one
        channel an extreme value is the process's, for the score to judge."""
        return len(self.channels) > 1

    def resumable(self, fault: dict) -> bool:
        """Whether a fault a previous run saved open (``{"kind", "channel", ...}``) can go on under these
        rules: a channel they know, able to open that kind. One that cannot was listed for good, no
        watch able to end it (a review): the daemon leaves those out at start."""
        if fault["channel"] not in self.channels:
            return False
        lim = self.limits[self.channels.index(fault["channel"])]
        return {"stuck": lim.stuck_after is not None, "out_of_range": self.judges_range}.get(fault["kind"], True)

    @cached_property
    def columns(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int | None, ...]]:
        """``(lows, highs, stuck_afters)``: the limits by column, for the watch's quick path (no
        limits where the range is not judged)."""
        judged = self.judges_range
        return (tuple(lim.low if judged else -math.inf for lim in self.limits),
                tuple(lim.high if judged else math.inf for lim in self.limits),
                tuple(lim.stuck_after for lim in self.limits))

    def to_dict(self) -> dict[str, Any]:
        return {c: {"low": lim.low, "high": lim.high, "stuck_after": lim.stuck_after,
                    **({} if lim.seen is None else {"seen": list(lim.seen)}),
                    **({} if lim.jump is None else {"jump": lim.jump})}
                for c, lim in zip(self.channels, self.limits, strict=True)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, channels: tuple[str, ...], fill_limit: int) -> SensorRules | None:
        """The rules of ``bundle.json`` ``sensors`` (None when the bundle has none)."""
        if not raw:
            return None
        if set(raw) != set(channels):
            raise ValueError(f"sensors must name exactly the bundle's channels {list(channels)}")
        limits = []
        for c in channels:
            entry = raw[c]
            low, high, stuck = float(entry["low"]), float(entry["high"]), entry.get("stuck_after")
            if not low < high:
                raise ValueError(f"sensors {c}: low {low} must be below high {high}")
            if stuck is not None and (type(stuck) not in (int, float) or not math.isfinite(stuck)
                                      or int(stuck) != stuck or stuck < 2):  # 1: stuck at every reading, for good
                raise ValueError(f"sensors {c}: stuck_after must be an integer >= 2 or null, got {stuck}")
            seen = entry.get("seen")
            if seen is not None:
                pair = isinstance(seen, list | tuple) and len(seen) == 2 and all(type(v) in (int, float) for v in seen)
                if not (pair and math.isfinite(seen[0]) and math.isfinite(seen[1]) and seen[0] <= seen[1]):
                    raise ValueError(f"sensors {c}: seen must be [low, high] of finite numbers, low <= high, "
                                     f"or absent; got {seen!r}")
                seen = (float(seen[0]), float(seen[1]))
            jump = entry.get("jump")
            if jump is not None and (type(jump) not in (int, float) or not math.isfinite(jump) or jump <= 0):
                raise ValueError(f"sensors {c}: jump must be a number > 0 or absent, got {jump!r}")
            limits.append(ChannelLimits(low, high, None if stuck is None else int(stuck), seen,
                                        None if jump is None else float(jump)))
        return cls(tuple(channels), tuple(limits), fill_limit)


def learn_sensor_rules(channels: tuple[str, ...], values: Any, segments: Any, fill_limit: int) -> SensorRules:
    """Limits from clean training rows ``(T, C)``: the widened range, the longest still run and, for a
    channel that held values in training, the range itself (``seen``: where a still run can be a
    stuck sensor)."""
    values = np.asarray(values, dtype=np.float64)
    segments = np.asarray(segments)
    limits = []
    for j in range(values.shape[1]):
        column = values[:, j]
        low, high = float(column.min()), float(column.max())
        if high == low:  # constant in training: the scaler's unit for it, max(|value|, 1) (a tenth of its
            width = max(abs(high), 1.0)  # value, 1e-6 at 0: a valve's first opening was out of range, left unscored)
        else:
            width = max(high - low, 0.1 * max(abs(low), abs(high)), 1e-6)
        same = (column[1:] == column[:-1]) & (segments[1:] == segments[:-1])
        stuck_after = None
        if not same.all():
            runs = np.diff(np.flatnonzero(np.r_[True, ~same, True]))  # unchanged steps between changes
            stuck_after = max(MIN_STUCK, 2 * (int(runs.max()) if len(runs) else 1))
        # it held its value on most steps in training (quantized): not a few forward-filled gaps (a review)
        holds = stuck_after is not None and same.mean() >= HOLDS_SHARE
        limits.append(ChannelLimits(low - RANGE_MARGIN * width, high + RANGE_MARGIN * width, stuck_after,
                                    (low, high) if holds else None, JUMP_WIDTHS * width))
    return SensorRules(tuple(channels), tuple(limits), fill_limit)


class SensorEvent(NamedTuple):
    """A fault of ``kind`` on ``channel`` opened (``fault`` True) or closed at reading time ``ts``
    (``channel`` None: the whole asset, ``silent``)."""

    kind: str
    channel: str | None
    fault: bool
    ts: float
    value: float


def resumed_faults(saved: dict[str, list[dict]], rules: SensorRules | None, judged: dict[str, float]
                   ) -> tuple[dict[str, list[dict]], list[tuple[str, SensorEvent]]]:
    """The faults a previous run saved open (per asset) that ``rules`` can go on judging, and a close
    for each of the others (a channel the model served now lacks, a kind it cannot open, no limits at
    all), at the asset's last judged window (``judged``) or the fault's start. Left out unsaid, a
    subscriber pairing each ``sensor_fault`` with its ``sensor_ok`` held them open for good (a walk:
    a sensor removed, the model retrained without it, the daemon restarted)."""
    kept, ended = {}, []
    for asset, faults in saved.items():
        going = [f for f in faults if rules is not None and rules.resumable(f)]
        if going:
            kept[asset] = going
        ended += [(asset, SensorEvent(f["kind"], f["channel"], False, max(f["since"], judged.get(asset, f["since"])),
                                      math.nan)) for f in faults if f not in going]
    return kept, ended


class SensorWatch:
    """One asset's per-channel fault state (readings in time order, duplicates already refused)."""

    __slots__ = ("last", "good", "still", "missing", "missing_any", "open", "in_range", "may_be_past")

    def __init__(self, n_channels: int) -> None:
        self.last = [math.nan] * n_channels
        self.good = [math.nan] * n_channels  # each channel's last plausible value: held while it is faulted
        self.still = [0] * n_channels  # readings in a row equal to the previous one
        self.missing = [0] * n_channels
        self.missing_any = False  # some missing[j] > 0
        self.open: set[tuple[str, int]] = set()  # (kind, channel index)
        # readings in range in a row while out_of_range is open: it ends at BACK_IN_RANGE. A value
        # flapping across a limit at every reading sent a fault and a clear per reading, each a log
        # line, an event and a retained state (a walk); ISA-18.2 calls this chattering and prescribes
        # an off-delay
        self.in_range = [0] * n_channels
        # a last plausible value may lie past its limits (the last reading took the full step, or values
        # were resumed, or the limits changed): only these are looked at by :meth:`past_limits` callers
        self.may_be_past = False

    def step(self, ts: float, row: list[float], rules: SensorRules) -> list[SensorEvent]:
        """The faults this reading opens or closes (NaN in ``row``: a missing value).

        ``row`` is changed in place: a channel with an open ``out_of_range`` or ``missing`` fault
        takes its last plausible value (no fill limit), so no row is dropped and the asset keeps
        being scored; the scorer then imputes the channel and leaves it out (:meth:`faulted`).
        """
        if not self.open and not self.missing_any and self._quiet(row, rules):
            return []
        events: list[SensorEvent] = []
        self.may_be_past = True
        for j, value in enumerate(row):
            lim = rules.limits[j]
            present = value - value == 0.0
            if present:
                self.still[j] = self.still[j] + 1 if value == self.last[j] else 0
                self.last[j] = value
                self.missing[j] = 0
            else:
                self.missing[j] += 1
            outside = present and rules.judges_range and not lim.low <= value <= lim.high
            if ("out_of_range", j) in self.open:  # open until BACK_IN_RANGE readings in range in a row
                self.in_range[j] = 0 if outside else self.in_range[j] + present
                outside = outside or self.in_range[j] < BACK_IN_RANGE
            else:
                self.in_range[j] = 0  # (after a fault ended, or all of them with close_all: counted afresh)
                if outside and lim.jump is not None:  # from its last plausible value; a fresh watch (a start, a
                    # restart, a takeover's replay) has none: from the nearest limit, where it was at the least
                    ref = self.good[j] if self.good[j] == self.good[j] else min(max(value, lim.low), lim.high)
                    outside = abs(value - ref) >= lim.jump  # (walked past the limit: the process's)
            faults = (  # (a sensor pegged at -9999 is one fault, out_of_range, not two: the demo said 2 of one)
                ("stuck", present and not outside and lim.stuck_after is not None
                 and self.still[j] + 1 >= lim.stuck_after and lim.can_stick(value)),
                ("out_of_range", outside),
                ("missing", self.missing[j] > rules.fill_limit),
            )
            for kind, now in faults:
                if now != ((kind, j) in self.open) and (now or present or kind == "missing"):
                    (self.open.add if now else self.open.discard)((kind, j))
                    events.append(SensorEvent(kind, rules.channels[j], now, ts, value))
            if ("out_of_range", j) in self.open or ("missing", j) in self.open:
                # held at its last plausible value; a channel dead since the watch began (a restart,
                # a new asset) has none: held inside its limits (the scorer imputes it anyway), or
                # every reading was dropped as missing_channel and the asset never scored
                row[j] = self.good[j] if self.good[j] == self.good[j] else lim.hold
            elif present:
                self.good[j] = value
        self.missing_any = any(self.missing)
        return events

    def _quiet(self, row: list[float], rules: SensorRules) -> bool:
        """The per-reading hot path: with nothing open or missing, a reading whose every value is
        present, in range and not yet stuck changes no fault; take it (the same state the full
        step would leave) and say so. False (nothing changed): take the full step."""
        lows, highs, stucks = rules.columns
        still = []
        for value, low, high, stuck_after, last, run in zip(row, lows, highs, stucks, self.last, self.still,
                                                            strict=True):
            if not low <= value <= high:  # NaN fails this too
                return False
            run = run + 1 if value == last else 0
            if stuck_after is not None and run + 1 >= stuck_after:
                return False
            still.append(run)
        self.still, self.last, self.good = still, list(row), list(row)
        self.may_be_past = False  # (every value inside its limits)
        return True

    def resume(self, faults: list[dict], rules: SensorRules) -> None:
        """Start with the faults a previous run left open (``state.saved_faults``, those
        :meth:`SensorRules.resumable`): a stuck channel still at its value keeps its fault, an
        out-of-range one needs its readings in range to end, a missing one a reading."""
        for f in faults:
            if not rules.resumable(f):
                continue
            j = rules.channels.index(f["channel"])
            self.open.add((f["kind"], j))
            if f["kind"] == "stuck":  # the next equal reading keeps it; any other ends it
                self.last[j] = f["value"]
                self.still[j] = int(rules.limits[j].stuck_after)  # type: ignore[arg-type]
            elif f["kind"] == "missing":
                self.missing[j] = rules.fill_limit + 1
                self.missing_any = True

    def past_limits(self, rules: SensorRules) -> dict[str, float]:
        """The channels whose last plausible value lies past their learned limits (a process that
        walked out), with that value: what a restart's fresh watch needs to judge the next step from
        there (:meth:`resume_past`). Saved with the asset's state (``past_limits``); without it, a
        channel walked farther than ``jump`` past a limit was told a sensor fault at the restart."""
        if not rules.judges_range:
            return {}
        return {rules.channels[j]: good for j, (good, lim) in enumerate(zip(self.good, rules.limits, strict=True))
                if lim.jump is not None and not lim.low <= good <= lim.high and math.isfinite(good)}

    def resume_past(self, saved: dict[str, float], rules: SensorRules) -> None:
        """Start from the last plausible values a previous run saved past their limits
        (:meth:`past_limits`): a channel these rules know, with learned limits, still past them."""
        for channel, value in saved.items():
            j = rules.channels.index(channel) if channel in rules.channels else -1
            if j >= 0 and rules.limits[j].jump is not None and not rules.limits[j].low <= value <= rules.limits[j].high:
                self.good[j] = value
                self.may_be_past = True

    def close_all(self, ts: float, rules_channels: tuple[str, ...]) -> list[SensorEvent]:
        """End every open fault (the new bundle checks no sensors): ``sensor_ok`` for each."""
        events = [SensorEvent(kind, rules_channels[j], False, ts, math.nan) for kind, j in sorted(self.open)]
        self.open.clear()
        return events

    def faulted(self) -> tuple[int, ...]:
        """Channels (indices) with any fault open: left out of the process score."""
        return tuple(sorted({j for _, j in self.open})) if self.open else ()

    def describe(self, rules: SensorRules) -> list[dict[str, str]]:
        """The open faults as ``[{"kind", "channel"}]`` (for the retained state), sorted."""
        return [{"kind": k, "channel": rules.channels[j]} for k, j in sorted(self.open, key=lambda f: (f[1], f[0]))]
