"""Edges of the state bucket's writer that no test pinned (found by mutating service/statesync.py):
what a flush writes, keeps for the next one, or drops."""

from __future__ import annotations

import asyncio
import json
import time

from sensorguard.service import cluster
from sensorguard.service.command_messages import Command
from sensorguard.service.commands import AlarmControls
from sensorguard.service.statesync import StateSync
from tests.test_cluster import FlakyBucket


def shelved(*assets: str) -> AlarmControls:
    controls = AlarmControls()
    for asset in assets:
        controls.apply(Command("shelve", asset, until=time.time() + 600), time.time())
    return controls


def test_a_flush_before_the_bucket_is_open_writes_nothing_and_keeps_the_queue():
    """The writer's loop may flush before :meth:`StateSync.open` (not connected yet): nothing is
    written and nothing queued is lost."""
    sync = StateSync(shelved("p1"), lambda asset: True)
    sync.queue({"p1": b'{"alert":{}}'})
    sync.mark("p1")
    asyncio.run(sync.flush())
    assert sync.outbox == {"p1": b'{"alert":{}}'} and sync.controls_dirty == {"p1"}


def test_a_flush_writes_the_controls_of_served_assets_and_keeps_a_failed_or_coming_ones_for_the_next():
    """Changed controls are written for the assets served here; a failed write is tried again at
    the next flush; an asset being taken over here waits until it is served; one another worker
    serves now is not written at all (its key is the new owner's)."""
    controls = shelved("p1", "p2", "p3")
    served, coming = {"p1"}, {"p2"}
    sync = StateSync(controls, lambda asset: asset in served, coming=lambda asset: asset in coming)
    bucket = FlakyBucket(fails=1)
    sync.open(bucket)
    for asset in ("p1", "p2", "p3"):
        sync.mark(asset)
    asyncio.run(sync.flush())  # p1's write fails
    assert bucket.kept == {} and sync.controls_dirty == {"p1", "p2"}
    asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.controls_key("p1")} and sync.controls_dirty == {"p2"}
    assert json.loads(bucket.kept[cluster.controls_key("p1")])["controls"][0]["kind"] == "shelved"
    served.add("p2"), coming.clear()
    asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.controls_key("p1"), cluster.controls_key("p2")} and not sync.controls_dirty


def test_a_failed_state_write_keeps_a_newer_state_queued_meanwhile_and_drops_a_leaving_assets():
    """A state queued while the flush was writing is the newer one: the failed write's older state
    must not replace it. A leaving asset's failed write is not kept: its hand-over writes the newest."""

    class QueueingBucket(FlakyBucket):  # the scorer queues a newer state while the write is under way
        async def put(self, key: str, value: bytes) -> None:
            if key == cluster.state_key("p1") and value == b"old":
                sync.queue({"p1": b"new"})
            await super().put(key, value)

    sync = StateSync(None, lambda asset: True)
    sync.open(QueueingBucket(fails=2))
    sync.queue({"p1": b"old", "p2": b"mine"})
    sync.leaving.add("p2")
    asyncio.run(sync.flush())
    assert sync.outbox == {"p1": b"new"}


def test_a_state_that_ended_deletes_its_key():
    """A state queued as None (its asset silent with nothing learned) deletes the asset's key: a
    next owner finds no state, not an empty value it cannot read."""
    sync = StateSync(None, lambda asset: True)
    bucket = FlakyBucket(fails=0)
    bucket.kept[cluster.state_key("p1")] = b'{"alert":{}}'
    sync.open(bucket)
    sync.queue({"p1": None, "p2": b'{"alert":{}}'})
    asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.state_key("p2")} and sync.outbox == {}


def test_a_hand_over_before_the_bucket_is_open_says_none_of_its_states_were_written():
    """Never connected, nothing can be written: the hand-over says so (the caller keeps the lease
    logic honest), it does not report every state handed over."""
    sync = StateSync(None, lambda asset: True)
    assert asyncio.run(sync.hand_over({"p1": b'{"alert":{}}', "p2": None})) == 2


def test_controls_handed_over_are_not_written_again_from_here():
    """A hand-over takes its assets' pending changes out of the queue: flushed after it, the
    forgotten controls deleted the next owner's key (the lease lost: nothing is written from here)."""
    sync = StateSync(shelved("p1", "p2"), lambda asset: True)
    sync.open(FlakyBucket(fails=0))
    sync.mark("p1"), sync.mark("p2")
    asyncio.run(sync.hand_over_controls(lambda asset: asset == "p1", write=False))
    assert sync.controls_dirty == {"p2"} and sync.controls.assets() == {"p2"}


