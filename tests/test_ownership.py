"""Partition ownership in cluster mode (service/ownership.py): the assignment, and leases in a real
nats-server's key-value bucket: workers split the partitions, take a dead worker's over and give a
joining worker its share, never two live owners of one partition."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import pytest

from sensorguard.service import cluster
from sensorguard.service.assignment import assign
from sensorguard.service.cluster import Layout
from sensorguard.service.ownership import LISTING_IDLE_S, Ownership
from tests.nats import NatsCluster

try:
    import nats  # noqa: F401 - only its presence is checked
except ImportError:  # the test extra installs it: under CI=true its absence is a failure, not a skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("nats-py is not installed (pip install 'sensorguard[cluster]')", allow_module_level=True)


@pytest.mark.parametrize("partitions", [1, 7, 16, 64])
def test_assignment_is_exact_stable_and_moves_little(partitions):
    members = [f"worker-{i}" for i in range(5)]
    for n in range(1, 6):
        got = assign(partitions, members[:n])
        loads = [list(got.values()).count(m) for m in members[:n]]
        assert sorted(got) == list(range(partitions)) and max(loads) - min(loads) <= 1, (n, loads)
        assert assign(partitions, reversed(members[:n])) == got  # the order workers list members in is irrelevant
    before, after = assign(64, members[:3]), assign(64, members[:4])
    moved = [k for k in range(64) if before[k] != after[k]]
    gained = [k for k in moved if after[k] == members[3]]
    assert len(gained) == 16 and len(moved) <= 24, (len(gained), len(moved))  # mostly what the new worker takes


class Worker:
    """An :class:`Ownership` with callbacks that record who consumes what, and check no overlap."""

    consuming: dict[int, str] = {}

    def __init__(self, kv, name: str, partitions: int) -> None:
        self.name = name
        self.alive = True
        self.ownership = Ownership(kv, name, partitions, self.gain, self.lose)

    async def gain(self, k: int) -> None:
        holder = Worker.consuming.get(k)
        assert holder is None, f"{self.name} took partition {k} while {holder} still consumed it"
        Worker.consuming[k] = self.name

    async def lose(self, k: int, handing_over: bool = False) -> None:
        if Worker.consuming.get(k) == self.name:
            del Worker.consuming[k]


async def ticking(workers: list[Worker], seconds: float, until=lambda: False) -> float:
    """Tick ``workers`` (as their loops would) for ``seconds`` or until ``until()``; the time taken."""
    started = time.monotonic()
    while time.monotonic() < started + seconds and not until():
        for worker in workers:
            if worker.alive:
                await worker.ownership.tick()
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def shares(*workers: Worker) -> list[int]:
    return [len(w.ownership.owned) for w in workers]


def test_leases_split_take_over_and_rebalance_on_a_real_server(tmp_path):
    node = NatsCluster(tmp_path, 1).start()
    try:
        cluster.run_init(Layout(partitions=8, servers=node.urls))
        asyncio.run(_scenario(node.urls))
    finally:
        node.stop()


async def _scenario(servers) -> None:
    nc = await cluster.connect(servers)
    try:
        kv = await nc.jetstream().key_value(cluster.OWNERS_BUCKET)
        Worker.consuming = {}
        a, b = Worker(kv, "a", 8), Worker(kv, "b", 8)
        await ticking([a, b], 15.0, lambda: shares(a, b) == [4, 4])
        assert set(a.ownership.owned) | set(b.ownership.owned) == set(range(8))
        assert len(a.ownership.owned) == len(b.ownership.owned) == 4

        a.alive = False  # a dies: no release, its leases and membership run out
        for k in list(a.ownership.owned):
            await a.lose(k)
        took = await ticking([b], 20.0, lambda: shares(b) == [8])
        assert set(b.ownership.owned) == set(range(8)), b.ownership.owned
        assert took < 3 * cluster.LEASE_S  # within a few lease periods

        c = Worker(kv, "c", 8)  # a worker joins: b hands it its share, c claims what b released
        await ticking([b, c], 15.0, lambda: shares(b, c) == [4, 4])
        assert len(b.ownership.owned) == len(c.ownership.owned) == 4
        assert set(b.ownership.owned).isdisjoint(c.ownership.owned)
        assert b.ownership.changes["released"] == 4 and c.ownership.changes["gained"] == 4

        await c.ownership.leave()  # a clean stop hands over at once, without waiting for leases
        took = await ticking([b], 15.0, lambda: shares(b) == [8])
        assert set(b.ownership.owned) == set(range(8)) and took < cluster.LEASE_S  # no lease had to run out
        # each round's key listing leaves a consumer behind; nats-py kept each 5 minutes, about 300 per
        # worker on the bucket's stream (a walk): they go once idle a few seconds
        await b.ownership._keys()  # (one listing just now: its consumer is there whatever the timing)
        left = await nc.jetstream().consumers_info(f"KV_{cluster.OWNERS_BUCKET}")
        assert left and all(0 < info.config.inactive_threshold <= LISTING_IDLE_S for info in left), [
            info.config.inactive_threshold for info in left]
    finally:
        await nc.close()


class KeyWatcher:
    """nats-py's watcher as a listing sees it: each key's entry, then None (the end); ``stop``."""

    def __init__(self, keys: list[str]) -> None:
        from types import SimpleNamespace

        self.entries = [SimpleNamespace(key=k) for k in keys] + [None]
        self.stopped = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.entries:
            raise StopAsyncIteration
        return self.entries.pop(0)

    async def stop(self) -> None:
        self.stopped = True


class MemoryOwners:
    """The owners bucket operations :class:`Ownership` uses, in memory; a key in ``lapse`` is gone
    at its next renewal, as a lease that expired while the bucket elected a leader."""

    def __init__(self) -> None:
        self.revisions: dict[str, int] = {}
        self.values: dict[str, bytes] = {}
        self.revision = 0
        self.lapse: set[str] = set()

    async def put(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.revisions[key] = self.revision
        self.values[key] = value
        return self.revision

    async def get(self, key: str):
        from types import SimpleNamespace

        from nats.js.errors import KeyNotFoundError

        if key not in self.revisions:
            raise KeyNotFoundError()
        return SimpleNamespace(value=self.values[key], revision=self.revisions[key])

    async def update(self, key: str, value: bytes, last: int) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key in self.lapse:  # expired: gone
            self.lapse.discard(key)
            self.revisions.pop(key, None)
            raise KeyWrongLastSequenceError()
        if self.revisions.get(key) != last:  # written since (by another worker, or by us after all)
            raise KeyWrongLastSequenceError()
        return await self.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key in self.revisions:
            raise KeyWrongLastSequenceError()
        return await self.put(key, value)

    async def keys(self) -> list[str]:
        return list(self.revisions)

    async def watchall(self, **kwargs):
        return KeyWatcher(list(self.revisions))

    async def delete(self, key: str, last: int | None = None) -> None:
        self.revisions.pop(key, None)


def test_a_lapsed_lease_is_claimed_again_only_after_its_loss_was_handled():
    """A lease that lapsed with nobody taking it was claimed back at once, while the loss's
    hand-over still waited for the scorer: when it ended it dropped the buffers, alert state and
    controls the new claim had just adopted (found by review)."""

    async def scenario() -> list[tuple[str, int]]:
        calls: list[tuple[str, int]] = []
        handled = asyncio.Event()

        async def gain(k: int) -> None:
            calls.append(("gain", k))

        async def lose(k: int, handing_over: bool) -> None:
            calls.append(("lose", k))
            await handled.wait()  # the scorer hands the assets over after its batch
            calls.append(("lost", k))

        kv = MemoryOwners()
        ownership = Ownership(kv, "a", 1, gain, lose)
        await ownership.tick()
        await ownership.tick()
        assert calls == [("gain", 0)]
        kv.lapse.add("partition.0")
        await ownership.tick()  # the renewal fails: lose(0) runs beside the ticks
        await asyncio.sleep(0)
        await ownership.tick()
        assert calls == [("gain", 0), ("lose", 0)] and 0 not in ownership.owned
        handled.set()
        await asyncio.sleep(0.01)
        await ownership.tick()
        return calls

    assert asyncio.run(scenario()) == [("gain", 0), ("lose", 0), ("lost", 0), ("gain", 0)]


class HangingOwners(MemoryOwners):
    """A bucket whose first renewal of ``partition.0`` hangs longer than a lease and then times
    out, as nats-py's 5 s request timeout does while the bucket elects a leader."""

    def __init__(self, hang_s: float) -> None:
        super().__init__()
        self.hang_s = hang_s
        self.hung = 0

    async def update(self, key: str, value: bytes, last: int) -> int:
        if key == "partition.0" and not self.hung:
            self.hung += 1
            await asyncio.sleep(self.hang_s)
            raise TimeoutError()
        return await super().update(key, value, last)


