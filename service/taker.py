"""Cluster mode's taking thread: every owned partition's readings into the synchronous ingest.

``Ingest.accept`` may wait for the scorer (backpressure), and the event loop must keep renewing the
leases meanwhile, so batches are taken on a thread. One thread takes every partition's batches:
with one per partition (``asyncio.to_thread``), up to 8 threads took readings at once and queued
for the ingest's lock and the GIL, a quarter of a worker's samples in a profile (docs/benchmarks.md,
session 26). A batch may therefore wait for the thread behind other partitions' batches: one whose
lease is no longer sure when its turn comes is not taken (:class:`LeaseLapsed`; it comes again).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sensorguard.service.cluster import asset_of
from sensorguard.service.ingest import Ingest
from sensorguard.service.natswire import Delivery

MAX_TOPICS = 100_000  # subjects whose topic and asset are remembered (one per asset)


class LeaseLapsed(RuntimeError):
    """A partition's lease was not renewed in time while a batch was fetched or waited to be taken;
    ``taken``: how many of the batch's readings the ingest had taken by then (to acknowledge)."""

    def __init__(self, message: str, taken: int = 0) -> None:
        super().__init__(message)
        self.taken = taken


class Taker:
    """Take batches of readings into ``ingest`` on one thread (:meth:`take`); :meth:`close` at the end.

    ``holds(k)``: whether partition ``k``'s lease is surely still ours. ``assets``: partition -> the
    assets whose readings the ingest buffered (or primed) here, for the hand-over when it is given up.
    """

    def __init__(self, ingest: Ingest, topic_prefix: str, holds: Callable[[int], bool]) -> None:
        self.ingest = ingest
        self.prefix = topic_prefix.strip("/")
        self.holds = holds
        self.assets: dict[int, set[str]] = {}
        self._topics: dict[str, tuple[str, str | None]] = {}  # subject -> (topic, asset); this thread's
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sensorguard-take")

    async def take(self, k: int, messages: list[Delivery], abort: threading.Event) -> int:
        """:meth:`take_now` on the taking thread; how many were taken."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.take_now, k, messages, abort)

    def take_now(self, k: int, messages: list[Delivery], abort: threading.Event) -> int:
        """Hand ``messages`` to the ingest in order; how many were taken (fewer: it is stopping, or
        ``abort`` was set: the partition was given up while this waited for the scorer).
        :class:`LeaseLapsed` when the lease is no longer sure, before the batch or within it (its
        ``taken``): a short count alone ended the partition's fetch loop as a stop does, and a
        renewal landing late left the partition held and renewed, yet fetched by no one (a review)."""
        if not self.holds(k):  # maybe another worker's by now
            raise LeaseLapsed("its lease was not renewed while the batch waited; the readings come again")
        assets = self.assets.setdefault(k, set())
        topics = self._topics
        for n, message in enumerate(messages):
            if abort.is_set():
                return n
            if not self.holds(k):  # (per message: the scorer's backpressure can hold a batch past its
                # lease; the rest come again to whoever owns the partition then)
                raise LeaseLapsed("its lease was not renewed while the batch was taken; the rest come again", n)
            known = topics.get(message.subject)
            if known is None:
                known = topics[message.subject] = self._topic(message.subject)
                if len(topics) > MAX_TOPICS:  # a flood of made-up assets: start over, not grow
                    topics.clear()
            topic, asset = known
            if not self.ingest.accept(topic, message.data):
                return n
            if asset is not None and asset not in assets and self.ingest.holds(asset):
                self._remember(assets, asset)
        return len(messages)

    def _remember(self, assets: set[str], asset: str) -> None:
        """Add an asset the ingest buffers now. One it refused (beyond ``max_assets``, a bad reading)
        has nothing to hand over, and a flood of made-up ones grew the set without bound; assets it
        forgot (silent) are let go past ``MAX_TOPICS``."""
        if len(assets) >= MAX_TOPICS:
            assets.intersection_update([a for a in assets if self.ingest.holds(a)])
        assets.add(asset)

    def _topic(self, subject: str) -> tuple[str, str | None]:
        """The MQTT topic a readings subject stands for, and its asset (None: not a readings subject:
        the subject itself, which the ingest rejects and counts)."""
        try:
            asset = asset_of(subject)[1]
        except ValueError:
            return subject, None
        return f"{self.prefix}/{asset}/readings", asset

    def close(self) -> None:
        """Stop the thread; a batch still queued is not taken (unacknowledged: it comes again)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
