"""Cluster mode's ingest: readings from the JetStream partitions this worker owns, into :class:`Ingest`.

Everything after this module is the MQTT mode's code: the same :meth:`Ingest.take` (parse, clean,
buffer, backpressure), scorer, alerts, publisher and recorder. Only the source differs: instead of
an MQTT session, one durable pull consumer per owned partition (``sg-p<k>`` on the readings stream,
explicit acknowledgement, shared by whichever worker owns ``k``: a new owner resumes from the
acknowledged position). A reading is acknowledged after it was buffered, as in MQTT mode.

nats-py is asyncio-only; the daemon is threads. So the client lives on an event loop in its own
thread (``sensorguard-cluster``), like paho's network thread: it fetches, calls the synchronous
``Ingest.take`` and acknowledges; it also runs :mod:`ownership` (leases renewed every second). The
scorer never sees asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from sensorguard.service.cluster import OWNERS_BUCKET, READINGS_ROOT, READINGS_STREAM, ClusterError, asset_of, connect
from sensorguard.service.config import Settings
from sensorguard.service.ingest import Ingest
from sensorguard.service.metrics import Metrics
from sensorguard.service.ownership import Ownership, run

log = logging.getLogger(__name__)

FETCH_BATCH = 256  # messages per fetch
FETCH_WAIT_S = 0.5  # a fetch returns after this long with what it has (and lets a release through)
ACK_WAIT_S = 30.0  # an unacknowledged reading is delivered again after this long (to whoever owns it then)
MAX_ACK_PENDING = 20_000  # readings out and unacknowledged per partition at most (the broker's inflight)


class ClusterSource:
    """Fetch the owned partitions' readings into ``ingest``; :meth:`start`, then :meth:`stop`."""

    def __init__(self, settings: Settings, ingest: Ingest, metrics: Metrics) -> None:
        self.settings = settings
        self.ingest = ingest
        self.metrics = metrics
        self.worker = settings.instance_name
        self.ready = threading.Event()  # connected and taking part in the ownership
        self.failed: BaseException | None = None  # why the source stopped on its own
        self.ownership: Ownership | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: dict[int, asyncio.Task] = {}
        self._halt: set[int] = set()
        self._js: Any = None
        self._thread = threading.Thread(target=self._run, name="sensorguard-cluster", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop fetching, hand the partitions over (leases released), disconnect."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)

    @property
    def owned(self) -> list[int]:
        return sorted(self.ownership.owned) if self.ownership is not None else []

    # --- the event loop's side ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - reported by the daemon (readiness, log), never raised
            self.failed = exc
            log.error("cluster source stopped: %s", exc)
        finally:
            self.ready.clear()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        nc = await connect(self.settings.cluster_servers())
        try:
            js = self._js = nc.jetstream()
            meta = (await js.stream_info(READINGS_STREAM)).config.metadata or {}
            partitions = int(meta.get("sensorguard_partitions", 0))
            prefix = meta.get("sensorguard_prefix")
            if not partitions or prefix != self.settings.topic_prefix.strip("/"):
                raise ClusterError(f"the cluster's streams are for topic prefix {prefix!r}, not "
                                   f"{self.settings.topic_prefix!r}: run sensorguard cluster init")
            kv = await js.key_value(OWNERS_BUCKET)
            self.ownership = Ownership(kv, self.worker, partitions, self._gain, self._lose,
                                       lambda change: self.metrics.partition_changes.labels(change).inc())
            self.ready.set()
            log.info("cluster: worker %s joined (%d partitions)", self.worker, partitions)
            await run(self.ownership, self._stopping)
            self.ready.clear()
            await self.ownership.leave()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await nc.close()

    async def _gain(self, k: int) -> None:
        self._halt.discard(k)
        self._tasks[k] = asyncio.create_task(self._consume(k), name=f"partition-{k}")
        self.metrics.partitions_owned.set(len(self._tasks))
        self.metrics.partition_info.labels(self.worker, f"cluster/{k}").set(1)
        log.info("cluster: took partition %d", k)

    async def _lose(self, k: int) -> None:
        """Let the partition's fetch loop finish its batch (every reading taken is acknowledged), then end."""
        task = self._tasks.pop(k, None)
        self.metrics.partitions_owned.set(len(self._tasks))
        with contextlib.suppress(KeyError):
            self.metrics.partition_info.remove(self.worker, f"cluster/{k}")
        if task is None:
            return
        self._halt.add(k)
        try:
            await asyncio.wait_for(task, FETCH_WAIT_S + 10.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        log.info("cluster: gave up partition %d", k)

    async def _consume(self, k: int) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S, max_ack_pending=MAX_ACK_PENDING,
                                deliver_policy=DeliverPolicy.ALL, max_deliver=-1)
        sub = await self._js.pull_subscribe(f"{READINGS_ROOT}.{k}.>", durable=f"sg-p{k}", stream=READINGS_STREAM,
                                            config=config)
        prefix = self.settings.topic_prefix.strip("/")
        try:
            while k not in self._halt:
                try:
                    messages = await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
                except (TimeoutError, NatsTimeout):
                    continue
                for message in messages:
                    try:
                        topic = f"{prefix}/{asset_of(message.subject)[1]}/readings"
                    except ValueError:
                        topic = message.subject  # not ours: Ingest rejects and counts it
                    if not self.ingest.accept(topic, message.data):
                        return  # stopping: left unacknowledged, delivered again to the next owner
                    await message.ack()
        except Exception as exc:  # noqa: BLE001 - a fetch failing (leader change, reconnect): retried by a new task
            if k not in self._halt:
                log.warning("cluster: partition %d: %s; fetching again", k, exc or type(exc).__name__)
                await asyncio.sleep(1.0)
                self._tasks[k] = asyncio.create_task(self._consume(k), name=f"partition-{k}")
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()