def test_one_renewal_hanging_past_the_lease_holds_neither_the_round_nor_the_other_leases():
    """Leases were renewed one after another and the first error ended the round; then side by
    side but still waited for: one write hanging until nats-py's 5 s timeout (longer than the
    3 s lease) let every other lease lapse (found by two reviews)."""
    from sensorguard.service.cluster import LEASE_S
    from sensorguard.service.ownership import RENEW_S

    async def scenario() -> tuple[list[bool], list[float], int]:
        async def gain(k: int) -> None:
            pass

        async def lose(k: int, handing_over: bool) -> None:
            pass

        kv = HangingOwners(hang_s=LEASE_S + 1.0)
        ownership = Ownership(kv, "a", 2, gain, lose)
        await ownership.tick()
        await ownership.tick()
        assert sorted(ownership.owned) == [0, 1]
        sure, took = [], []
        for _ in range(int((LEASE_S + 1.5) / RENEW_S)):  # run()'s rhythm, through the hang
            started = time.monotonic()
            await ownership.tick()
            took.append(time.monotonic() - started)
            sure.append(ownership.holds(1))
            await asyncio.sleep(max(0.0, RENEW_S - took[-1]))
        return sure, took, kv.hung

    sure, took, hung = asyncio.run(scenario())
    assert hung == 1 and all(sure) and max(took) < 1.5 * 1.0