def test_controls_a_hand_over_could_not_write_are_not_said_saved(monkeypatch):
    """A command's change handed over is "saved" only where the hand-over wrote it: one whose
    writes failed to the end is not (the next owner has no hold)."""
    from sensorguard.service import statesync

    monkeypatch.setattr(statesync, "HANDOVER_WRITE_S", 0.05)
    monkeypatch.setattr(statesync, "RETRY_S", 0.01)
    served = {"p1", "p2"}
    sync = StateSync(shelved("p1", "p2"), lambda asset: asset in served)

    class Failing(FlakyBucket):  # p1's key cannot be written
        async def put(self, key: str, value: bytes) -> None:
            if key == cluster.controls_key("p1"):
                raise TimeoutError("no leader")
            await super().put(key, value)

    sync.open(Failing(fails=0))
    changed = time.monotonic()
    served.clear()
    asyncio.run(sync.hand_over_controls(lambda asset: True, write=True))
    assert asyncio.run(sync.write_controls_now("p2", changed)) is True
    assert asyncio.run(sync.write_controls_now("p1", changed)) is False


def test_the_newest_hand_overs_are_the_ones_remembered(monkeypatch):
    """``HANDED_KEPT`` hand-overs are remembered, the newest: an asset handed over again moves to
    the end, so the oldest other one goes first."""
    from sensorguard.service import statesync

    monkeypatch.setattr(statesync, "HANDED_KEPT", 2)
    controls = shelved("a", "b", "c")
    sync = StateSync(controls, lambda asset: False)
    sync.open(FlakyBucket(fails=0))
    changed = time.monotonic()
    for asset in ("a", "b", "a", "c"):
        if asset not in controls.assets():  # (forgotten once handed over: held here again)
            controls.apply(Command("shelve", asset, until=time.time() + 600), time.time())
        asyncio.run(sync.hand_over_controls(lambda x, asset=asset: x == asset, write=True))
    saved = {asset: asyncio.run(sync.write_controls_now(asset, changed)) for asset in ("a", "b", "c")}
    assert saved == {"a": True, "b": False, "c": True}


def test_controls_without_holds_delete_their_key_and_a_writer_without_controls_keeps_nothing_queued():
    """An asset whose holds all ended has its controls key deleted (a next owner finds none, not
    ``null``); a writer without controls (only states) has none to write and keeps no mark."""
    controls = shelved("p1")
    sync = StateSync(controls, lambda asset: True)
    bucket = FlakyBucket(fails=0)
    sync.open(bucket)
    sync.mark("p1")
    asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.controls_key("p1")}
    controls.forget({"p1"})  # (as when its holds ended)
    sync.mark("p1")
    asyncio.run(sync.flush())
    assert bucket.kept == {}
    states_only = StateSync(None, lambda asset: True)
    states_only.open(FlakyBucket(fails=0))
    states_only.mark("p1")
    asyncio.run(states_only.flush())
    assert states_only.controls_dirty == set()


def test_a_finished_hand_over_leaves_no_wait_behind_for_its_assets():
    """A command's write waits for a hand-over of its asset under way; once the hand-over ended, its
    entry goes: kept, every asset ever handed over stayed in memory for the worker's life (the
    remembered hand-overs are capped at ``HANDED_KEPT``, these were not)."""
    sync = StateSync(shelved("p1", "p2"), lambda asset: False)
    sync.open(FlakyBucket(fails=0))
    asyncio.run(sync.hand_over_controls(lambda asset: True, write=True))
    assert sync._handing == {}


def clocked_sync(monkeypatch) -> tuple[StateSync, FlakyBucket, list[float]]:
    """A writer on a bucket whose first write fails, and the monotonic clock it reads (``[now]``, set
    by the test)."""
    from sensorguard.service import statesync

    clock = [1000.0]
    monkeypatch.setattr(statesync.time, "monotonic", lambda: clock[0])
    sync, bucket = StateSync(shelved("p1"), lambda asset: True), FlakyBucket(fails=1)
    sync.open(bucket)
    return sync, bucket, clock


