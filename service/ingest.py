"""Readings in, due windows out: the per-asset buffers between the network thread and the scorer.

:meth:`Ingest.handle` runs on paho's network thread and is kept lean: parse, put the samples into
their asset's ring buffer (under ``cond``, which also wakes the scoring worker), acknowledge the
message (only now: a message is never acknowledged before its samples are buffered; a crash loses
the buffered readings and queued windows, not the messages still unacknowledged), count. It never scores.
:meth:`Ingest.take` needs no broker (a topic and bytes in, rejects and a count out), so the whole
ingest path is testable without MQTT. The scoring worker takes batches with
:meth:`Ingest.next_batch`; :meth:`Ingest.stop` ends accepting and hands it the last one.

Backpressure: while the scorer is ``BACKLOG_BATCHES`` batches behind, nothing more is buffered;
unread messages stay with the broker, so memory stays bounded under overload instead of growing a
queue. The MQTT client asks :meth:`Ingest.backlogged` before each message and stops reading
meanwhile (its thread keeps the connection alive); ``take`` itself waits as the last guard (the
JetStream source relies on it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from paho.mqtt.client import topic_matches_sub

from sensorguard.service.asset_buffer import CLOCK_SLACK_S, DueWindow
from sensorguard.service.cleaning import CleaningPolicy
from sensorguard.service.config import Settings
from sensorguard.service.ingest_lines import IngestLines
from sensorguard.service.logs import RateLimiter
from sensorguard.service.metrics import Metrics
from sensorguard.service.payload import parse_message
from sensorguard.service.recorder import Recorder
from sensorguard.service.sensors import SensorEvent, SensorRules, resumed_faults
from sensorguard.service.windows import Buffers

log = logging.getLogger(__name__)

REJECT_LOG_INTERVAL_S = 10.0
MAX_TOPICS_MEMO = 100_000  # topics whose partition check is remembered (one per asset; made-up ones: start over)
BACKLOG_BATCHES = 4  # due windows (in batches of batch_max) beyond which no more readings are taken
# refusals its silence does not name: for its rate (they keep it alive; a duplicate_ts only when it is no
# redelivery: Buffers.refused)
NOT_REFUSED = frozenset({"resampled", "slow_rate"})


def far_ahead(ts: float, newest: float, latest: float, max_future_s: float) -> bool:
    """Whether a reading is ``future_ts``: after ``latest`` (the clock plus ``max_future_s``) and as
    far after its asset's ``newest`` reading taken (a jump; a replay ahead step by step is kept)."""
    return ts > latest and ts - newest > max_future_s