class LandedLate(MemoryOwners):
    """A bucket whose first renewal of ``partition.0`` lands and then times out on the client."""

    def __init__(self) -> None:
        super().__init__()
        self.timed_out = 0

    async def update(self, key: str, value: bytes, last: int) -> int:
        revision = await super().update(key, value, last)
        if key == "partition.0" and not self.timed_out:
            self.timed_out += 1
            raise TimeoutError()  # written, but the answer never came
        return revision


def test_a_renewal_that_landed_after_its_timeout_keeps_the_lease():
    """The next renewal used the old revision, failed, and the partition was taken for lost: its
    queued windows dropped, its assets handed over to nobody until the lease ran out (review)."""

    async def scenario() -> tuple[list[tuple[str, int]], dict[int, int]]:
        calls: list[tuple[str, int]] = []

        async def gain(k: int) -> None:
            calls.append(("gain", k))

        async def lose(k: int, handing_over: bool) -> None:
            calls.append(("lose", k))

        kv = LandedLate()
        ownership = Ownership(kv, "a", 1, gain, lose)
        for _ in range(5):
            await ownership.tick()
            await asyncio.sleep(0)
        return calls, dict(ownership.owned)

    calls, owned = asyncio.run(scenario())
    assert calls == [("gain", 0)] and 0 in owned


def test_a_lease_written_by_another_process_under_the_same_name_is_not_taken_for_ours():
    """A lease found "ours" by the worker's name alone: a restarted worker, or a second daemon
    under the same name, took a live lease at once and both consumed the partition (review)."""

    async def scenario() -> tuple[list[int], list[int]]:
        async def gain(k: int) -> None:
            pass

        async def lose(k: int, handing_over: bool) -> None:
            pass

        kv = MemoryOwners()
        first, second = Ownership(kv, "a", 1, gain, lose), Ownership(kv, "a", 1, gain, lose)
        for _ in range(3):
            await first.tick()
            await second.tick()
        return sorted(first.owned), sorted(second.owned)

    assert asyncio.run(scenario()) == ([0], [])