def test_a_bucket_that_keeps_refusing_writes_is_warned_of_and_a_leader_election_is_not(monkeypatch, caplog):
    """Failed writes were logged at debug only: a state bucket out of space or quorum for hours left
    the states of the assets moved since unwritten, and their next owner took older ones, with
    nothing said. A refusal lasting REFUSING_SAID_S is warned once a minute; a short one is not."""
    import logging

    sync, bucket, clock = clocked_sync(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.statesync"):
        sync.queue({"p1": b'{"alert":{}}'})
        asyncio.run(sync.flush())  # a leader election: one refused, the next written
        clock[0] += 30.0
        asyncio.run(sync.flush())
        assert bucket.kept and "refused" not in caplog.text
        bucket.fails = 100
        for _ in range(4):  # refused for 15 s: said once
            sync.queue({"p1": b'{"alert":{}}'})
            asyncio.run(sync.flush())
            clock[0] += 5.0
    said = [r.getMessage() for r in caplog.records if "refused every write" in r.getMessage()]
    assert len(said) == 1 and "for 10 s (3 writes; the latest, the state of p1: no leader)" in said[0], said


def test_one_refusal_hours_after_an_earlier_one_is_no_long_refusal(monkeypatch, caplog):
    """A refused write not tried again (its asset handed on meanwhile, a hand-over's retries given
    up) left the refusal's start behind, as nothing was written after it; a lone refusal (a leader
    election) hours later was then warned of as "refused every write for 3600 s". Writes that
    stopped for longer than REFUSING_SAID_S end the spell: only refusals that go on are said."""
    import logging

    sync, bucket, clock = clocked_sync(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.statesync"):
        assert not asyncio.run(sync._write_state("p1", b'{"alert":{}}'))  # refused, never tried again
        clock[0] += 3600.0
        bucket.fails = 1
        assert not asyncio.run(sync._write_state("p2", b'{"alert":{}}'))  # a leader election, an hour on
        clock[0] += 0.5
        assert asyncio.run(sync._write_state("p2", b'{"alert":{}}'))
    assert "refused every write" not in caplog.text


def test_a_flush_that_raises_is_logged_and_the_writer_goes_on(monkeypatch, caplog):
    """The writer's loop had no guard: one flush that raised (a bug) ended the ``state-writer`` task,
    unsaid until the stop awaited it, and no state or control was written to the bucket from then on
    while the worker went on serving (a review). It is logged and the next flush writes."""
    import logging

    from sensorguard.service import statesync

    monkeypatch.setattr(statesync, "STATE_FLUSH_S", 0.01)
    sync, bucket = StateSync(None, lambda asset: True), FlakyBucket(fails=0)
    sync.open(bucket)
    flush, calls = sync.flush, []

    async def flaky_flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        await flush()

    sync.flush = flaky_flush

    async def serve() -> None:
        stopping = asyncio.Event()
        writer = asyncio.create_task(sync.run(stopping))
        sync.queue({"p1": b'{"alert":{}}'})
        for _ in range(200):
            await asyncio.sleep(0.01)
            if bucket.kept or writer.done():
                break
        stopping.set()
        await asyncio.wait_for(writer, 5)

    with caplog.at_level(logging.ERROR, logger="sensorguard.service.statesync"):
        asyncio.run(serve())
    assert cluster.state_key("p1") in bucket.kept
    assert "a bug" in caplog.text


def test_one_assets_error_in_a_flush_loses_none_of_the_batchs_other_changes(caplog):
    """A flush that raised for one asset (a bug: here its controls' export) lost every changed control
    and state it had taken out of its queues and not written yet: the other assets' holds reached the
    bucket only if changed again, and a next owner adopted them without (a review). The other assets
    are written; the failing one is logged and kept for the next flush."""
    import logging

    controls = shelved("p1", "p2", "p3")
    export = controls.export
    broken = {"p2"}

    def exporting(asset: str):
        if asset in broken:
            raise RuntimeError("a bug")
        return export(asset)

    controls.export = exporting
    sync, bucket = StateSync(controls, lambda asset: True), FlakyBucket(fails=0)
    sync.open(bucket)
    for asset in ("p1", "p2", "p3"):
        sync.mark(asset)
    sync.queue({"p1": b'{"alert":{}}', "p3": b'{"alert":{}}'})
    with caplog.at_level(logging.ERROR, logger="sensorguard.service.statesync"):
        asyncio.run(sync.flush())
    assert set(bucket.kept) == {cluster.controls_key("p1"), cluster.controls_key("p3"),
                                cluster.state_key("p1"), cluster.state_key("p3")}
    assert sync.controls_dirty == {"p2"} and "a bug" in caplog.text and "p2" in caplog.text
    broken.clear()
    asyncio.run(sync.flush())
    assert cluster.controls_key("p2") in bucket.kept and not sync.controls_dirty