class Ingest(IngestLines):
    """Buffers the samples of each message into ``buffers`` (guarded by ``cond``) and batches due windows.

    accepting: messages are taken only while it is set (:meth:`stop` clears it; the daemon sets it
    when it connects); stopping: set by :meth:`stop`, it ends the scorer's waits and any ``take``
    waiting for the scorer.
    """

    def __init__(self, settings: Settings, buffers: Buffers, metrics: Metrics, recorder: Recorder | None) -> None:
        self.settings = settings
        self.buffers = buffers
        self.cond = threading.Condition()  # guards buffers; signals the worker
        self.metrics = metrics
        self.recorder = recorder
        self.accepting = False
        self.stopping = False
        self._sensor_dropped = 0
        self._reject_log = RateLimiter(REJECT_LOG_INTERVAL_S)
        self._said: set[str] = set()  # reasons with a line already (the first said "since the last line")
        self._rewound: dict[str, tuple[float, float]] = {}  # since the last "clock stepped back" line: asset ->
        self._rewound_unnamed = 0  # (its newest stamp, the stamp it restarts at); those beyond REWOUND_NAMED
        self._filters = settings.readings_filters()  # (none in cluster mode: the leases decide)
        self._ours: dict[str, bool] = {}  # topic -> whether a filter matches it (a memo, bounded)

    def set_policy(self, policy: CleaningPolicy, sensors: SensorRules | None) -> None:
        """Clean and check readings from the next one on with a hot-swapped bundle's policy and
        sensor limits; per-asset state carries over. The faults restored assets not heard from yet
        resume that these limits cannot judge are told ended (the swap ends a live asset's by its
        watch; those stayed open for good: a review)."""
        with self.cond:
            self.buffers.policy = policy
            self.buffers.set_sensors(sensors)
            kept, ended = resumed_faults(self.buffers.resumed_faults, sensors, self.buffers.floors)
            self.buffers.resumed_faults = kept
        self.fault_closes(ended, "the swapped-in model cannot judge them")

    def fault_closes(self, ended: list[tuple[str, SensorEvent]], why: str) -> None:
        """Queue the closes of saved faults no watch can end (:func:`~sensorguard.service.sensors.resumed_faults`),
        for the worker to publish, and say so."""
        if ended:
            with self.cond:
                self.buffers.sensor_events.extend(ended)
                self.cond.notify()
            log.info("%d sensor faults saved open are told ended: %s (%s)", len(ended), why,
                     ", ".join(f"{asset} {e.kind} of {e.channel}" for asset, e in ended[:5]))

    def stop(self) -> None:
        """Stop accepting (unacknowledged messages stay with the broker) and wake the worker for its last batch."""
        self.accepting = False
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def handle(self, client: Any, message: Any) -> None:
        """MQTT: take one message and acknowledge it (:meth:`accept`); while not ``accepting``
        (shutting down) it stays unacknowledged, so the broker delivers it again next session."""
        if getattr(message, "retain", False) and self.accepting:  # the broker's stored last reading, sent on
            self._rejected("retained", message.topic, None)  # (re)subscribing: stale, it re-created a silent
            client.ack(message.mid, message.qos)  # asset and ended its fault at every reconnect
            return
        if self.accept(message.topic, message.payload):
            client.ack(message.mid, message.qos)

    def accept(self, topic: str, payload: bytes) -> bool:
        """Take one message and count what was accepted and rejected (rate-limited log); whether
        the message may be acknowledged (False: not accepting, or stopped while it waited). The
        MQTT and the JetStream sources both come through here."""
        if not self.accepting:
            return False
        try:
            taken = self.take(topic, payload)
        except Exception:  # noqa: BLE001 - a bug must not stop the network thread
            if (count := self._reject_log.hit("unexpected error")) is not None:  # (one a message flooded the log)
                log.exception("unexpected error handling a message on %r (%d like this since the last line)",
                              topic[:200], count)
            taken = ["parse_error"], 0, None
        if taken is None:
            return False  # stopped while it waited: its windows could no longer be scored, so no ack
        rejects, accepted, asset = taken
        if accepted:
            self.metrics.readings.inc(accepted)
        for reason in rejects:
            self._rejected(reason, topic, asset, payload)
        return True

    def backlogged(self, wait_s: float = 0.0) -> bool:
        """Whether the scorer is ``BACKLOG_BATCHES`` batches behind, after waiting up to ``wait_s``
        for it to catch up (never while stopping: :meth:`take` then refuses the message itself)."""
        cap = BACKLOG_BATCHES * self.settings.batch_max
        if self.buffers.pending() < cap or self.stopping:
            return False
        deadline = time.monotonic() + wait_s
        with self.cond:
            while self.buffers.pending() >= cap and not self.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self.cond.wait(min(0.05, remaining))
        return False

    def take(self, topic: str, payload: bytes) -> tuple[list[str], int, str | None] | None:
        """Parse one message and buffer its samples; returns (rejects, accepted, asset).

        None: :meth:`stop` came first (the worker has taken or is taking its last batch), so
        nothing was buffered and the message must stay unacknowledged.
        """
        s = self.settings
        received = time.monotonic()
        if self._filters and not self._is_ours(topic):
            return ["not_ours"], 0, None
        parsed = parse_message(topic, payload, s.topic_prefix, s.max_payload_bytes, s.max_samples_per_message,
                               self.buffers.ignored)
        rejects = parsed.rejects
        accepted = 0
        if parsed.samples:
            rejects = list(rejects)
            recorder = self.recorder
            rows: list[tuple[float, list[float]]] = []
            rewound: float | None = None  # (the recorder is told after the lock, as the rows are)
            with self.cond:
                buffers = self.buffers
                while self.backlogged(1.0):  # (cond is re-entrant: its wait releases it)
                    pass
                if self.stopping:
                    return None
                before, restarts, assets = buffers.queued(), buffers.gaps, len(buffers)
                now = time.time()
                latest, clock = now + s.max_future_s, now + CLOCK_SLACK_S
                # a jump far ahead of the clock and of the asset's last reading taken: a glitching
                # clock (an accelerated replay runs ahead step by step, reading after reading taken,
                # and is kept; refused ones do not step it: 500 samples 3,599 s apart, each refused
                # for its rate, stepped an asset 21 days ahead). Before its first reading since a
                # restart, the last window the previous run judged (its floor): a replay ahead of the
                # clock, restarted, had every reading refused as future_ts, every older one as
                # out_of_order, until the clock caught up (found in a walk)
                newest = buffers.taken_ts(parsed.asset) or buffers.floors.get(parsed.asset) or 0.0
                for sample in parsed.samples:
                    if far_ahead(sample.ts, newest, latest, s.max_future_s):
                        reason = "future_ts"
                    else:
                        reason, ahead = buffers.add_at(parsed.asset, sample.ts, sample.values, received, clock)
                        if ahead is not None:
                            self._stepped_back(parsed.asset, ahead, sample.ts)
                            rewound = buffers.last_ts(parsed.asset)  # (this reading's, or before the jump)
                            rows = [row for row in rows if row[0] <= rewound]
                    if reason is None:
                        newest = sample.ts  # (one taken is newer than every reading before it)
                        accepted += 1
                        if recorder is not None and not buffers.faulted(parsed.asset):  # held values are no data
                            rows.append((sample.ts, buffers.last_row(parsed.asset)))
                    else:
                        rejects.append(reason)
                        if reason not in NOT_REFUSED:
                            buffers.refused(parsed.asset, reason, received, sample.ts, sample.values)
                after = buffers.queued()
                if buffers.gaps != restarts:
                    self.metrics.window_restarts.inc(buffers.gaps - restarts)
                if len(buffers) != assets:  # (set only when a batch was taken: 0 while assets filled windows)
                    self._gauges()
                if (after > before and (before == 0 or after >= s.batch_max)) or buffers.sensor_events:
                    self.cond.notify()
            if rewound is not None and recorder is not None:
                recorder.rewound(parsed.asset, rewound)
            for ts, row in rows:  # the row as buffered (forward fills included), in model channel order
                recorder.add(parsed.asset, ts, row)
            if accepted:  # its alerts_total at 0 from its first reading taken, a window before its first window
                # can raise: labelled at that window, a first window at twice the line (one-window raise)
                # was born at 1, and increase() never saw it (the flood and alert-rate rules; a deploy walk)
                self.metrics.asset_label(parsed.asset)
        elif rejects and parsed.asset is not None:  # refused whole or every sample (bad_values, too_large ...)
            with self.cond:
                self.buffers.refused(parsed.asset, rejects[-1], received)
        return rejects, accepted, parsed.asset

    def _is_ours(self, topic: str) -> bool:
        """Whether ``topic`` is under one of this instance's partitions. A session resumed after the
        partitions changed may still hold an old subscription (its retained status could not be read
        to undo it): its readings were scored here and by their new owner, alerts raised twice.
        They are acknowledged and counted (``not_ours``), not scored."""
        ours = self._ours.get(topic)
        if ours is None:
            if len(self._ours) >= MAX_TOPICS_MEMO:
                self._ours.clear()
            ours = self._ours[topic] = any(topic_matches_sub(f, topic) for f in self._filters)
        return ours

    def prime(self, asset: str, samples: list[tuple[float, dict[str, float]]], window_ts: float | None,
              judged_ts: float | None = None, past: dict[str, float] | None = None,
              label: bool = True, faults: list[dict] | None = None) -> tuple[int, list[dict]]:
        """Cluster mode, taking an asset over: rebuild its window from readings its previous owner
        took (:meth:`Buffers.prime`, on the cadence of its window at ``window_ts``); they are not
        counted or recorded again, and only the windows after ``window_ts`` (and ``judged_ts``)
        are scored. How many readings were taken, and the channel faults they leave open. ``past``:
        the values its sensor watch starts from for channels walked past their limits
        (:func:`~sensorguard.service.walked_channels.along_walk`). ``label``: False for a silent
        asset primed only to teach the cleaner its rate (its buffer forgotten at once): it takes
        no metrics label slot, which nothing would free until it came back and went silent again.
        ``faults``: the channel faults its previous owner had open (:meth:`Buffers.prime`).

        The window stream holds every reading sent, those the previous owner refused as
        ``future_ts`` too: they are left out here as they were there (taken, one stamped hours
        ahead blinded the new owner until the asset went silent; a review)."""
        now, ahead = time.time(), self.settings.max_future_s
        with self.cond:
            newest, kept = self.buffers.taken_ts(asset) or 0.0, []
            for ts, values in samples:
                if far_ahead(ts, newest, now + ahead, ahead):
                    continue
                kept.append((ts, values))
                newest = ts
            placed = bool(past) and asset not in self.buffers
            if placed:
                self.buffers.resumed_past[asset] = past
            primed = self.buffers.prime(asset, kept, time.monotonic(), window_ts, judged_ts, now + CLOCK_SLACK_S,
                                        faults)
            if primed[0] and label:  # its alerts_total at 0 from here, as from a first reading taken (``take``)
                self.metrics.asset_label(asset)
            if placed or samples:  # (not taken by a reading: no later watch starts from it. Nothing replayed, the
                self.buffers.resumed_past.pop(asset, None)  # takeover's for an asset not primed waits for its first)
            self._gauges()  # (an asset taken over has a buffer now: it stayed 0 on a worker that took two, a walk)
            if self.buffers.queued():  # windows the previous owner completed but did not score
                self.cond.notify()
            return primed

    def release(self, assets: set[str]) -> bool:
        """Cluster mode: drop these assets' buffers once none of their windows waits to be scored;
        whether it was done (False: try again after the next batch)."""
        with self.cond:
            if self.buffers.pending_of(assets):
                return False
            for asset in assets:
                self.buffers.forget(asset)
            self._gauges()
            return True

    def sensor_events(self) -> list[tuple[str, SensorEvent]]:
        """Take the sensor faults opened or closed since the last call (the worker publishes them,
        so an asset's state is only ever published from one thread)."""
        with self.cond:
            events = list(self.buffers.sensor_events)
            self.buffers.sensor_events.clear()
            dropped = self.buffers.sensor_events_dropped - self._sensor_dropped
            self._sensor_dropped = self.buffers.sensor_events_dropped
        if dropped:
            self.metrics.sensor_events_dropped.inc(dropped)
        return events

    def next_batch(self, wait_s: float) -> tuple[list[DueWindow], bool]:
        """Wait up to ``wait_s`` for due windows, let the batch fill for ``batch_wait_ms`` (or until
        ``batch_max``); ``(batch, is_last)``. Once stopping: every window already due, and True."""
        s = self.settings
        with self.cond:
            if not self.buffers.queued() and not self.stopping:
                self.cond.wait(wait_s)
            if self.stopping:
                return self.buffers.drain(), True
            if not self.buffers.queued():
                return [], False
            deadline = time.monotonic() + s.batch_wait_ms / 1000.0
            while not self.stopping and self.buffers.queued() < s.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            batch = self.buffers.drain(s.batch_max)
            self._gauges()
            return batch, False

    def holds(self, asset: str) -> bool:
        """Whether ``asset`` has a buffer now (heard from, not yet silent)."""
        with self.cond:
            return asset in self.buffers

    def drop(self, assets: set[str]) -> int:
        """Cluster mode, a partition lost (its lease ran out and another worker took it): free these
        assets' buffers now, their queued windows unscored (``windows_dropped{reason="partition_lost"}``):
        the new owner primes and scores them from the window stream, and scoring them here too
        announced the same alerts twice. How many windows went."""
        with self.cond:
            return self._forget(assets, "partition_lost")

    def forget_silent(self, before: float) -> tuple[dict[str, float], list[DueWindow], dict[str, str]]:
        """Free the buffers of assets that sent nothing since ``before`` (monotonic); for each, the
        reading time of its last sample, and their windows still queued, oldest first (assets none
        of whose readings was taken go too, unnamed), and why the readings of those that did send
        were refused since (an asset whose every reading carried a new sensor's channel was told
        it "sent nothing", and an operator sent to its network: a walk).

        The windows are handed back, not dropped: the caller judges them before it ends the assets,
        as offline judges every row before a gap. A backlog drained for longer than the silence
        (an abuse walk: 12,304 windows dropped) lost them, and whatever alert they held.
        """
        with self.cond:
            idle = self.buffers.idle(before)
            silent = {asset: self.buffers.last_ts(asset) for asset in idle if self.buffers.taken(asset)}
            refused = {asset: why for asset in silent if (why := self.buffers.refused_since(asset))}
            queued = self.buffers.take(set(idle))
            for asset in idle:
                self.buffers.forget(asset, windows=False)  # (taken above: one scan of the queue, not one each)
            self._gauges()
        return silent, queued, refused

    def _forget(self, assets: Iterable[str], reason: str) -> int:
        """Free the assets' buffers (the caller holds ``cond``); their queued windows are counted
        as dropped for ``reason``. How many went."""
        dropped = sum(self.buffers.forget(asset) for asset in assets)
        if dropped:
            self.metrics.windows_dropped.labels(reason).inc(dropped)
        self._gauges()
        return dropped

    def _gauges(self) -> None:
        self.metrics.assets.set(len(self.buffers))
        self.metrics.buffered_windows.set(self.buffers.pending())