class StalledWatcher:
    """A key listing whose end never comes (its end marker lost in a reconnect)."""

    def __init__(self) -> None:
        self.stopped = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


class StalledOwners(MemoryOwners):
    def __init__(self) -> None:
        super().__init__()
        self.watchers: list[StalledWatcher] = []

    async def watchall(self, **kwargs):
        self.watchers.append(StalledWatcher())
        return self.watchers[-1]


def test_a_stalled_listing_is_given_up_and_its_watcher_stopped(monkeypatch):
    """nats-py's keys() stops its watcher only at the listing's end: a cancelled one leaked an
    ordered consumer receiving every lease write, and one that never ended stopped every later
    claim and release (found by review)."""
    from sensorguard.service import ownership as module

    monkeypatch.setattr(module, "LISTING_MAX_S", 0.3)

    async def scenario() -> list[bool]:
        async def gain(k: int) -> None:
            pass

        async def lose(k: int, handing_over: bool) -> None:
            pass

        kv = StalledOwners()
        ownership = Ownership(kv, "a", 1, gain, lose)
        monkeypatch.setattr(module, "RENEW_S", 0.1)
        for _ in range(8):
            await ownership.tick()
        await asyncio.sleep(0.05)
        return [w.stopped for w in kv.watchers]

    stopped = asyncio.run(scenario())
    assert len(stopped) >= 2 and all(stopped[:-1])  # each stalled one given up and stopped, a fresh one begun


def test_a_worker_that_cannot_publish_hands_its_partitions_on_and_comes_back(monkeypatch, caplog):
    """A walk found: a worker whose MQTT broker was out of reach took half the partitions, scored
    their readings (acknowledged in the stream, so lost) and its alerts reached nobody. It now
    leaves the members and hands its partitions on while it cannot publish; back, it takes part
    once able for REJOIN_S (a flapping link moved the partitions at every reconnect). A start
    waiting for its first connect takes no partition and warns of nothing (found by review)."""
    from sensorguard.service import ownership as ownership_module

    async def scenario() -> None:
        kv = MemoryOwners()
        can = {"a": True, "b": True, "c": False}

        async def nothing(*args) -> None:
            pass

        seen = {name: [] for name in "abc"}
        a, b, c = (Ownership(kv, name, 4, nothing, nothing, able=lambda name=name: can[name],
                             seen=seen[name].append) for name in "abc")

        async def rounds(n: int) -> None:
            for _ in range(n):
                for worker in (a, b, c):
                    await worker.tick()
                await asyncio.sleep(0)

        await rounds(4)
        assert len(a.owned) == len(b.owned) == 2 and c.owned == {} and "member.c" not in kv.revisions
        assert "cannot publish" not in caplog.text  # c waits for its first connect: nothing to hand on
        can["a"] = False  # its broker is out of reach
        await rounds(4)
        assert a.owned == {} and set(b.owned) == {0, 1, 2, 3} and "member.a" not in kv.revisions
        assert a.members == [] and "worker a cannot publish" in caplog.text
        assert seen["a"][-1] == 0 and seen["b"][-1] == 1  # (the cluster_members gauge: a left them)
        can["a"] = True  # back, but not yet for REJOIN_S: it stays out
        monkeypatch.setattr(ownership_module, "REJOIN_S", 3600.0)
        await rounds(3)
        assert a.owned == {} and "member.a" not in kv.revisions
        monkeypatch.setattr(ownership_module, "REJOIN_S", 0.0)
        await rounds(5)
        assert len(a.owned) == len(b.owned) == 2 and seen["a"][-1] == seen["b"][-1] == 2

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        asyncio.run(scenario())


def test_a_round_that_timed_out_says_what_did(caplog):
    """A walk: NATS out of reach logged "cluster ownership (...): TimeoutError", which names neither
    the bucket nor that the worker tries again (a timeout's text is empty)."""
    import nats.errors

    from sensorguard.service.ownership import run

    async def scenario() -> None:
        async def nothing(*args) -> None:
            pass

        ownership, stopping = Ownership(MemoryOwners(), "a", 4, nothing, nothing), asyncio.Event()

        async def timed_out() -> None:
            stopping.set()
            raise nats.errors.TimeoutError

        ownership.tick = timed_out
        await run(ownership, stopping)

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        asyncio.run(scenario())
    assert "state bucket did not answer in time" in caplog.text and "trying again" in caplog.text


