"""Cluster mode's ingest: readings from the JetStream partitions this worker owns, into :class:`Ingest`.

Everything after this module is the MQTT mode's code: the same :meth:`Ingest.take` (parse, clean,
buffer, backpressure), scorer, alerts, publisher and recorder. Only the source differs: instead of
an MQTT session, one durable pull consumer per owned partition (``sg-p<k>`` on the readings stream,
explicit acknowledgement, shared by whichever worker owns ``k``: a new owner resumes from the
acknowledged position). A reading is acknowledged after it was buffered, as in MQTT mode.

nats-py is asyncio-only; the daemon is threads. So the client lives on an event loop in its own
thread (``sensorguard-cluster``), like paho's network thread: it fetches (:mod:`partition_fetch`:
lean pull requests, :mod:`pull`, on a :mod:`natswire` connection of their own, beside nats-py's),
hands each batch to the synchronous ``Ingest.accept`` on one taking thread for every partition
(:mod:`taker`) and acknowledges the batch in one write; readings
fetched but not taken (stopping, giving a partition up) are given back with ``nak``, so the next
owner gets them at once. The loop also runs :mod:`ownership` (leases renewed
every second); each partition it gives this worker, from gained to lost, is :mod:`owned_partitions`'s.
The scorer never sees asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any

from sensorguard.service.assets import AssetAlerts
from sensorguard.service.cluster import (
    OWNERS_BUCKET,
    STATE_BUCKET,
    ClusterError,
    connect,
    joined_layout,
    no_jetstream,
    partition_of,
    stray_subjects,
    subject_to_topic,
)
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.ingest import Ingest
from sensorguard.service.logs import first_line
from sensorguard.service.member_models import model_mark
from sensorguard.service.metrics import Metrics
from sensorguard.service.natswire import Wire, WireError
from sensorguard.service.natswire import connect as connect_wire
from sensorguard.service.owned_partitions import OwnedPartitions
from sensorguard.service.ownership import Ownership, run
from sensorguard.service.state_adoption import StateKeys
from sensorguard.service.state_entry import encode_asset
from sensorguard.service.statesync import StateSync
from sensorguard.service.stream_reads import readings_waiting
from sensorguard.service.taker import Taker
from sensorguard.service.waits import pause, unless
from sensorguard.service.walked_channels import walk_marks
from sensorguard.service.watchdog import watch_sources

log = logging.getLogger(__name__)

CONNECT_RETRY_S = 5.0  # the first connection to the cluster is tried again this often
STATE_FULL_S = 30.0  # every asset's state (drift included) is written this often
WALKS_S = 1.0  # how often the states of channels walked past their limits are looked at (walk_marks)
CONTROLS_WRITE_S = 3.0  # a command's change is written to the state bucket before its answer, waiting this long
STRAYS_QUEUE = "sensorguard-strays"  # the queue group of the workers counting stray readings: once each


class ClusterSource(OwnedPartitions):
    """Fetch the owned partitions' readings into ``ingest``; :meth:`start`, then :meth:`stop`."""

    def __init__(self, settings: Settings, ingest: Ingest, metrics: Metrics, alerts: AssetAlerts,
                 controls: AlarmControls | None = None, publishes: Callable[[], bool] | None = None,
                 model: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.model = model  # the bundle served now: its mark goes in the member key (member_models)
        self.publishes = publishes  # whether it can publish what it judges (Ownership: else it stands down)
        self.ingest = ingest
        self.metrics = metrics
        self.alerts = alerts
        self.controls = controls  # maintenance, shelving, acknowledgeable alerts: they move with the assets
        if controls is not None:
            controls.on_change = self.controls_changed
            controls.persist = self.save_controls
        self._handovers: deque[tuple[set[str], Future]] = deque()  # for the scoring thread (step)
        self._states: Any = None  # the state bucket
        self._next_full = 0.0
        self._next_walks, self._walks = 0.0, {}  # channels walked past their limits: where they stand
        # states and controls for the next owners (loop thread)
        self.sync = StateSync(controls, self.serves, self.taking_over)
        self.worker = settings.instance_name
        self.ready = threading.Event()  # connected and taking part in the ownership
        # why it is not ready, for /readyz: its body said "not connected" to a worker connected to a
        # cluster not initialised, whose log said to run cluster init (a walk)
        self.waiting_for: str | None = None
        self.ownership: Ownership | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        # partition -> (its fetch loop, the event that halts it, the one that stops its taking thread)
        self._tasks: dict[int, tuple[asyncio.Task, asyncio.Event, threading.Event]] = {}
        self._ready: set[int] = set()  # partitions taken over (rebuilt): their commands are answered here
        self._js: Any = None
        self._nc: Any = None
        self._wire: Wire | None = None  # the readings' connection (pulls and acknowledgements)
        self._wiring = asyncio.Lock()  # one connecting at a time (a lock binds to the loop on first use)
        self._thread = threading.Thread(target=self._run, name="sensorguard-cluster", daemon=True)
        self.taker = Taker(ingest, settings.topic_prefix,  # every partition's batches, on one thread
                           lambda k: self.ownership is None or self.ownership.holds(k))
        self.state_keys = StateKeys()  # the state bucket's keys, listed once for the partitions taken together

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop fetching, hand the partitions over (leases released), disconnect."""
        self._stop.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def serves(self, asset: str) -> bool:
        """Whether ``asset`` is this worker's now (its partition was taken over here: state and
        controls adopted), even before any of its readings came: commands for it are answered here."""
        ownership = self.ownership  # (and its lease surely ours: a worker stalled past it writes nothing)
        if ownership is None:
            return False
        k = partition_of(asset, ownership.partitions)
        return k in self._ready and ownership.holds(k)

    def taking_over(self, asset: str) -> bool:
        """Whether ``asset``'s partition is this worker's but not served now: still being taken over
        (rebuilt), or its lease not sure for a moment (a renewal late while the bucket elects a
        leader): its commands are answered "try again", its states and controls kept to write."""
        ownership = self.ownership
        return (ownership is not None and partition_of(asset, ownership.partitions) in self._tasks
                and not self.serves(asset))

    def controls_changed(self, asset: str) -> None:
        """Any thread: ``asset``'s maintenance, shelving or alerts changed; written to the state
        bucket with the next flush, so a next owner takes them over."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self.sync.mark, asset)

    def save_controls(self, asset: str, changed: float) -> bool:
        """The command thread: write ``asset``'s controls to the state bucket now, waiting at most
        ``CONTROLS_WRITE_S``; whether they were written. A command is answered "accepted" once its
        change would outlive this worker: a hold answered so and lost with a worker killed before
        the next flush (0.5 s) left its asset unheld under the next owner (a walk)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        writing = self.sync.write_controls_now(asset, changed)
        try:
            future = asyncio.run_coroutine_threadsafe(writing, loop)
        except RuntimeError:  # the loop closed in between
            writing.close()  # (never awaited: Python warned)
            return False
        try:
            return bool(future.result(CONTROLS_WRITE_S))
        except Exception as exc:  # noqa: BLE001 - a timeout, the loop closed: not written (the flush tries again)
            future.cancel()  # (left running, each slow write queued behind the last on the lock: a review)
            log.warning("cluster: the controls of %s were not written to the state bucket now (%s): the next "
                        "flush tries again", asset, type(exc).__name__)
            return False

    @property
    def owned(self) -> list[int]:
        return sorted(self.ownership.owned) if self.ownership is not None else []

    # --- the event loop's side ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - a bug: the daemon stays up, not ready (/readyz), and says why
            log.exception("the cluster source stopped")
        finally:
            self.ready.clear()
            self.taker.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        if self._stop.is_set():
            return
        nc = None
        while nc is None and not self._stop.is_set():  # the cluster may come up after the daemon
            try:  # (nats-py tries forever here, its errors logged as warnings: a stop must not wait for it)
                nc = await unless(stopping, connect(self.settings.cluster_servers(), forever=True,
                                                    disconnected_cb=self._disconnected,
                                                    reconnected_cb=self._reconnected))
            except ClusterError as exc:
                self.waiting_for = str(exc)
                log.warning("%s; trying again", exc)
                await pause(stopping, CONNECT_RETRY_S)
        if nc is None:
            return
        self.waiting_for = None  # (connected: an earlier try's "cannot reach" no longer holds)
        try:
            self._nc, self._js = nc, nc.jetstream()
            while self.ownership is None:  # streams not made yet, a leader election: said, tried again
                try:
                    ownership = await self._join()
                    self._states = await self._js.key_value(STATE_BUCKET)
                    self.ownership = ownership
                except Exception as exc:  # noqa: BLE001 - nats-py raises several kinds; one line each try
                    hint = (": the cluster is not initialised; run sensorguard cluster init" if _not_found(exc)
                            else no_jetstream(exc))
                    self.waiting_for = f"joining the cluster failed ({first_line(exc)}){hint}"
                    log.warning("cluster: joining failed (%s)%s; trying again in %.0f s", first_line(exc), hint,
                                CONNECT_RETRY_S)
                    await pause(stopping, CONNECT_RETRY_S)
                    if self._stop.is_set():
                        return
            self.sync.open(self._states, self._js)
            for subject in stray_subjects(self.settings.topic_prefix):  # one worker of all gets each
                await nc.subscribe(subject, queue=STRAYS_QUEUE, cb=self._stray)
            writer = asyncio.create_task(self.sync.run(stopping), name="state-writer")
            ownership = self.ownership
            watcher = asyncio.create_task(watch_sources(nc, lambda: ownership.members[:1] == [self.worker], stopping),
                                          name="source-watch")  # one worker: the first member by name
            self.waiting_for = None
            self.ready.set()
            await run(self.ownership, stopping)
            self.ready.clear()
            if await self.ownership.leave() is False:
                log.warning("cluster: %s", await readings_waiting(nc))
            await writer
            await watcher
            await self.sync.flush()
        finally:
            for task, halt, _ in self._tasks.values():
                halt.set()
                task.cancel()
            if self._wire is not None:
                self._wire.close()
            try:
                await nc.close()
            except OSError as exc:  # NATS down at the stop: nothing left to close cleanly (it was said as
                # "ERROR the cluster source stopped" with a traceback, at the end of a clean stop: a walk)
                log.info("cluster: the NATS connection was already lost at the stop (%s)", first_line(exc) or
                         type(exc).__name__)

    async def _stray(self, message: Any) -> None:
        """A reading no partition takes (:func:`stray_subjects`): ``bad_asset``, as without a cluster."""
        self.ingest.refuse("bad_asset", subject_to_topic(message.subject), message.data)

    async def _connected_wire(self) -> Wire:
        """The readings' connection; a lost one is replaced (the server nats-py is on first)."""
        async with self._wiring:
            if self._wire is None or not self._wire.connected:
                try:
                    self._wire = await connect_wire(self.settings.cluster_servers(), f"{self.worker}-readings",
                                                    prefer=self._nc.connected_url)
                except WireError:
                    self.ready.clear()  # /readyz: no readings can come while it cannot connect
                    raise
                if self._nc.is_connected and not self._stop.is_set():
                    self.ready.set()
            return self._wire

    async def _join(self) -> Ownership:
        partitions = await joined_layout(self._js, self.settings.topic_prefix, self.ingest.buffers.window)
        kv = await self._js.key_value(OWNERS_BUCKET)
        log.info("cluster: worker %s joined (a cluster of %d partitions)", self.worker, partitions)
        mark = None if self.model is None else (lambda: model_mark(self.model(), self.settings))
        return Ownership(kv, self.worker, partitions, self._gain, self._lose,
                         lambda change: self.metrics.partition_changes.labels(change).inc(), self.publishes, mark,
                         self.metrics.cluster_members.set)

    async def _disconnected(self) -> None:
        self.ready.clear()
        if not self._stop.is_set():  # closing the connection on a clean stop calls this too
            log.warning("cluster: disconnected from NATS; reconnecting")

    async def _reconnected(self) -> None:
        if self.ownership is not None and not self._stop.is_set():
            self.ready.set()
        log.info("cluster: reconnected to NATS")

    def step(self) -> None:
        """Scoring thread, after each batch: hand over the assets of released partitions (once none
        of their windows waits), and pass the states that changed on to the state bucket."""
        while self._handovers:
            assets, done = self._handovers[0]
            past = self._past(assets)  # (read before their buffers go)
            if not self.ingest.release(assets):
                break  # their last windows are scored first
            self._handovers.popleft()
            faults = self.alerts.open_faults(assets)  # (read before the hand-over forgets them)
            states = self.alerts.hand_over(assets)
            if done.set_running_or_notify_cancel():  # False: the release gave up waiting; they are gone all the same
                done.set_result({asset: encode_asset(*state, guard_until=self._band(asset), past=past.get(asset),
                                                     faults=faults.get(asset))
                                 for asset, state in states.items()})
            elif (loop := self._loop) is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # no state of theirs is passed on from here now
                    loop.call_soon_threadsafe(self.sync.leaving.difference_update, assets)
        now = time.monotonic()
        full = now >= self._next_full
        if full:
            self._next_full = now + STATE_FULL_S
        if now >= self._next_walks or full:  # (once a second: every asset's watch is looked at, under the ingest's
            self._next_walks = now + WALKS_S  # lock; a full write writes every value: the marks start from them)
            self._walks = walk_marks(self._past(None), self.ingest.buffers.sensors, None if full else self._walks)
        changed = self.alerts.changed_states(full, self._walks)
        loop = self._loop
        if changed and loop is not None and not loop.is_closed():
            leaving, past, faults = self.sync.leaving, self._past(changed), self.alerts.open_faults(changed)
            data = {asset: None if state is None else encode_asset(*state, guard_until=self._band(asset),
                                                                   past=past.get(asset), faults=faults.get(asset))
                    for asset, state in changed.items() if asset not in leaving}
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self.sync.queue, data)  # the outbox as it is then, not now

    def _past(self, assets: Collection[str] | None) -> dict[str, dict[str, float]]:
        """The assets' channels walked past their sensor limits, passed on with their states: a new
        owner's watch starts from them (:func:`~sensorguard.service.walked_channels.along_walk`)."""
        with self.ingest.cond:
            return self.ingest.buffers.past_limits(assets)

    def _band(self, asset: str) -> float | None:
        """The recorder's guard band after the asset's last clear, passed on with its state."""
        return None if self.alerts.recorder is None else self.alerts.recorder.band_of(asset)


def _not_found(exc: BaseException) -> bool:
    """A stream or bucket that is not there: ``cluster init`` has not run (the log said only
    "stream not found", every 5 s; found in a README walk)."""
    try:
        from nats.js.errors import NotFoundError
    except ImportError:  # (no nats-py: not cluster mode)
        return False
    return isinstance(exc, NotFoundError)
