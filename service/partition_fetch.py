"""Cluster mode's fetch loop: one owned partition's readings pulled, taken and acknowledged.

:class:`~sensorguard.service.jetstream.ClusterSource` runs :func:`fetch_partition` for each
partition it owns, on its event loop, once the partition is taken over: lean pull requests
(:mod:`pull`) on the readings' :mod:`natswire` connection, each batch taken on the taking thread
(:mod:`taker`) and acknowledged in one write. Readings fetched but not taken (stopping, giving the
partition up) are given back with ``nak``, in stream order, so the next owner gets them at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from sensorguard.service.cluster import READINGS_STREAM
from sensorguard.service.consumers import ACK_WAIT_S
from sensorguard.service.natswire import Delivery, Wire, stream_seq
from sensorguard.service.ownership import Ownership
from sensorguard.service.pull import Puller
from sensorguard.service.taker import LeaseLapsed, Taker
from sensorguard.service.waits import pause

log = logging.getLogger("sensorguard.service.jetstream")  # (the cluster source's lines, as before the split)

FETCH_BATCH = 256  # messages per fetch
FETCH_WAIT_S = 0.5  # a fetch returns after this long with what it has (and lets a release through)


async def fetch_partition(wire: Wire, durable: str, ownership: Ownership | None, taker: Taker, k: int,
                          halt: asyncio.Event, abort: threading.Event) -> None:
    """Fetch, take and acknowledge partition ``k``'s readings (its consumer: ``durable``) until
    ``halt``. Given up, it takes what its last request still brings too, so the next owner finds
    nothing pending (and starts at once); readings the ingest refused (the daemon is stopping) go
    back in stream order."""
    puller = Puller(wire, READINGS_STREAM, durable, FETCH_BATCH, FETCH_WAIT_S,
                    lambda: ownership is not None and ownership.holds(k))
    puller.open()
    refused: list[Delivery] = []
    clean = False  # ended without a batch out: what came meanwhile can be taken or given back
    try:
        while not halt.is_set():
            if ownership is None or not ownership.holds(k):  # renewals failing: wait
                await pause(halt, 0.2)
                continue
            messages = await puller.fetch(FETCH_WAIT_S)
            if messages and not ownership.holds(k):  # the lease lapsed meanwhile: maybe another's now
                raise LeaseLapsed("its lease was not renewed in time; the readings fetched come again")
            taken = await take_and_ack(taker, wire, k, messages, abort)
            if taken < len(messages):
                refused = messages[taken:]
                break
        clean = True
    finally:
        rest = await puller.close()
        if clean:  # after an error or a cancel, all that is unacknowledged comes again after ACK_WAIT_S, in order
            if not refused and ownership is not None and ownership.holds(k):  # given up, not lost
                try:
                    taken = await take_and_ack(taker, wire, k, rest, abort)
                except LeaseLapsed as lapsed:  # (those taken acknowledged) the rest given back below, at
                    taken = lapsed.taken  # once: raised, they waited ACK_WAIT_S for the next owner
                rest = rest[taken:]
            back = sorted([*refused, *rest], key=stream_seq)  # in stream order: redelivered so
            try:
                if back:  # applied before the lease goes: the next owner gets them ahead of newer ones
                    await wire.nak_confirmed(back)
                else:  # the acknowledgements read, so the next owner seldom finds them pending
                    await wire.flush()
            except Exception as exc:  # noqa: BLE001 - what was not settled comes again after ACK_WAIT_S
                log.info("cluster: partition %d: readings given back or acknowledged unconfirmed (%s); "
                         "they come again after %.0f s", k, exc or type(exc).__name__, ACK_WAIT_S)


async def take_and_ack(taker: Taker, wire: Wire, k: int, messages: list[Delivery], abort: threading.Event) -> int:
    """Take ``messages`` on the taking thread (``Ingest.accept`` may wait for the scorer, and the
    event loop must keep renewing the leases meanwhile), then acknowledge those taken (one write);
    how many. ``abort`` stops the thread between messages (a cancel would not). A lease that lapsed
    within the batch: those taken are acknowledged and :class:`LeaseLapsed` goes on (the fetch loop
    ends on it, and the partition is served again once its lease is sure: ``_consume``)."""
    if not messages:
        return 0
    try:
        taken = await taker.take(k, messages, abort)
    except LeaseLapsed as lapsed:
        wire.ack(messages[:lapsed.taken])
        raise
    wire.ack(messages[:taken])
    return taken