def test_a_worker_whose_model_reads_other_channels_takes_no_partition_until_the_members_agree(caplog):
    """A cluster walk: a worker serving a 6-channel model joined an 8-channel cluster silently, took
    two partitions and refused every reading of their assets as unknown_channel (acknowledged in
    the stream: lost). It now waits outside the members, said once a minute, and joins once its
    model reads theirs (a swap rolling through the cluster); another version of the same channels
    joins with a warning; a member that writes no mark (an older worker) is not compared."""
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    served = {"a": channel_mark(eight, "v0002"), "b": channel_mark(eight[:6], "v0001"),
              "c": channel_mark(eight, "v0001")}

    async def scenario() -> None:
        kv = MemoryOwners()

        async def nothing(*args) -> None:
            pass

        a, b = (Ownership(kv, name, 4, nothing, nothing, mark=lambda name=name: served[name]) for name in "ab")
        old = Ownership(kv, "old", 4, nothing, nothing)  # no mark: an older worker

        async def rounds(n: int, *workers: Ownership) -> None:
            for _ in range(n):
                for worker in workers:
                    await worker.tick()

        await rounds(3, a)
        assert set(a.owned) == {0, 1, 2, 3}
        assert json.loads(kv.values["member.a"])["channels"] == served["a"]["channels"]
        await rounds(4, a, b)
        assert b.owned == {} and "member.b" not in kv.revisions and set(a.owned) == {0, 1, 2, 3}
        assert caplog.text.count("read other channels") == 1  # once a minute, not every round
        assert b.disagreement and "a (v0002, 8 channels)" in b.disagreement  # (its /readyz says it)
        assert "worker b serves model v0001 of 6 channels, and member(s) a (v0002, 8 channels)" in caplog.text
        # a model from another registry promoted there by its number would be that registry's own v0001 (a walk)
        assert "a model from another registry is published there first, as a new version" in caplog.text
        served["b"] = channel_mark(eight, "v0002")  # swapped to the cluster's model: it joins
        await rounds(4, a, b)
        assert len(a.owned) == len(b.owned) == 2 and b.disagreement is None
        c = Ownership(kv, "c", 4, nothing, nothing, mark=lambda: served["c"])
        await rounds(4, a, b, c, old)
        assert "worker c serves model v0001, member(s) a (v0002, 8 channels), b (v0002, 8 channels) another " \
               "version" in caplog.text
        assert sorted(len(w.owned) for w in (a, b, c, old)) == [1, 1, 1, 1]  # c and the unmarked worker joined

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        asyncio.run(scenario())


