"""The lean pull consumer (service/pull.py) on a real nats-server: batches in order, a request kept
outstanding only while asking is allowed, and readings given back on close delivered again at once."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from sensorguard.service import cluster, natswire
from sensorguard.service.pull import Puller, PullError
from tests.nats import NatsCluster

try:
    import nats  # noqa: F401 - only its presence is checked
except ImportError:  # the test extra installs it: under CI=true its absence is a failure, not a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("nats-py is not installed (pip install 'sensorguard[cluster]')", allow_module_level=True)


def on_a_node(tmp_path, scenario) -> None:
    """Run the coroutine ``scenario(urls)`` against a one-node nats-server of its own, stopped after."""
    node = NatsCluster(tmp_path, 1).start()
    try:
        asyncio.run(scenario(node.urls))
    finally:
        node.stop()


def test_puller_batches_in_order_waits_when_told_and_gives_back_at_once(tmp_path):
    on_a_node(tmp_path, _scenario)


async def _scenario(servers) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    nc = await cluster.connect(servers)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"], retention=RetentionPolicy.WORK_QUEUE))
        await js.add_consumer("T", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
        for i in range(600):
            await js.publish(f"t.{i % 3}", str(i).encode())
        allowed = [True]
        wire = await natswire.connect(servers)
        puller = Puller(wire, "T", "c", batch=256, expires_s=0.5, may_ask=lambda: allowed[0])
        puller.open()

        got = await puller.fetch(2.0)
        assert 0 < len(got) <= 512 and [int(m.data) for m in got] == list(range(len(got)))  # in stream order
        wire.ack(got)
        taken = len(got)
        while taken < 600:  # the rest, batch after batch, nothing skipped or repeated
            batch = await puller.fetch(2.0)
            assert batch, f"nothing fetched after {taken}"
            assert [int(m.data) for m in batch] == list(range(taken, taken + len(batch)))
            wire.ack(batch)
            taken += len(batch)

        allowed[0] = False  # the lease is not surely ours: no request goes out, nothing comes
        await asyncio.sleep(0.7)  # the request still outstanding expires
        for i in range(600, 700):
            await js.publish("t.0", str(i).encode())
        assert await puller.fetch(0.5) == []
        allowed[0] = True
        batch = await puller.fetch(2.0)
        assert batch and int(batch[0].data) >= 600
        first = int(batch[0].data)
        left = await puller.close()  # stop: what came meanwhile is handed back, with the batch not taken
        await wire.nak_confirmed([*batch, *left])  # JetStream answers the last once applied (else: timeout)
        again = Puller(wire, "T", "c", batch=256, expires_s=0.5, may_ask=lambda: True)
        again.open()
        started = time.monotonic()
        redelivered = await again.fetch(2.0)
        assert redelivered and int(redelivered[0].data) == first  # at once, not after ack_wait (30 s)
        assert time.monotonic() - started < 5
        await again.close()
        wire.close()
    finally:
        await nc.close()


def test_puller_gives_up_when_its_consumer_is_gone(tmp_path):
    """A deleted consumer answers every request with an error status: after a few seconds of that
    the puller raises, so the partition is set up again instead of stalling without a word."""
    on_a_node(tmp_path, _gone)


async def _gone(servers) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    nc = await cluster.connect(servers)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"], retention=RetentionPolicy.WORK_QUEUE))
        await js.add_consumer("T", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
        wire = await natswire.connect(servers)
        puller = Puller(wire, "T", "c", batch=16, expires_s=0.5, may_ask=lambda: True)
        puller.open()
        await js.publish("t.0", b"1")
        assert [m.data for m in await puller.fetch(2.0)] == [b"1"]
        await js.delete_consumer("T", "c")
        started = time.monotonic()
        with pytest.raises(PullError, match="refused in a row"):
            while time.monotonic() - started < 60:
                assert await puller.fetch(0.5) == []
        await puller.close()
        wire.close()
    finally:
        await nc.close()


def test_a_lease_lapsing_within_a_batch_ends_the_fetch_loop_as_an_error_so_the_partition_is_served_again(tmp_path):
    """A renewal landing late (the lease not sure for a moment, ``SURE_S``) while a batch was being
    taken returned a short count, which the fetch loop read as the ingest stopping: it gave the rest
    back and ended without an error, so ``_consume`` never served the partition again while the
    worker went on holding and renewing its lease (a review). Now it raises ``LeaseLapsed``, the
    readings taken before it acknowledged, and the rest come again."""
    on_a_node(tmp_path, _lapsing)


async def _lapsing(servers) -> None:
    import threading
    from types import SimpleNamespace

    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    from sensorguard.service.partition_fetch import fetch_partition
    from sensorguard.service.taker import LeaseLapsed, Taker

    nc = await cluster.connect(servers)
    taken: list[int] = []
    held = [True]

    def accept(topic: str, data: bytes) -> bool:
        taken.append(int(data))
        if len(taken) == 5:
            held[0] = False  # the lease not sure any more, mid-batch
        return True

    taker = Taker(SimpleNamespace(accept=accept, holds=lambda asset: False), "sensors", lambda k: held[0])
    ownership = SimpleNamespace(holds=lambda k: held[0])
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=cluster.READINGS_STREAM, subjects=["t.>"],
                                         retention=RetentionPolicy.WORK_QUEUE))
        await js.add_consumer(cluster.READINGS_STREAM, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT,
                                                                      ack_wait=1))
        for i in range(20):
            await js.publish("t.0", str(i).encode())
        wire = await natswire.connect(servers)
        halt = asyncio.Event()
        with pytest.raises(LeaseLapsed):
            await asyncio.wait_for(fetch_partition(wire, "c", ownership, taker, 0, halt, threading.Event()), 20)
        assert taken == [0, 1, 2, 3, 4]
        held[0] = True  # sure again (the late renewal landed): served again after ack_wait, as _consume
        await asyncio.sleep(1.5)  # waits ACK_WAIT_S, so the readings in flight come again ahead of newer ones

        async def until_all() -> None:
            while len(taken) < 20:
                await asyncio.sleep(0.05)
            halt.set()

        await asyncio.wait_for(asyncio.gather(fetch_partition(wire, "c", ownership, taker, 0, halt,
                                                              threading.Event()), until_all()), 20)
        assert taken[:5] == [0, 1, 2, 3, 4] and sorted(taken) == list(range(20)), str(taken)  # the first five
        # acknowledged (not again), the rest taken once each
        wire.close()
    finally:
        taker.close()
        await nc.close()


def test_a_lease_lapsing_within_the_given_up_partitions_last_batch_gives_the_rest_back_at_once(monkeypatch):
    """Given up, the fetch loop takes what its last pull request still brings. A lease that lapsed
    within that batch returned a short count, the rest given back (``nak``) at once; raising
    ``LeaseLapsed`` there skipped the ``nak``, and the next owner waited ``ACK_WAIT_S`` for them.
    Those taken are acknowledged and the rest given back, in stream order."""
    import threading
    from types import SimpleNamespace

    from sensorguard.service import partition_fetch
    from sensorguard.service.natswire import Delivery
    from sensorguard.service.taker import Taker

    last = [Delivery("readings.0.p", f"$JS.ACK.R.c.1.{seq}.1.0.0".encode(), str(seq).encode(), None)
            for seq in range(1, 7)]

    class Puller:
        def __init__(self, *args) -> None:
            pass

        def open(self) -> None:
            pass

        async def fetch(self, wait: float) -> list:
            return []

        async def close(self) -> list:
            return list(last)

    wire = SimpleNamespace(acked=[], naked=[])
    wire.ack = lambda messages: wire.acked.extend(messages)

    async def nak_confirmed(messages) -> None:
        wire.naked.extend(messages)

    async def flush() -> None:
        pass

    wire.nak_confirmed, wire.flush = nak_confirmed, flush
    monkeypatch.setattr(partition_fetch, "Puller", Puller)
    held, taken = [True], []

    def accept(topic: str, data: bytes) -> bool:
        taken.append(int(data))
        held[0] = len(taken) < 2  # the lease not sure any more after the second
        return True

    taker = Taker(SimpleNamespace(accept=accept, holds=lambda asset: False), "sensors", lambda k: held[0])
    halt = asyncio.Event()
    halt.set()  # given up
    try:
        asyncio.run(partition_fetch.fetch_partition(wire, "c", SimpleNamespace(holds=lambda k: held[0]), taker, 0,
                                                    halt, threading.Event()))
    finally:
        taker.close()
    assert taken == [1, 2] and wire.acked == last[:2] and wire.naked == last[2:]
