"""Edges of cluster mode's source (service/jetstream.py) that no test pinned, found by a mutation
audit: which assets a worker answers for while it takes a partition over, what a partition given up
does to its readings, windows and states, a partition that failed once being served again, and the
stop.

The tests in tests/test_cluster_serve.py run real nats-servers; these drive :class:`ClusterSource`
of an unstarted daemon (``make(..., cluster=...)``) with stand-ins for the ownership and the
readings' connection, in milliseconds (the stop's test connects to a closed loopback port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from sensorguard.service import jetstream, owned_partitions
from sensorguard.service.cluster import partition_of
from sensorguard.service.jetstream import ClusterSource
from sensorguard.service.natswire import WireError
from sensorguard.service.waits import unless
from tests.test_daemon import make

PARTITIONS = 8
T0 = 1_767_225_600.0
ASSET = "line-1/pump-1"
K = partition_of(ASSET, PARTITIONS)


def owning(held: set[int]) -> SimpleNamespace:
    """An :class:`Ownership` stand-in holding the leases of ``held`` (a set the test may change)."""
    return SimpleNamespace(partitions=PARTITIONS, holds=lambda k: k in held, owned=held, members=["w"])


def source_of(bundle: Any, held: set[int] | None = None) -> ClusterSource:
    daemon, _ = make(bundle, cluster=("nats://127.0.0.1:1",))
    source = daemon.source
    source.ownership = owning({K} if held is None else held)
    return source


def readings(source: ClusterSource, asset: str, rows: int) -> None:
    """``rows`` readings of ``asset``, one a second, into the source's ingest (as the taking thread does)."""
    for n in range(rows):
        doc = {"ts": T0 + n, "values": {"a": 0.0, "b": 1.0, "c": 2.0}}
        assert source.ingest.accept(f"sensors/{asset}/readings", json.dumps(doc).encode())


async def parked() -> None:
    await asyncio.Event().wait()


async def lose(source: ClusterSource, k: int, handing_over: bool) -> None:
    """``_lose`` on the loop while the scoring thread's ``step`` runs between its batches."""
    losing = asyncio.create_task(source._lose(k, handing_over))
    while not losing.done():
        await asyncio.sleep(0.005)
        source.step()
    await losing


def test_an_asset_being_taken_over_is_not_served_yet_and_its_commands_wait(tiny_bundle) -> None:
    """While its partition is rebuilt (state and controls not adopted yet) an asset's commands are
    answered "try again" (``taking_over``), not applied here: a maintenance applied before the
    previous owner's controls were adopted was overwritten by them. Once rebuilt, it is served."""
    source = source_of(tiny_bundle)
    source._tasks[K] = (None, None, None)  # its fetch loop started, rebuilding
    assert not source.serves(ASSET) and source.taking_over(ASSET)
    source._ready.add(K)  # rebuilt
    assert source.serves(ASSET) and not source.taking_over(ASSET)
    other = next(f"line-1/pump-{i}" for i in range(100) if partition_of(f"line-1/pump-{i}", PARTITIONS) != K)
    assert not source.serves(other) and not source.taking_over(other)  # another worker's


def test_a_partition_given_up_and_taken_again_is_not_served_before_its_new_rebuild(tiny_bundle) -> None:
    """A partition lost, then won back: until it is rebuilt again its commands must wait, as at its
    first takeover (the controls another owner set meanwhile are adopted by the rebuild)."""
    source = source_of(tiny_bundle)
    source._tasks[K] = (None, None, None)
    source._ready.add(K)
    asyncio.run(source._lose(K, handing_over=False))
    source._tasks[K] = (None, None, None)  # won back: rebuilding
    assert not source.serves(ASSET) and source.taking_over(ASSET)


def test_a_hand_over_and_a_loss_are_told_apart_in_the_log(tiny_bundle, caplog) -> None:
    """A cluster walk read "gave up partition 3" at a clean stop, which sounds like a failure where
    the docs say the partitions are handed over; a lease lost is another line."""
    import logging

    with caplog.at_level(logging.INFO, logger="sensorguard.service.jetstream"):
        for handing_over in (True, False):
            source = source_of(tiny_bundle)
            source._tasks[K] = (None, None, None)
            asyncio.run(source._lose(K, handing_over))
    assert f"cluster: handed partition {K} over (0 assets)" in caplog.text
    assert f"cluster: stopped serving partition {K} (another worker serves it now)" in caplog.text
    assert "gave up" not in caplog.text


def test_a_partition_lost_stops_its_batch_at_once_and_one_handed_over_finishes_it(tiny_bundle) -> None:
    """Lost (another worker took it), the batch being taken stops at once: the rest of it is the new
    owner's, taken here too it was counted twice. Handed over cleanly, the batch is finished and
    acknowledged first: stopped, its readings came again to the next owner for nothing."""

    async def main(handing_over: bool) -> bool:
        source = source_of(tiny_bundle)
        halt, abort = asyncio.Event(), threading.Event()

        async def fetching() -> None:
            await halt.wait()

        source._tasks[K] = (asyncio.create_task(fetching()), halt, abort)
        await source._lose(K, handing_over)
        return abort.is_set()

    assert asyncio.run(main(handing_over=False)) is True
    assert asyncio.run(main(handing_over=True)) is False