def test_a_rollouts_current_model_joins_and_the_same_channels_in_another_order_are_the_same(tmp_path, caplog):
    """A review: a hot swap cannot change a model's channels, so a rollout restarts the workers one by
    one; kept out, each restarted on the registry's new CURRENT waited for the last old one, the
    partitions crowding onto the old workers. It joins, warned. And readings are taken by name: the
    same channels in another order (a retrain from an export ordered otherwise) are no other model."""
    from types import SimpleNamespace

    from sensorguard.service.member_models import channel_mark, model_mark, rollout

    NAME = "pumps"

    def bundle(channels, version):
        return SimpleNamespace(channels=channels, version=version)

    registry = tmp_path / "registry"
    (registry / NAME).mkdir(parents=True)
    (registry / NAME / "CURRENT").write_text("v0002\n")
    follows = SimpleNamespace(registry=str(registry), name=NAME)
    by_path = SimpleNamespace(registry=None, name=None)
    assert model_mark(bundle(("a", "b"), "v0002"), follows)["sees"] == "v0002"
    assert rollout(model_mark(bundle(("a", "b"), "v0002"), follows))
    assert not rollout(model_mark(bundle(("a", "b"), "v0001"), follows))
    assert "sees" not in model_mark(bundle(("a", "b"), "v0002"), by_path)
    assert channel_mark(("t", "p", "f"), "v1")["channels"] == channel_mark(("p", "t", "f"), "v1")["channels"]
    # a and c serve v0001 and see v0002 promoted (one registry): b, restarted on it, joins them
    served = {"a": channel_mark(("t", "p"), "v0001", "pumps", "v0002"),
              "b": channel_mark(("t", "p", "f"), "v0002", "pumps", "v0002"),
              "c": channel_mark(("p", "t"), "v0001", "pumps", "v0002")}

    async def scenario() -> None:
        kv = MemoryOwners()

        async def nothing(*args) -> None:
            pass

        # (b made last: it was restarted on the new CURRENT after a and c started)
        a, c, b = (Ownership(kv, name, 6, nothing, nothing, mark=lambda name=name: served[name]) for name in "acb")
        for _ in range(4):
            for worker in (a, c):  # the same channels, in another order: c joins a
                await worker.tick()
        assert [len(w.owned) for w in (a, c)] == [3, 3] and c.disagreement is None
        for _ in range(5):
            for worker in (a, b, c):  # b restarted on the registry's new CURRENT: it joins them
                await worker.tick()
        assert [len(w.owned) for w in (a, b, c)] == [2, 2, 2] and b.disagreement is None

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        asyncio.run(scenario())
    assert "worker b serves the registry's CURRENT model pumps v0002 of 3 channels, member(s) a (pumps v0001, " \
           "2 channels), c (pumps v0001, 2 channels) read other channels: it joins" in caplog.text


def test_a_worker_of_another_model_line_is_not_let_in_for_being_its_registrys_current(caplog):
    """A review: "current" was judged against the joining worker's own registry/name only.
    Every worker that follows a registry serves that registry's CURRENT, so a worker started by
    mistake with another model line (``--name plant6``, or a node whose registry copy was not
    updated) is "current" too and joins an 8-channel cluster whose members are all CURRENT of
    theirs: the c3bc288 walk (its assets' readings refused as unknown_channel, acked and lost)."""
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    served = {"a": channel_mark(eight, "v0003", "plant", "v0003"),  # the cluster's model, CURRENT of 'plant'
              "b": channel_mark(eight[:6], "v0001", "plant6", "v0001")}  # CURRENT of 'plant6': another line

    async def scenario() -> None:
        kv = MemoryOwners()

        async def nothing(*args) -> None:
            pass

        a, b = (Ownership(kv, name, 4, nothing, nothing, mark=lambda name=name: served[name]) for name in "ab")
        for _ in range(3):
            await a.tick()
        for _ in range(5):
            for worker in (a, b):
                await worker.tick()
        # the members are CURRENT too (their marks say so): b is no rollout's new model
        assert b.owned == {} and b.disagreement

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        asyncio.run(scenario())
    # each model named by its line, not its version alone (two registries' v0001 read as one: a walk)
    assert "worker b serves model plant6 v0001 of 6 channels, and member(s) a (plant v0003, 8 channels)" in caplog.text


def _run_pair(served, joined_first, newcomer):
    from sensorguard.service.member_models import channel_mark  # noqa: F401

    async def scenario():
        kv = MemoryOwners()

        async def nothing(*args) -> None:
            pass

        ws = {n: Ownership(kv, n, 4, nothing, nothing, mark=lambda n=n: served[n]) for n in served}
        for _ in range(3):
            for n in joined_first:
                await ws[n].tick()
        for _ in range(5):
            for w in ws.values():
                await w.tick()
        return ws[newcomer]

    return asyncio.run(scenario())


def test_a_mistyped_name_waits_also_between_a_promotion_and_the_first_restart():
    """A review: v0002 (9 channels) promoted in the shared registry, no worker restarted yet: every
    member serves v0001, no longer CURRENT. A worker started with --name plant6 (its own line's
    CURRENT, 6 channels) met no CURRENT member of other channels and joined: the members must
    follow its model name and see its version as CURRENT."""
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    served = {"a": channel_mark(eight, "v0001", "plant", "v0002"), "b": channel_mark(eight, "v0001", "plant", "v0002"),
              "x": channel_mark(eight[:6], "v0001", "plant6", "v0001")}
    x = _run_pair(served, "ab", "x")
    assert x.owned == {}, "a worker of another model line took partitions"


