"""Cluster mode's per-partition consumers: the durable pull consumer ``sg-p<k>`` on the readings stream.

One consumer per partition, not per worker: whichever worker owns partition ``k`` uses the same
durable, so a new owner resumes from the acknowledged position and a reading in flight when its
owner died is delivered again (after ``ACK_WAIT_S``) to the next one. Kept apart from
:mod:`jetstream` and :mod:`partition_fetch` (the fetch loops) so the consumer's settings are read in
one place.
"""

from __future__ import annotations

from typing import Any

from sensorguard.service.cluster import READINGS_ROOT, READINGS_STREAM

ACK_WAIT_S = 5.0  # an unacknowledged reading is delivered again after this long (to whoever owns it then)
MAX_ACK_PENDING = 20_000  # readings out and unacknowledged per partition at most (the broker's inflight)


def durable_name(k: int) -> str:
    """Partition ``k``'s consumer: the same name on every worker, so ownership moves, not position."""
    return f"sg-p{k}"


async def ensure_consumer(js: Any, k: int) -> str:
    """Partition ``k``'s consumer, made if missing (explicit acknowledgement, every reading from the
    start, redelivered without limit: a reading is deleted only once acknowledged); its name."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    durable = durable_name(k)
    try:
        await js.consumer_info(READINGS_STREAM, durable)
    except NotFoundError:
        await js.add_consumer(READINGS_STREAM, ConsumerConfig(
            durable_name=durable, filter_subject=f"{READINGS_ROOT}.{k}.>", ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S, max_ack_pending=MAX_ACK_PENDING, deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1))
    return durable


async def unacknowledged(js: Any, k: int) -> int:
    """How many of partition ``k``'s readings are out and not acknowledged (0 when it has no consumer
    yet): a previous owner that died with readings in flight leaves some."""
    from nats.js.errors import NotFoundError

    try:
        return (await js.consumer_info(READINGS_STREAM, durable_name(k))).num_ack_pending
    except NotFoundError:
        return 0