def test_a_clean_hand_over_scores_the_queued_windows_first_and_a_lost_partition_drops_them(
        tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handing a partition over, its assets' queued windows are still this worker's to score (the next
    owner starts after them); lost, they are dropped (the new owner scores them: scored here too, the
    same alerts were announced twice)."""

    def dropped_when(handing_over: bool) -> list[set[str]]:
        source = source_of(tiny_bundle)
        dropped: list[set[str]] = []
        monkeypatch.setattr(source.ingest, "drop", lambda assets: dropped.append(set(assets)) or 0)
        source.taker.assets[K] = {ASSET}
        asyncio.run(lose(source, K, handing_over))
        return dropped

    assert dropped_when(handing_over=True) == []
    assert dropped_when(handing_over=False) == [{ASSET}]


def test_a_hand_over_waits_until_its_assets_last_windows_are_scored(tiny_bundle) -> None:
    """The scoring thread hands an asset over only once none of its windows waits: released with a
    window queued, the window was never scored anywhere (the next owner starts after it)."""
    source = source_of(tiny_bundle)
    readings(source, ASSET, 16)  # one whole window (16 rows) queued, not scored
    assert source.ingest.buffers.pending_of({ASSET})

    async def main() -> bool:
        source.taker.assets[K] = {ASSET}
        losing = asyncio.create_task(source._lose(K, handing_over=True))
        while not source._handovers:
            await asyncio.sleep(0.005)
        source.step()  # the window still waits: not handed over
        handed = source._handovers[0][1].done()
        losing.cancel()
        return handed

    assert asyncio.run(main()) is False
    assert source.ingest.buffers.pending_of({ASSET})


def test_states_of_assets_being_handed_over_are_not_queued_by_the_scorer(tiny_bundle,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a hand-over began, the hand-over writes an asset's newest state: a state the scorer queued
    meanwhile, written after it by the next flush, put an older state over the one the next owner
    reads."""
    source = source_of(tiny_bundle)
    monkeypatch.setattr(source.alerts, "changed_states", lambda full, marks: {ASSET: None, "line-2/pump-9": None})
    loop = asyncio.new_event_loop()
    try:
        source._loop = loop
        source.sync.leaving.add(ASSET)
        source.step()
        loop.run_until_complete(asyncio.sleep(0))  # the queued call runs
    finally:
        loop.close()
    assert source.sync.outbox == {"line-2/pump-9": None}


def test_every_assets_state_is_written_at_the_first_step_and_every_state_full_s(
        tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full write (every asset's state, its drift baseline included) comes at the first step and
    every ``STATE_FULL_S``, between them only what changed: never full, a worker killed lost every
    drift baseline learned since the asset's last alert."""
    source = source_of(tiny_bundle)
    fulls: list[bool] = []
    monkeypatch.setattr(source.alerts, "changed_states", lambda full, marks: fulls.append(full) or {})
    source.step()
    source.step()
    source._next_full -= jetstream.STATE_FULL_S
    source.step()
    assert fulls == [True, False, True]


def test_a_partition_whose_takeover_failed_once_is_served_after_the_wait(tiny_bundle,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader election or a lost connection during a takeover is logged and the partition served
    again after the wait: given up, its readings piled up in the stream with nobody fetching them,
    though the worker held its lease and said ready."""
    monkeypatch.setattr(owned_partitions, "ACK_WAIT_S", 0.0)
    source = source_of(tiny_bundle)
    tries, served = [], []

    async def rebuild(k: int, halt: asyncio.Event) -> tuple[int, int]:
        tries.append(k)
        if len(tries) == 1:
            raise ConnectionError("the stream's leader changed")
        return 0, 0

    async def serve(k: int, halt: asyncio.Event, abort: threading.Event) -> None:
        served.append(k)

    monkeypatch.setattr(source, "_rebuild", rebuild)
    monkeypatch.setattr(source, "_serve", serve)
    asyncio.run(source._consume(K, asyncio.Event(), threading.Event()))
    assert tries == [K, K] and served == [K] and K in source._ready


def test_a_command_whose_controls_could_not_be_written_is_not_said_saved(tiny_bundle,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A command is answered "accepted" only once its change is in the state bucket: a write that
    failed (or timed out) must say so, or a hold answered as kept was lost with the worker."""
    source = source_of(tiny_bundle)

    async def failing(asset: str, changed: float) -> bool:
        raise TimeoutError

    monkeypatch.setattr(source.sync, "write_controls_now", failing)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        source._loop = loop
        assert source.save_controls(ASSET, 0.0) is False
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def test_a_readings_connection_that_cannot_be_made_says_not_ready(tiny_bundle,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No readings can come while the readings' connection cannot be made: ``/readyz`` must say so
    (the worker said ready with every partition unfetched)."""
    source = source_of(tiny_bundle)

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise WireError("connection refused")

    monkeypatch.setattr(jetstream, "connect_wire", refused)
    source._nc = SimpleNamespace(connected_url=None, is_connected=True)
    source.ready.set()
    with pytest.raises(WireError):
        asyncio.run(source._connected_wire())
    assert not source.ready.is_set()


def test_a_stop_while_the_cluster_is_unreachable_ends_at_once(tiny_bundle) -> None:
    """nats-py tries to connect for ever: a stop (SIGTERM) must end the attempt, not wait out the
    stop's timeout (systemd's stop timeout, then a kill and no final states)."""
    source = source_of(tiny_bundle)
    source.start()
    try:
        for _ in range(1000):  # the loop is up and trying to connect
            if source._stopping is not None:
                break
            threading.Event().wait(0.005)
        source.stop(timeout=5)
        assert not source._thread.is_alive()
    finally:
        source.stop(timeout=5)


def test_a_stop_ends_a_wait_whose_work_swallowed_the_first_cancel() -> None:
    """nats-py's connect, cancelled while it closes a failed try, swallows the cancel and goes on trying
    for ever: a stop in the first tenth of a second of a worker whose cluster is unreachable waited out
    the source's join timeout (30 s). The wait cancels its work again until it ends."""

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # the cancel lands here, and is swallowed
        await asyncio.Event().wait()  # it goes on trying

    async def main() -> bool:
        stopping = asyncio.Event()
        asyncio.get_running_loop().call_soon(stopping.set)
        waiting = asyncio.ensure_future(unless(stopping, stubborn()))
        done, _ = await asyncio.wait({waiting}, timeout=5)  # (not wait_for: its cancel would end the work)
        waiting.cancel()
        return bool(done) and waiting.result() is None

    assert asyncio.run(main())


def test_a_wait_cancelled_itself_cancels_its_work() -> None:
    """A review: ``unless`` cancelled by its caller left its work running: a connect that tries for
    ever outlived the task that wanted it."""

    async def main() -> bool:
        started, ended = asyncio.Event(), asyncio.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                ended.set()

        waiting = asyncio.ensure_future(unless(asyncio.Event(), forever()))
        await started.wait()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)  # the work's cancel lands
        return ended.is_set()

    assert asyncio.run(main())


def test_a_missing_stream_or_bucket_is_told_apart_from_other_join_errors() -> None:
    """``cluster init`` not run is said with its fix; any other error is not."""
    from nats.js.errors import NotFoundError

    assert jetstream._not_found(NotFoundError())
    assert not jetstream._not_found(ConnectionError("refused"))


def test_a_hand_over_the_scorer_did_not_finish_in_time_writes_the_newest_queued_state_and_no_later_one(
        tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scorer busy past ``RELEASE_WAIT_S``: the hand-over writes the newest state queued for the
    asset, takes it out of the queue (else a flush could write it again after the next owner's) and
    keeps the asset ``leaving`` until the scorer lets it go, so no state of its is passed on from here
    meanwhile; once the scorer handed it over, it is no longer leaving."""
    monkeypatch.setattr(owned_partitions, "RELEASE_WAIT_S", 0.05)
    source = source_of(tiny_bundle)
    written: list[dict] = []

    async def hand_over(states: dict) -> int:
        written.append(dict(states))
        return 0

    monkeypatch.setattr(source.sync, "hand_over", hand_over)

    async def main() -> None:
        source._loop = asyncio.get_running_loop()
        source.taker.assets[K] = {ASSET}
        source.sync.outbox[ASSET] = b'{"newest":1}'
        await source._lose(K, handing_over=True)  # no step: the scorer is busy
        assert written == [{ASSET: b'{"newest":1}'}] and ASSET not in source.sync.outbox
        assert ASSET in source.sync.leaving
        source.step()  # the scorer comes round: the assets go
        await asyncio.sleep(0)
        assert ASSET not in source.sync.leaving and not source._handovers

    asyncio.run(main())


def test_a_hand_over_that_fails_half_way_lets_its_assets_go_all_the_same(
        tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-over whose writes raised (a bug) left its assets ``leaving`` for good: nothing else lets
    them go, so when the partition came back to this worker, the scorer never passed their states on
    again and the next owner adopted stale ones, with nothing said (an audit). They go whatever ends it."""
    source = source_of(tiny_bundle)

    async def hand_over(states: dict) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(source.sync, "hand_over", hand_over)

    async def main() -> None:
        source._loop = asyncio.get_running_loop()
        source.taker.assets[K] = {ASSET}
        with pytest.raises(RuntimeError, match="a bug"):
            await lose(source, K, handing_over=True)
        assert ASSET not in source.sync.leaving and not source._handovers

    asyncio.run(main())