def test_with_a_registry_copy_per_host_a_rollout_joins_once_every_copy_is_promoted():
    """A review: with a registry copy per host, each promoted as its host is restarted, the restarted
    worker's siblings still see v0001 as CURRENT: it waits (it cannot tell a rollout from a stale copy
    of its own). Promoted on every host first (as operations.md says), it joins."""
    from sensorguard.service.member_models import channel_mark

    eight, nine = tuple(f"c{j}" for j in range(8)), tuple(f"c{j}" for j in range(9))
    served = {"b": channel_mark(eight, "v0001", "plant", "v0001"), "c": channel_mark(eight, "v0001", "plant", "v0001"),
              "a": channel_mark(nine, "v0002", "plant", "v0002")}
    assert _run_pair(served, "bc", "a").owned == {}
    served.update(b=channel_mark(eight, "v0001", "plant", "v0002"), c=channel_mark(eight, "v0001", "plant", "v0002"))
    assert _run_pair(served, "bc", "a").owned


def test_another_registrys_model_of_the_same_name_and_version_waits():
    """A cluster walk: a second registry's 'plant v0001' of 7 channels joined members serving their
    registry's 'plant v0001' of 8 (CURRENT there), taken for a rollout they were behind, and told
    them to restart to serve CURRENT, which they already did. A member serving the version it sees
    as CURRENT is not behind: the newcomer waits."""
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    served = {"a": channel_mark(eight, "v0001", "plant", "v0001"),
              "x": channel_mark(eight[:7], "v0001", "plant", "v0001")}
    assert _run_pair(served, "a", "x").owned == {}


def test_of_two_workers_of_other_channels_started_together_the_earlier_keeps_its_seat(caplog):
    """A review: each checked the members before writing its own key, so two workers of other
    channels started within the same round both found none and both joined (each refusing the other's
    assets' readings as unknown_channel, acknowledged and lost). Once listed, each looks again at the
    members that started before it: the later one leaves and waits, the earlier one serves."""
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    served = {"a": channel_mark(eight, "v0002"), "b": channel_mark(eight[:6], "v0001")}

    async def scenario() -> tuple[Ownership, Ownership, list[bool]]:
        kv = MemoryOwners()

        async def nothing(*args) -> None:
            pass

        a, b = (Ownership(kv, name, 4, nothing, nothing, mark=lambda name=name: served[name]) for name in "ab")
        await asyncio.gather(a.tick(), b.tick())  # each checks before the other's key is written
        both_in = ["member.a" in kv.values, "member.b" in kv.values]
        for _ in range(4):
            await asyncio.gather(a.tick(), b.tick())
        return a, b, both_in

    with caplog.at_level(logging.WARNING, logger="sensorguard.service.ownership"):
        a, b, both_in = asyncio.run(scenario())
    assert both_in == [True, True]  # the race as it was: both found no mark and wrote their keys
    assert set(a.owned) == {0, 1, 2, 3} and a.disagreement is None
    assert b.owned == {} and b.disagreement and "a (v0002, 8 channels)" in b.disagreement
    assert caplog.text.count("read other channels") == 1


def _two_models():
    from sensorguard.service.member_models import channel_mark

    eight = tuple(f"c{j}" for j in range(8))
    return {"a": channel_mark(eight, "v0002"), "b": channel_mark(eight[:6], "v0001")}


