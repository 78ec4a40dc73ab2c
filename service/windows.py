"""Per-asset ring buffers that turn a stream of samples into windows due for scoring.

Each asset keeps its last ``window`` samples. After ``window`` accepted samples, and then every
``hop`` samples, a copy of the buffer is queued as a :class:`~sensorguard.service.asset_buffer.DueWindow`;
the daemon drains the queue in batches and scores all assets in one forward pass. The cadence is
exactly that of :func:`service.alerts.hop_mask`, so the live daemon steps the alert machine on the
same windows as the offline ``sensorguard score``.

The checks that need per-asset state live here, not in the parser: channel names against the
model, timestamp order, cleaning (:mod:`sensorguard.service.cleaning`) and the cap on distinct
assets. A reading rejected for its channels or order leaves the asset untouched (and takes no
slot; if it goes silent so, its silence names the reason, :meth:`Buffers.refused_since`); one
dropped by cleaning (``missing_channel``) still advances the asset's time and fill sources, as
offline, but does not count as hearing from it (``Buffers._heard``): a known asset whose readings
are all dropped goes stale, a new one gives its slot to the next new asset and goes quiet unsaid.

Storage: :class:`~sensorguard.service.asset_buffer.AssetBuffer`, one ring buffer per asset.

>>> bufs = Buffers(("a", "b"), window=3, hop=2)
>>> [bufs.add("pump", float(t), {"a": t, "b": -t}, received=0.0) for t in range(1, 6)]
[None, None, None, None, None]
>>> [(w.ts, w.window.tolist()) for w in bufs.drain()]
[(3.0, [[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]]), (5.0, [[3.0, 4.0, 5.0], [-3.0, -4.0, -5.0]])]
>>> bufs.add("pump", 5.0, {"a": 1.0, "b": 1.0}, 0.0), bufs.add("pump", 6.0, {"a": 1.0}, 0.0)
('duplicate_ts', None)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from itertools import islice

from sensorguard.service.alerts import divides_hop
from sensorguard.service.asset_buffer import NO_FAULT, AssetBuffer, DueWindow
from sensorguard.service.buffer_views import BufferViews
from sensorguard.service.cleaning import NAN, CleaningPolicy
from sensorguard.service.due_windows import DueWindows
from sensorguard.service.sensors import SensorEvent, SensorRules
from sensorguard.service.untaken_events import defer, left_open, told_on_return

SENSOR_EVENTS_MAX = 10_000  # sensor-fault events waiting to be published; beyond, dropped and counted
RATES_KEPT = 10_000  # forgotten (silent) assets whose publishing-rate estimate is kept for their return


class Buffers(BufferViews):
    """Ring buffers for many assets sharing one channel list (one model).

    channels: the model's channels, in the model's order (rows of each window).
    window, hop: window length and the number of samples between scored windows.
    alert_hop: a divisor of ``hop`` (0: ``hop``): windows are queued every ``alert_hop`` samples, those
    off the hop grid marked ``coarse=False``; the daemon judges them only while the asset's alert is
    up (the bundle's ``alert_hop``, :func:`service.alerts.step_masks`).
    max_assets: distinct assets kept, counting the restored ones not back yet (``floors``); samples
    of further new assets are rejected.
    sensors: the bundle's sensor-fault limits (:mod:`sensorguard.service.sensors`); each reading is
    checked before cleaning and the events queue in ``sensor_events`` (capped; ``sensor_events_dropped``).
    policy: the cleaning policy (the bundle's, :mod:`sensorguard.service.cleaning`); without one,
    ``fill_limit`` (samples in a row a missing channel may take its last value) and
    ``max_gap_s`` (a longer gap restarts the buffer; None: never) with no sample grid.
    ``gaps`` counts window restarts (long gaps, dropped rows), so no window stitches data from
    both sides of an outage.
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        max_assets: int = 1000,
        fill_limit: int = 5,
        max_gap_s: float | None = None,
        policy: CleaningPolicy | None = None,
        sensors: SensorRules | None = None,
        alert_hop: int = 0,
        ignored: tuple[str, ...] = (),
    ) -> None:
        channels = tuple(channels)
        if not channels or len(set(channels)) != len(channels):
            raise ValueError(f"channels must be non-empty and unique, got {channels}")
        for name, value, low in (("window", window, 1), ("hop", hop, 1), ("max_assets", max_assets, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self._check_alert_hop(alert_hop, hop)
        policy = policy or CleaningPolicy(None, True, fill_limit, max_gap_s)
        if policy.fill_limit < 0:
            raise ValueError(f"fill_limit must be >= 0, got {policy.fill_limit}")
        if policy.max_gap_s is not None and not policy.max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0 seconds or None, got {policy.max_gap_s}")
        self.channels = channels
        self.window = window
        self.hop = hop
        self.alert_hop = alert_hop  # (set_alert_hop: a swapped-in model's)
        self.max_assets = max_assets
        self.policy = policy
        self.sensors = sensors
        self.sensor_events: deque[tuple[str, SensorEvent]] = deque()  # taken by the ingest after each add
        self.sensor_events_dropped = 0
        self._events_cap: float = SENSOR_EVENTS_MAX  # prime() lifts it: its events are read and popped, not published
        self.gaps = 0
        self._known = frozenset(channels)
        self._index = {c: j for j, c in enumerate(self.channels)}  # a channel name -> its column
        self.ignored = frozenset(ignored)  # the training file's other columns (Bundle.ignored_columns)
        self._assets: dict[str, AssetBuffer] = {}
        # assets not heard from yet (_heard), oldest first: their slots go to new assets. Junk all
        # dropped as missing_channel shut real assets out as too_many_assets (a walk)
        self._untaken: dict[str, None] = {}
        self._restored: set[str] = set()  # untaken ones that were restored (floors): their slots are not given
        # asset -> the last window the previous run judged (state.judged_times): its readings up to
        # then are refused until a newer one comes, as they would have been without the restart
        self.floors: dict[str, float] = {}
        self._due = DueWindows()
        self._anchor: tuple[str, float] | None = None  # prime(): the grid row a scored window ended on
        self._rates: dict[str, tuple[float | None, float, int]] = {}  # forgotten assets' rate estimates
        self.resumed_faults: dict[str, list[dict]] = {}  # restored assets' open sensor faults, for their watch
        self.resumed_past: dict[str, dict[str, float]] = {}  # and their channels past the limits (SavedExtras.past)
        # resumed_past is taken only by a first reading at most this long after the asset's last judged
        # window (the daemon's silence): offline a longer gap starts a new watch (watch_rows)
        self.resume_within = math.inf
        # untaken assets: the sensor events of their dropped readings, told once one is taken (_heard)
        self._deferred: dict[str, dict[tuple[str, int], SensorEvent]] = {}
        self._was_open: tuple[str, set[tuple[str, int]]] | None = None  # (add: the watch before its step)
        self._anchored = False

    def add(self, asset: str, ts: float, values: dict[str, float], received: float) -> str | None:
        """Buffer one reading (NaN or an absent key: a missing value); a reject reason, or None.

        The reading goes through the asset's :class:`~sensorguard.service.cleaning.Cleaner`:
        grid rows for a short gap, forward fill, a restart after a long gap or a dropped row.
        ``missing_channel``: a channel missing for longer than the fill limit; the reading is
        dropped (it still counts as the asset's latest time) and the window restarts after it.
        ``resampled`` / ``slow_rate``: the asset publishes faster / slower than the model's grid
        (:meth:`~sensorguard.service.cleaning.Cleaner.admit`); not taken, not sensor-checked.
        """
        state = self._assets.get(asset)
        if state is None:
            if (floor := self.floors.get(asset)) is not None and ts <= floor:
                return "duplicate_ts" if ts == floor else "out_of_order"
            # slots taken, and kept for the restored assets not back yet (floors): new assets that sent
            # first took them, and an alert restored up found none, stuck until its silence (a walk)
            held = len(self._assets) + len(self.floors) - (floor is not None)
            # a slot of an asset none of whose readings was taken yet goes to this one; not a restored
            # asset's (its first readings dropped, it lost its kept slot so: a review)
            victim = None
            if held >= self.max_assets:
                victim = next((a for a in self._untaken if a not in self._restored), None)
                if victim is None:
                    return "too_many_assets"
        elif ts <= state.last_ts:  # seen before (a redelivery) or really older than what came already
            return "duplicate_ts" if ts == state.last_ts or (state.times == ts).any() else "out_of_order"
        row: list[float] | None = None
        if len(values) == len(self.channels):
            try:  # noqa: SIM105 - hot path; the common case: exactly the model's channels
                row = [values[c] for c in self.channels]
            except KeyError:
                pass
        if row is None:
            known, ignored = self._known, self.ignored
            for key in values:
                if key not in known and key not in ignored:
                    return "unknown_channel"
            row = [values.get(c, NAN) for c in self.channels]
        if state is None:
            if victim is not None:  # (a reading refused above evicts nothing)
                self.forget(victim)
            state = self._assets[asset] = AssetBuffer(self.window, len(self.channels))
            if (resumed := self.resumed_faults.get(asset)) and self.sensors is not None:  # (kept until taken: an
                state.watch.resume(resumed, self.sensors)  # eviction before then lost them; a review)
            if (past := self.resumed_past.get(asset)) and self.sensors is not None and (
                    floor is None or ts - floor <= self.resume_within):
                state.watch.resume_past(past, self.sensors)
            self._untaken[asset] = None
            if self.floors.pop(asset, None) is not None:  # buffered: its last_ts guards from here
                self._restored.add(asset)  # (its slot kept until its first reading is taken)
            state.seen = received
            if self._rates and (rate := self._rates.pop(asset, None)) is not None:
                state.cleaner.resume_rate(rate, ts)  # back from a silence: its rate estimate goes on, as offline
        mark = len(self.sensor_events)  # where the asset's return goes, before this reading's faults
        rate = state.cleaner.admit(ts, self.policy)
        if rate is not None:  # faster than the model's grid (resampled) or too slow: not taken
            state.stamp(ts)
            state.seen = received  # the asset is alive
            self._heard(asset, ts, mark)
            return rate
        before = after = ()
        if self.sensors is not None:
            before = state.watch.faulted()
            # the faults open before this reading: a dropped reading's deferred events are judged against
            # them (after its step, an open and its close in one reading told the close alone: a review)
            self._was_open = (asset, set(state.watch.open)) if asset in self._deferred else None
            self._queue(asset, state.watch.step(ts, row, self.sensors))  # may hold a faulted channel's value
            after = state.watch.faulted()
        elif state.watch.open:  # a hot swap to a bundle without sensor limits: the open faults end
            self._queue(asset, state.watch.close_all(ts, self.channels))
        made = state.cleaner.step(ts, row, self.policy)
        state.stamp(ts)
        last = len(made) - 1
        for k, (t, kept, restart) in enumerate(made):
            if kept is None:
                continue
            if restart and state.count:
                state.count = 0
                state.fault_row = [NO_FAULT] * len(self.channels)
                self.gaps += 1
            self._write(asset, state, t, kept, received, after if k == last else before)
            if self._untaken:  # (a row written: the asset is served, even if this reading drops)
                self._heard(asset, ts, mark)
        kept = made[-1][1]
        if kept is None:
            if asset in self._untaken:  # none of its readings taken yet: it announces no fault and holds no
                # slot (junk with one channel left out and another out of range took max_assets slots, each
                # with a sensor_fault event and a retained state: a walk). Its watch goes on as offline's
                # does; what it opened or closed is told with its first reading taken (_heard), if still so.
                # A channel dead from the first reading is held from its missing fault on: that reading is
                # taken (so junk that always leaves a channel out is taken then too, as such an asset is).
                popped = [self.sensor_events.pop()[1] for _ in range(len(self.sensor_events) - mark)]
                defer(self._deferred.setdefault(asset, {}), popped[::-1], self._index)
            return "missing_channel"  # not "seen": an asset whose readings are all dropped goes stale
        state.last = kept
        state.seen = received
        return None

    def prime(self, asset: str, samples: list[tuple[float, dict[str, float]]], received: float,
              window_ts: float | None = None, judged_ts: float | None = None, clock: float = math.inf,
              resumed: list[dict] | None = None) -> tuple[int, list[dict]]:
        """Fill ``asset``'s buffer (window, last time, cleaner and sensor watch) with readings its
        previous owner already took, without queueing their windows or sensor events: those were
        the previous owner's to score and announce. With ``window_ts``, the end time of a window the
        previous owner scored, the cadence is set so that a window was due there: the next ones are
        due where they would have been without the move, and the windows the readings complete
        after it are queued: the previous owner died before scoring them (its state, with
        ``window_ts``, is saved on every status change and every 30 s, so a window it scored since
        is scored again from the same state: the same verdict). ``judged_ts``: a later alert-hop
        window the state already holds; the windows up to it are not queued. Returns how many
        readings were taken, and the channel faults the readings leave open (``[{"kind", "channel",
        "since", "value"}]``, as ``OpenFaults.saved``): announced by the previous owner, yet the new
        owner's retained state must list them (it listed none until they closed).
        ``clock``: as the ingest's, so a rewind (:meth:`add_at`) the old owner took is taken again
        (unless the glitch's stamp fell behind the clock since). ``resumed``: the channel faults the
        previous owner had open (its state's): the watch starts with them, as a restart's does, and
        those the readings leave open are returned too (the readings alone show a channel stuck past
        its limits since before them as one that walked there: its fault was dropped, no ``sensor_ok``
        ever told; an upgrade walk). The
        caller holds the lock that guards the buffers (nothing drains in between)."""
        due, events, taken = len(self._due), len(self.sensor_events), 0
        kept = [f for f in resumed or () if self.sensors is not None and self.sensors.resumable(f)]
        if kept and asset not in self._assets:  # (taken by its first reading: _heard)
            self.resumed_faults[asset] = kept
        else:
            kept = []
        # the cadence is set where the grid row at window_ts is written (_write): a row the cleaner
        # filled in a gap has no reading of that time
        self._anchor, self._anchored = (None if window_ts is None else (asset, window_ts)), False
        # a full event queue dropped (and counted) the faults the primed readings open, so the new
        # owner named none of them (a review): they are read below and popped (a few a channel and
        # reading at most, over the primed readings), so the cap waits
        self._events_cap = math.inf
        try:
            for ts, values in samples:  # (a glitch's stamp ahead of the clock blinded the new owner again)
                taken += self.add_at(asset, ts, values, received, clock)[0] is None
        finally:
            anchored, self._anchor, self._anchored = self._anchored, None, False
            self._events_cap = SENSOR_EVENTS_MAX
        after = window_ts if judged_ts is None or window_ts is None else max(window_ts, judged_ts)
        self._due.keep_since(due, lambda w: anchored and w.ts > after)  # type: ignore[operator]
        opened = left_open(e for _, e in islice(self.sensor_events, events, None))  # (the previous owner's to
        while len(self.sensor_events) > events:  # announce, as its other events and the deferred ones: a review)
            self.sensor_events.pop()
        self._deferred.pop(asset, None)
        if kept and self.sensors is not None:  # (no reading taken: they wait for the first one, as a restart's)
            state, named = self._assets.get(asset), {(f["kind"], f["channel"]) for f in opened}
            index = self.sensors.channels.index  # (the watch's own, as SensorWatch.resume reads them)
            opened += [f for f in kept if (f["kind"], f["channel"]) not in named and (
                state is None or (f["kind"], index(f["channel"])) in state.watch.open)]
        return taken, opened

    def _heard(self, asset: str, ts: float, mark: int) -> None:
        """The asset is heard from (a reading taken, refused for its rate, or opening a fault): its
        first such reading ends a ``silent`` fault if one is open (before the reading's own events,
        at ``mark``), not any reading (one back with dropped readings went ``normal`` for good)."""
        if self._untaken.pop(asset, 0) is None:
            self._restored.discard(asset)
            self.resumed_faults.pop(asset, None)  # (its watch holds them now)
            self.resumed_past.pop(asset, None)
            state = self._assets.get(asset)
            was = self._was_open[1] if self._was_open is not None and self._was_open[0] == asset else (
                state.watch.open if state is not None else set())
            for k, event in enumerate(told_on_return(self._deferred.pop(asset, {}), was, ts)):
                if len(self.sensor_events) < self._events_cap:
                    self.sensor_events.insert(mark + k, (asset, event))
                else:
                    self.sensor_events_dropped += 1

    def _queue(self, asset: str, events: list[SensorEvent]) -> None:
        for event in events:
            if len(self.sensor_events) < self._events_cap:
                self.sensor_events.append((asset, event))
            else:
                self.sensor_events_dropped += 1

    def _write(self, asset: str, state: AssetBuffer, ts: float, row: list[float], received: float,
               faulted: tuple[int, ...] = ()) -> None:
        window = self.window
        state.write(row, faulted)
        if self._anchor is not None and self._anchor == (asset, ts) and state.count >= window:
            state.shift((state.count - window) % self.hop)  # prime(): a window was due here, the old cadence
            self._anchored = True
        since_full = state.count - window
        if since_full >= 0 and since_full % (self.alert_hop or self.hop) == 0:
            self._due.append(state.cut(asset, ts, received, since_full % self.hop == 0))

    @staticmethod
    def _check_alert_hop(alert_hop: int, hop: int) -> None:
        if not divides_hop(alert_hop, hop):
            raise ValueError(f"alert_hop must be 0 or a divisor of the hop ({hop}), got {alert_hop}")

    def set_alert_hop(self, alert_hop: int) -> None:
        """Queue windows at a swapped-in model's alert hop from the next sample on (the hop grid stays)."""
        self._check_alert_hop(alert_hop, self.hop)
        self.alert_hop = alert_hop

    def set_sensors(self, sensors: SensorRules | None) -> None:
        """A swapped-in model's sensor limits (the caller holds the ingest's lock): a value inside the
        old limits may lie past the new ones, so every watch is looked at by the next save."""
        self.sensors = sensors
        for state in self._assets.values():
            state.watch.may_be_past = True

    def set_ignored(self, ignored: tuple[str, ...]) -> None:
        """A swapped-in model's ignored columns: values under these names are dropped, not refused."""
        self.ignored = frozenset(ignored)

    def drain(self, limit: int | None = None) -> list[DueWindow]:
        """Remove and return up to ``limit`` queued windows (all if None), oldest first."""
        return self._due.drain(limit)

    def refused(self, asset: str, reason: str, received: float, ts: float = math.nan,
                values: dict[str, float] | None = None) -> None:
        """A reading of ``asset`` was refused for ``reason`` (not one that keeps it alive): its silence
        says so (:meth:`refused_since`). A ``duplicate_ts`` is one only when it repeats the newest
        stamp with other values (a clock stuck on one stamp); else it is a redelivery, no new reading."""
        state = self._assets.get(asset)
        if state is None or (reason == "duplicate_ts" and not self._new_values(state, ts, values)):
            return
        state.refused = (reason, received)

    def _new_values(self, state: AssetBuffer, ts: float, values: dict[str, float] | None) -> bool:
        """Whether a reading at the newest stamp carries other values than the one taken (a missing
        value on either side tells nothing): a stuck clock, not a redelivery."""
        if ts != state.last_ts or state.last is None or values is None:
            return False
        return any(x == x and v == v and x != v
                   for x, v in zip((values.get(c, NAN) for c in self.channels), state.last, strict=True))

    def add_at(self, asset: str, ts: float, values: dict[str, float], received: float,
               clock: float) -> tuple[str | None, float | None]:
        """:meth:`add`, with this machine's ``clock`` (plus a slack): a reading refused ``out_of_order``
        that shows the sender's clock stepped back (:meth:`AssetBuffer.steps_back`) rewinds the asset
        and is taken. The reason, and the stamp ahead of the clock it rewound from (None: none)."""
        reason = self.add(asset, ts, values, received)
        if reason != "out_of_order" or (state := self._assets.get(asset)) is None:
            return reason, None
        ahead = state.steps_back(ts, clock)
        return (reason, None) if ahead is None else (self.add(asset, ts, values, received), ahead)

    def drop_floors(self, kept: Callable[[str], bool]) -> None:
        """Forget the floors of assets not ``kept`` (restored ones that never came back and ended:
        a silence forgets an asset's newest stamp too, so a device whose clock went back is taken
        once it is heard again, restart or not). The caller holds the ingest's lock."""
        for asset in [a for a in self.floors if not kept(a)]:
            del self.floors[asset]
        for asset in [a for a in self.resumed_faults if not kept(a)]:  # (their silence replaced them)
            del self.resumed_faults[asset]
        for asset in [a for a in self.resumed_past if not kept(a)]:
            del self.resumed_past[asset]

    def forget(self, asset: str, windows: bool = True) -> int:
        """Drop an asset's buffer and its queued windows (frees its slot under ``max_assets``); how
        many queued windows of the hop grid went with it (``windows=False``: the caller took them
        already, :meth:`take`; the queue is not scanned again). Its publishing-rate estimate is kept for its return
        (``RATES_KEPT`` assets at most): offline the estimate carries on across a silence, and a
        too-fast publisher would otherwise be taken at its own rate again until it re-learned."""
        state = self._assets.pop(asset, None)
        if state is None:
            return 0
        self._untaken.pop(asset, None)
        self._restored.discard(asset)
        self._deferred.pop(asset, None)
        if (rate := state.cleaner.rate()) is not None:  # kept (RATES_KEPT at most, oldest dropped)
            self._rates.pop(asset, None)
            self._rates[asset] = rate
            if len(self._rates) > RATES_KEPT:
                del self._rates[next(iter(self._rates))]
        return sum(w.coarse for w in self.take({asset})) if windows else 0

    def take(self, assets: set[str]) -> list[DueWindow]:
        """Remove and return the queued windows of ``assets``, oldest first."""
        return self._due.take(assets)
