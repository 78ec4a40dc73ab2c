"""Each partition the cluster source owns, from gained to given up: taken over (rebuilt), served
(fetched, taken, acknowledged), and lost or handed over.

:class:`OwnedPartitions` is the part of :class:`~sensorguard.service.jetstream.ClusterSource` that
runs on its event loop for one partition at a time: :mod:`~sensorguard.service.ownership` calls
``_gain`` and ``_lose`` as leases come and go; ``_consume`` rebuilds the partition's assets
(:mod:`~sensorguard.service.takeover`), then fetches its readings
(:func:`~sensorguard.service.partition_fetch.fetch_partition`) until it is released. It is a mixin,
not a class of its own, because it hands the partition's assets over through the source's state
sync, taker and scoring thread; ``ClusterSource.__init__`` sets everything listed below. Kept apart
from the source's connection, membership and scoring-thread side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from sensorguard.service.assets import AssetAlerts
from sensorguard.service.cluster import partition_of
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.consumers import ACK_WAIT_S, ensure_consumer, unacknowledged
from sensorguard.service.ingest import Ingest
from sensorguard.service.logs import counted
from sensorguard.service.metrics import Metrics
from sensorguard.service.natswire import Wire
from sensorguard.service.ownership import Ownership
from sensorguard.service.partition_fetch import FETCH_WAIT_S, fetch_partition
from sensorguard.service.state_adoption import StateKeys
from sensorguard.service.statesync import StateSync
from sensorguard.service.takeover import Takeover
from sensorguard.service.taker import Taker
from sensorguard.service.waits import pause

# The cluster source's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.jetstream")

RELEASE_WAIT_S = 10.0  # a released partition's fetch loop gets this long to finish its batch


class OwnedPartitions:
    """Partitions gained, served and lost (a mixin of :class:`~sensorguard.service.jetstream.ClusterSource`,
    which owns the attributes declared here)."""

    settings: Settings
    ingest: Ingest
    metrics: Metrics
    alerts: AssetAlerts
    controls: AlarmControls | None
    sync: StateSync
    worker: str
    ownership: Ownership | None
    taker: Taker
    state_keys: StateKeys
    _handovers: deque[tuple[set[str], Future]]
    _tasks: dict[int, tuple[asyncio.Task, asyncio.Event, threading.Event]]
    _ready: set[int]
    _states: Any
    _js: Any
    _nc: Any
    _connected_wire: Callable[[], Awaitable[Wire]]  # (a method of ClusterSource)

    async def _gain(self, k: int) -> None:
        halt = asyncio.Event()
        abort = threading.Event()  # stops its taking thread when the partition is given up
        self._tasks[k] = (asyncio.create_task(self._consume(k, halt, abort), name=f"partition-{k}"), halt, abort)
        self.metrics.partitions_owned.set(len(self._tasks))
        self.metrics.partition_info.labels(self.worker, f"cluster/{k}").set(1)
        log.info("cluster: took partition %d", k)

    async def _lose(self, k: int, handing_over: bool) -> None:
        """Let the partition's fetch loop finish its batch (every reading taken is acknowledged), then
        end; its assets' buffers and state are dropped here once their last windows are scored, and
        with ``handing_over`` their states written for the next owner first."""
        task, halt, abort = self._tasks.pop(k, (None, None, None))
        self._ready.discard(k)
        self.metrics.partitions_owned.set(len(self._tasks))
        with contextlib.suppress(KeyError):
            self.metrics.partition_info.remove(self.worker, f"cluster/{k}")
        if task is not None and halt is not None:
            halt.set()
            if not handing_over and abort is not None:  # lost: another worker serves it now, so its
                abort.set()  # taking thread stops at once (a batch it held would be redelivered there too)
            try:
                await asyncio.wait_for(asyncio.shield(task), FETCH_WAIT_S + RELEASE_WAIT_S)
            except (TimeoutError, asyncio.CancelledError):
                if abort is not None:
                    abort.set()  # a batch still being taken stops too
                task.cancel()
        assets = set(self.taker.assets.pop(k, set()))  # a copy: a taking thread may still add to the old set
        self.sync.leaving |= assets
        timed_out = False
        try:  # (whatever ends it, its assets go: else they stayed leaving for good, and the scorer never
            # passed their states on again when the partition came back here: an audit)
            if assets and not handing_over:  # their queued windows are the new owner's to score
                self.ingest.drop(assets)
            if assets:
                done: Future = Future()
                self._handovers.append((assets, done))
                try:
                    states = await asyncio.wait_for(asyncio.wrap_future(done), RELEASE_WAIT_S)
                except TimeoutError:  # what is queued for them is the newest there is: it is written below
                    log.warning("cluster: partition %d: the scorer did not hand its assets over in time", k)
                    states = {asset: self.sync.outbox[asset] for asset in assets if asset in self.sync.outbox}
                    timed_out = True
                for asset in assets:  # an older state still queued must not overwrite the last one
                    self.sync.outbox.pop(asset, None)
                if handing_over:  # (tried again while the bucket fails; the lease is renewed meanwhile)
                    await self.sync.hand_over(states)
            if self.ownership is not None:  # maintenance and shelving go with them
                await self.sync.hand_over_controls(lambda a: partition_of(a, self.ownership.partitions) == k,
                                                   handing_over)
        finally:
            if not timed_out:  # else step() lets them go once the scorer handed them over
                for asset in assets:  # (a flush that was writing meanwhile may have queued one again)
                    self.sync.outbox.pop(asset, None)
                self.sync.leaving -= assets
        if handing_over:  # ("gave up partition" read as a failure for a clean hand-over: a walk)
            log.info("cluster: handed partition %d over (%s)", k, counted(len(assets), "asset"))
        else:
            log.info("cluster: stopped serving partition %d (another worker serves it now)", k)

    async def _consume(self, k: int, halt: asyncio.Event, abort: threading.Event) -> None:
        """Serve partition ``k`` until ``halt``: take it over once (:meth:`_rebuild`), then fetch.
        A failure (a leader change, a lost connection) is logged and the partition served again,
        after ``ACK_WAIT_S`` so the readings that were in flight come again before newer ones (each
        asset's readings stay in order); the buffers it has are kept."""
        rebuilt = False
        while not halt.is_set():
            try:
                if not rebuilt:
                    assets, primed = await self._rebuild(k, halt)
                    if halt.is_set():
                        return
                    rebuilt = True
                    self._ready.add(k)  # its commands are answered here from now on
                    log.info("cluster: partition %d: rebuilt the windows of %s from %s", k, counted(assets, "asset"),
                             counted(primed, "reading"))
                await self._serve(k, halt, abort)
                return
            except Exception as exc:  # noqa: BLE001 - never let a partition stop being consumed silently
                if halt.is_set():
                    return
                log.warning("cluster: partition %d: %s; serving it again in %.0f s", k, exc or type(exc).__name__,
                            ACK_WAIT_S)
                await pause(halt, ACK_WAIT_S)

    async def _serve(self, k: int, halt: asyncio.Event, abort: threading.Event) -> None:
        """Fetch, take and acknowledge partition ``k``'s readings until ``halt`` (:func:`fetch_partition`)."""
        durable = await ensure_consumer(self._js, k)
        ownership = self.ownership
        await fetch_partition(await self._connected_wire(), durable, ownership, self.taker, k, halt, abort)

    async def _rebuild(self, k: int, halt: asyncio.Event) -> tuple[int, int]:
        """Before consuming partition ``k``: its assets' windows and state (:mod:`takeover`)."""
        if await unacknowledged(self._js, k):  # the previous owner died with readings in flight
            await pause(halt, ACK_WAIT_S)  # they come again first, ahead of newer ones
        takeover = Takeover(self._nc, self._states, self.settings, self.ingest, self.alerts, self.controls,
                            self.state_keys)
        assets, primed = await takeover.rebuild(k, self.ownership.partitions if self.ownership else 0, halt)
        self.taker.assets.setdefault(k, set()).update(assets)
        return len(assets), primed