def test_a_worker_that_stood_down_does_not_rejoin_beside_a_member_of_other_channels(monkeypatch):
    """a (8 channels, started first) serves, b (6 channels) waits. a stands down
    (its MQTT link is out), b then finds no member of other channels and joins. a can publish
    again: it kept _agreed and its early ``started``, so _still_agree skips b (started later) and
    both served, each refusing the other's assets' readings as unknown_channel (a review). Back, it
    checks the members again."""
    import sensorguard.service.ownership as ownership_module

    monkeypatch.setattr(ownership_module, "REJOIN_S", 0.0)
    monkeypatch.setattr(ownership_module, "SETTLE_S", 0.0)  # (b joined long ago: it does not look again)
    served = _two_models()

    async def scenario() -> tuple[Ownership, Ownership]:
        kv = MemoryOwners()
        up = {"a": True}

        async def nothing(*args) -> None:
            pass

        a = Ownership(kv, "a", 4, nothing, nothing, able=lambda: up["a"], mark=lambda: served["a"])
        b = Ownership(kv, "b", 4, nothing, nothing, mark=lambda: served["b"])
        for _ in range(3):
            await a.tick()
        for _ in range(2):
            await asyncio.gather(a.tick(), b.tick())
        assert a.owned and b.owned == {}
        up["a"] = False
        for _ in range(3):
            await asyncio.gather(a.tick(), b.tick())
        await asyncio.sleep(0)  # the releases' tasks
        up["a"] = True
        for _ in range(5):
            await asyncio.gather(a.tick(), b.tick())
            await asyncio.sleep(0)
        return a, b

    a, b = asyncio.run(scenario())
    assert not (a.owned and b.owned), f"both serve: a {sorted(a.owned)}, b {sorted(b.owned)}"


class _SlowPut:
    """The shared bucket, whose first write of ``member.a`` lands only once ``landed`` is set."""

    def __init__(self, kv: MemoryOwners, landed: asyncio.Event) -> None:
        self._kv, self._landed, self._held = kv, landed, False

    def __getattr__(self, name):
        return getattr(self._kv, name)

    async def put(self, key: str, value: bytes) -> int:
        if key == "member.a" and not self._held:
            self._held = True
            await self._landed.wait()
        return await self._kv.put(key, value)


def test_an_earlier_workers_key_listed_after_the_later_one_checked_still_keeps_its_seat():
    """a (started first) found no mark, and its own key's write is slow to land;
    b found none either, wrote its key, looked again at the earlier members (a not listed yet) and
    joined. a's key lands: a looks only at members that started before it (not b) and joins too.
    The later one checks once only, so the race stays open whenever the earlier one's key is
    listed after that check (a review). Members listed within ``SETTLE_S`` of joining make it
    look again."""
    served = _two_models()

    async def scenario() -> tuple[Ownership, Ownership]:
        kv, landed = MemoryOwners(), asyncio.Event()

        async def nothing(*args) -> None:
            pass

        a = Ownership(_SlowPut(kv, landed), "a", 4, nothing, nothing, mark=lambda: served["a"])
        b = Ownership(kv, "b", 4, nothing, nothing, mark=lambda: served["b"])
        first = asyncio.create_task(a.tick())  # checks (none), then its write hangs
        await asyncio.sleep(0.01)
        for _ in range(2):
            await b.tick()
        landed.set()
        await first
        for _ in range(4):
            await asyncio.gather(a.tick(), b.tick())
        return a, b

    a, b = asyncio.run(scenario())
    assert not (a.owned and b.owned), f"both serve: a {sorted(a.owned)}, b {sorted(b.owned)}"


class ListingEndsEarly(MemoryOwners):
    """A key listing that ends before the member keys came (nats.py issue 842), once ``short``."""

    short = False

    async def watchall(self, **kwargs):
        return KeyWatcher([k for k in self.revisions if not (self.short and k.startswith("member."))])


def test_the_last_member_is_told_only_when_no_other_is_left_though_a_listing_ends_early():
    """A stop lists the members once it has left, to say that readings wait for the next one; a
    listing that ended early (the guard tick() has, its own key, is deleted by then) made a worker
    stopping beside a live one say "the last member stopped" (a review)."""

    async def scenario() -> tuple:
        async def gain(k: int) -> None:
            pass

        async def lose(k: int, handing_over: bool) -> None:
            pass

        kv = ListingEndsEarly()
        a, b, c = (Ownership(kv, name, 4, gain, lose) for name in "abc")
        for _ in range(4):
            for worker in (a, b):
                await worker.tick()
        assert a.members == b.members == ["a", "b"]
        kv.short = True
        return await c.leave(), await b.leave(), await a.leave()  # c never joined: nothing to say

    assert asyncio.run(scenario()) == (None, True, False)
