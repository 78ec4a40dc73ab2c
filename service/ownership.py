"""Who serves which partition in cluster mode: members, rendezvous assignment, leases in a bucket.

Every worker keeps two kinds of key alive in the ``sensorguard_owners`` bucket, whose entries expire
``LEASE_S`` after their last write: ``member.<worker>`` (it is alive) and ``partition.<k>`` for each
partition it owns (the lease). Once a second (``RENEW_S``) each worker renews its keys, reads the
members and computes with :func:`assign` which partitions it *should* own (from its second tick:
the first only announces it, so workers that start together see each other before claiming). It then

- releases a partition it holds but should not (a worker joined): it stops consuming it first, then
  deletes the lease, so the new owner starts from the acknowledged position;
- claims a partition it should own once it is free: ``create`` succeeds only when no live lease
  exists, so a dead worker's partitions are taken within a lease period of its death, and a busy one
  gives its partitions up itself.

:func:`assign` is rendezvous (highest random weight) hashing with exact shares: each partition goes
to the member with the highest ``hash(partition, member)`` that still has room. Every worker
computes the same answer from the same member list without talking to the others, shares differ by
at most one, and a member joining or leaving moves few partitions besides the ones it gains or had.

A worker that stalls longer than a lease (a long pause) may find its lease taken: its renewal fails,
and it stops consuming that partition at once. Meanwhile both may have fetched from the partition's
durable consumer; JetStream hands each message to one of them only, so nothing is scored twice
because of it (readings of an asset may be split for a moment; the repeat check drops stale ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sensorguard.service.assignment import assign
from sensorguard.service.logs import RateLimiter, first_line, joined_and_left
from sensorguard.service.member_models import MEMBER, model_words, other_models, rollout

log = logging.getLogger(__name__)

RENEW_S = 1.0  # a lease is renewed this often: three chances before it expires
LISTING_IDLE_S = 5.0  # a key listing's consumer, once stopped, is deleted by the server after this long
REJOIN_S = 5.0  # a worker that stood down (it could not publish) takes part again once able this long
LISTING_MAX_S = 10.0  # a members' listing not done by then is given up and started afresh
LEFT_LISTING_S = 2.0  # a stop waits this long at most to learn whether members are left
SETTLE_S = 30.0  # a member that joined this recently still gives its seat to an earlier one listed late
SURE_S = 2.0  # a lease written this recently is surely still ours (it expires after LEASE_S = 3 s)
PARTITION = "partition."


class Ownership:
    """One worker's view and actions; :meth:`tick` once per ``RENEW_S`` from the worker's event loop.

    ``gain(k)`` is awaited after the lease of partition ``k`` was taken; ``lose(k, True)`` before a
    lease is given up (the partition must no longer be consumed when it returns, its assets' state
    passed on), ``lose(k, False)`` after one was lost (another worker speaks for its assets now).
    """

    def __init__(self, kv: Any, worker: str, partitions: int, gain: Callable[[int], Awaitable[None]],
                 lose: Callable[[int, bool], Awaitable[None]], count: Callable[[str], None] | None = None,
                 able: Callable[[], bool] | None = None, mark: Callable[[], dict] | None = None,
                 seen: Callable[[int], None] | None = None) -> None:
        self.kv = kv
        self.worker = worker
        # what our leases hold: the name and this process's own mark, so a lease written by another process
        # under the same name (a restart, a second daemon with the same name) is never taken for ours
        self._token = f"{worker} {secrets.token_hex(8)}".encode()
        self.partitions = partitions
        self.gain, self.lose = gain, lose
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        self.members: list[str] = []
        self.changes = {"gained": 0, "released": 0, "lost": 0}
        self._count = count
        self._seen = seen  # told how many members each listing found (the ``cluster_members`` gauge)
        self._releases: dict[int, asyncio.Task] = {}  # partitions being handed over (still renewed meanwhile)
        self._renewed: dict[int, float] = {}  # partition -> monotonic time its lease was last written
        self._tasks: set[asyncio.Task] = set()  # losses running beside the ticks
        self._losing: dict[int, asyncio.Task] = {}  # partitions lost whose lose() has not ended yet
        self._renewing: dict[int, asyncio.Task] = {}  # lease writes not answered yet (one per partition)
        self._listing: asyncio.Task | None = None  # the members' listing, when one outlasted its round
        self._listing_since = 0.0
        self._limiter = RateLimiter(60.0)  # a bucket down fails every partition's write every second
        self._joined = False  # the membership was written once
        self._joined_at = -math.inf  # monotonic: when it last joined
        self.able = able or (lambda: True)  # whether it can publish what it judges (its MQTT link is up)
        self._stood_down = False
        self._able_since: float | None = None  # monotonic: able again since (a stood-down worker waits REJOIN_S)
        # its model's mark in its member key (member_models); None: no mark, no check. Compared with the
        # members' before it first joins: a model reading other channels takes no partition
        self.mark = mark
        self._agreed = mark is None
        self._started = time.time()  # in its member key: of two that joined together, the earlier keeps its seat
        self.disagreement: str | None = None  # why it waits outside the members (``/readyz`` says it)

    def holds(self, k: int) -> bool:
        """Whether partition ``k``'s lease is surely still ours: written less than ``SURE_S`` ago.
        A worker fetches only then, so it never consumes beside the next owner, which can claim
        the lease only ``LEASE_S`` after its last write (while the bucket elects a new leader,
        for instance, renewals fail and the lease runs out)."""
        return k in self.owned and time.monotonic() - self._renewed.get(k, -math.inf) < SURE_S

    def _changed(self, change: str) -> None:
        self.changes[change] += 1
        if self._count is not None:
            self._count(change)

    async def tick(self) -> None:
        """Renew, read the members, release what is no longer ours, claim what is ours and free.

        Every lease is renewed first, and releases (which wait for a fetch loop to end and for the
        scorer to hand the assets' state over) run as tasks of their own, renewed until they end:
        a slow release never lets another lease run out.
        """
        await self._renew()  # first: a slow bucket below must not hold the leases back
        if not self.able():  # (before it ever took part, a start waiting for its first connect: it waits)
            self._able_since = None
            if self._joined or self.owned or self._stood_down:
                await self._stand_down()
            return
        if self._stood_down:  # back only once able for REJOIN_S: a flapping link moved the partitions each time
            self._able_since = self._able_since or time.monotonic()
            if time.monotonic() - self._able_since < REJOIN_S:
                return
            self._stood_down = False
            log.info("cluster: worker %s can publish again: it takes part again", self.worker)
        if not self._agreed and not await self._agree():
            return
        said = {"since": time.time(), "started": self._started, **(self.mark() if self.mark is not None else {})}
        member = self.kv.put(f"{MEMBER}{self.worker}", json.dumps(said).encode())
        await asyncio.wait_for(member, RENEW_S)  # (safe to give up and write again)
        now = time.monotonic()
        if self._listing is not None and now - self._listing_since > LISTING_MAX_S:
            self._listing.cancel()  # stalled (its end never came): a fresh one
            self._listing = None
        if self._listing is None:  # a slow listing is taken up at a later round, not started again
            self._listing, self._listing_since = asyncio.create_task(self._keys(), name="list-owners"), now
        done, _ = await asyncio.wait({self._listing}, timeout=RENEW_S)
        if not done:
            return
        listing, self._listing = self._listing, None
        keys = listing.result()
        members = sorted(key[len(MEMBER):] for key in keys if key.startswith(MEMBER))
        if self.worker not in members:  # our key was written just now: a listing without it (nats-py's
            return  # key listing can end early, nats.py issue 842) would hand every partition over
        grown = bool(set(members) - set(self.members) - {self.worker})
        if self._joined and members != self.members:
            log.info("cluster: members now %s", joined_and_left(self.members, members))
        self.members = members
        if self._seen is not None:
            self._seen(len(members))
        if not self._joined:  # the first tick only says we are here: workers starting together see
            if self.mark is None or await self._still_agree():  # each other before claiming, instead of one
                self._joined, self._joined_at = True, now  # taking all and handing half over
            return
        if grown and self.mark is not None and now - self._joined_at < SETTLE_S and not await self._still_agree():
            return  # an earlier member listed only after our check (its key's write landed late)
        want = {k for k, m in assign(self.partitions, self.members).items() if m == self.worker}
        self._hand_on(set(self.owned) - want)  # handed over in the background
        # a partition whose lease lapsed (nobody took it) is claimed again only once its lose()
        # ended: else that late hand-over dropped the buffers, state and controls just adopted
        claims = sorted(want - set(self.owned) - set(self._losing))
        sent = time.monotonic()  # side by side: one after another, a slow bucket ran a round past the leases
        for k, revision in zip(claims, await asyncio.gather(*(self._claim(k) for k in claims)), strict=True):
            if revision is not None:
                self.owned[k] = revision
                self._renewed[k] = sent
                self._changed("gained")
                await self.gain(k)

    async def _agree(self) -> bool:
        """Whether its model reads the channels the members' models read (member_models); said when
        not, once a minute, and when only the version differs, once."""
        mark = self.mark() if self.mark is not None else {}
        channels, versions, behind = await other_models(self.kv, self.worker, mark, self._keys, LISTING_MAX_S)
        if channels and rollout(mark) and behind:  # a rollout's new model: the others are behind
            log.warning("cluster: worker %s serves the registry's CURRENT model %s of %d channels, member(s) %s read "
                        "other channels: it joins; restart them to serve CURRENT (each refuses the readings of "
                        "the other's channels as unknown_channel meanwhile)", self.worker, model_words(mark),
                        mark["n_channels"], ", ".join(channels))
        elif channels:
            self.disagreement = (f"its model reads other channels than cluster member(s) {', '.join(channels)}: "
                                 "it takes no partition until they agree")
            if self._limiter.hit("models") is not None:
                log.error("cluster: worker %s serves model %s of %d channels, and member(s) %s read other channels: "
                          "it takes no partition until they agree (their readings would be refused here as "
                          "unknown_channel and lost); serve the cluster's model, or, to roll this one out, "
                          "promote it to CURRENT in the registry the members follow (every host's copy; a model "
                          "from another registry is published there first, as a new version: the same number may "
                          "name another model there) and restart them", self.worker, model_words(mark),
                          mark["n_channels"], ", ".join(channels))
            return False
        if versions:
            log.warning("cluster: worker %s serves model %s, member(s) %s another version of the same channels: an "
                        "asset's alerts depend on which worker owns it until they serve one version",
                        self.worker, model_words(mark), ", ".join(versions))
        self._agreed, self.disagreement = True, None
        return True

    async def _still_agree(self) -> bool:
        """Whether it stays once its key is listed: two workers of other channels started together
        each found no mark before writing their own and both joined (a review). It looks again at the
        members that started before it; one of other channels there (not behind a rollout's model)
        makes it leave and wait, as if it had come later. The earlier one stays, so one of them serves."""
        mark = self.mark() if self.mark is not None else {}
        channels, _, behind = await other_models(self.kv, self.worker, mark, self._keys, LISTING_MAX_S,
                                                 before=(self._started, self.worker))
        if not channels or (rollout(mark) and behind):
            return True
        self._agreed, self._joined, self.members = False, False, []  # (the next round says why, as _agree does)
        try:
            await asyncio.wait_for(self.kv.delete(f"{MEMBER}{self.worker}"), RENEW_S)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.debug("leaving the members: %s", exc)
        self._hand_on(set(self.owned))  # (joined already: an earlier one came in late)
        return False

    def _hand_on(self, partitions: set[int]) -> None:
        """Release each of ``partitions`` not being released already, each as a task of its own."""
        for k in sorted(partitions - set(self._releases)):
            self._releases[k] = asyncio.create_task(self.release(k), name=f"release-{k}")

    async def _stand_down(self) -> None:
        """It cannot publish what it judges (its MQTT broker is out of reach): it leaves the members and
        hands its partitions on, so a worker that can publish scores them; its own alerts reached
        nobody, while its readings were acknowledged in the stream and lost (found in a walk). It
        takes part again once it can publish; while no worker can, the readings wait in the stream."""
        if not self._stood_down:
            self._stood_down, self._joined, self.members = True, False, []  # (a stale list ran the watchdog)
            if self._seen is not None:  # it left them: the gauge showed the members it last listed
                self._seen(0)
            self._agreed = self.mark is None  # back, it checks the members again: one of other channels may have joined
            log.warning("cluster: worker %s cannot publish (its MQTT broker is out of reach): it hands its %d "
                        "partitions on and takes none until it can", self.worker, len(self.owned))
            try:
                await asyncio.wait_for(self.kv.delete(f"{MEMBER}{self.worker}"), RENEW_S)
            except Exception as exc:  # noqa: BLE001 - it expires on its own
                log.debug("standing down: %s", exc)
        self._hand_on(set(self.owned))

    async def _keys(self) -> list[str]:
        """The bucket's keys. nats-py's ``keys()`` stops its watcher only when the listing ends: one
        cancelled left an ordered consumer receiving every lease write for good. Here it is stopped
        whatever ends the listing. Stopping unsubscribes, and the server deletes the consumer once it
        has been idle ``LISTING_IDLE_S`` (nats-py's default, 5 minutes, kept about 300 consumers per
        worker on the bucket's stream, one created every round: a walk)."""
        watcher = await self.kv.watchall(ignore_deletes=True, meta_only=True, inactive_threshold=LISTING_IDLE_S)
        keys = []
        try:
            async for entry in watcher:
                if not entry:  # the end of what the bucket holds now
                    break
                keys.append(entry.key)
        finally:
            await watcher.stop()
        return keys

    async def _renew(self) -> None:
        """Write every lease we hold again, side by side, waiting at most ``RENEW_S``; one found
        taken is lost (its ``lose`` runs as a task).

        A write that hangs (the bucket elects a leader; nats-py gives up after 5 s, longer than a
        lease) is left running as a task of its own, and its partition is not written again until
        it is answered: the round, and the other leases, go on. It is never cancelled: a write
        given up after it landed would leave us holding a revision that is no longer the lease's.
        """
        started = []
        for k in sorted(self.owned):
            if k not in self._renewing:
                task = asyncio.create_task(self._renew_one(k), name=f"renew-{k}")
                self._renewing[k] = task
                task.add_done_callback(lambda done, k=k: self._renewed_one(k, done))
                started.append(task)
        if started:  # (not a write still hanging from an earlier round: it would cost every round a second)
            await asyncio.wait(started, timeout=RENEW_S)

    def _renewed_one(self, k: int, task: asyncio.Task) -> None:
        if self._renewing.get(k) is task:
            del self._renewing[k]
        exc = None if task.cancelled() else task.exception()
        if exc is not None and (count := self._limiter.hit("renew")) is not None:
            log.warning("renewing the lease of partition %d failed (%d failures since the last line): %s", k,
                        count, first_line(exc) or type(exc).__name__)

    async def _renew_one(self, k: int) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        sent = time.monotonic()  # the lease runs from when the write left, not when it was answered
        last = self.owned.get(k)
        if last is None:  # released meanwhile
            return
        try:
            revision = await self.kv.update(f"{PARTITION}{k}", self._token, last=last)
        except KeyWrongLastSequenceError:  # our lease expired and was taken meanwhile (or just released)
            if (ours := await self._ours(f"{PARTITION}{k}")) is not None and k in self.owned:
                self.owned[k] = ours  # a write given up on (nats-py's timeout) landed after all: still ours
                return
            if k in self.owned and k not in self._releases:
                log.warning("lost partition %d: its lease ran out (another worker took it, or NATS was out of "
                            "reach longer than the lease)", k)
                del self.owned[k]
                self._changed("lost")
                self._losing[k] = self._background(self._lost(k), f"lost-{k}")
                self._losing[k].add_done_callback(lambda _, k=k: self._losing.pop(k, None))
            return
        if k in self.owned:
            self.owned[k] = revision
            self._renewed[k] = sent

    async def _lost(self, k: int) -> None:
        """``lose(k, False)``, its failure logged: a task of its own, whose exception nobody retrieved."""
        try:
            await self.lose(k, False)
        except Exception:  # noqa: BLE001 - said, not left to asyncio's "never retrieved" at garbage collection
            log.exception("cluster: letting partition %d go (its lease ran out) failed", k)

    def _background(self, work: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)  # kept until done (the loop holds tasks weakly)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _claim(self, k: int) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        key = f"{PARTITION}{k}"
        try:  # given up after a second: a hanging claim must not hold the next round's renewals back
            return await asyncio.wait_for(self.kv.create(key, self._token), RENEW_S)
        except TimeoutError:
            return None  # tried again at the next round (if it landed, it is found ours then)
        except KeyWrongLastSequenceError:
            last = await self._ours(key)
            if last is None:
                return None  # still held (its owner releases it, or its lease runs out)
            # a claim given up on landed after all: written again, so that the lease runs from now
            return await asyncio.wait_for(self.kv.update(key, self._token, last=last), RENEW_S)

    async def _ours(self, key: str) -> int | None:
        """The revision of ``key`` when it holds this process's lease mark (a write given up on
        landed), else None (another worker's, gone, or the bucket too slow to say)."""
        try:
            entry = await asyncio.wait_for(self.kv.get(key), RENEW_S)
        except Exception:  # noqa: BLE001 - missing, deleted or slow: not known to be ours
            return None
        return entry.revision if entry is not None and entry.value == self._token else None

    async def release(self, k: int) -> None:
        """Hand ``k`` over: stop consuming it and pass its assets' state on (``lose``), then give
        its lease up. Runs beside the ticks, which keep renewing the lease until then."""
        try:
            await self.lose(k, True)
        except Exception:  # noqa: BLE001 - a task of its own: its exception was never retrieved, the failure unsaid
            log.exception("cluster: handing partition %d over failed; its lease is given up all the same", k)
        finally:
            revision = self.owned.pop(k, None)
            self._releases.pop(k, None)
            self._changed("released")
            if revision is not None:
                try:
                    await self.kv.delete(f"{PARTITION}{k}", last=revision)
                except Exception as exc:  # noqa: BLE001 - it expires on its own within the lease
                    log.debug("releasing partition %d: %s", k, exc)

    async def leave(self) -> bool | None:
        """Release everything and the membership: a clean stop hands the partitions over at once.
        Returns whether another member is listed once it has left (None: it was none, or the bucket
        did not say), so the last one to stop can say that readings wait in the stream for the next."""
        self._hand_on(set(self.owned))
        while self._releases:  # the leases are renewed until each hand-over is done
            await asyncio.wait(list(self._releases.values()), timeout=RENEW_S)
            with contextlib.suppress(Exception):  # noqa: BLE001 - a lease that lapses here only hurries the next owner
                await self._renew()
        for task in [*self._renewing.values(), *([self._listing] if self._listing else [])]:
            task.cancel()  # a write or listing still hanging: nothing is held any more
        member, known = self._joined, [m for m in self.members if m != self.worker]
        try:
            await self.kv.delete(f"{MEMBER}{self.worker}")
            if not member:
                return None
            keys = await asyncio.wait_for(self._keys(), LEFT_LISTING_S)
            if any(key.startswith(MEMBER) and key != f"{MEMBER}{self.worker}" for key in keys):
                return True
            # a listing can end early (nats.py issue 842; tick() guards with its own key, gone here): the
            # members the last round listed are asked one by one before "the last member" is said
            for other in known:
                if await self._listed(other):
                    return True
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.debug("leaving: %s", exc)
            return None
        return False

    async def _listed(self, worker: str) -> bool:
        """Whether ``worker``'s member key is in the bucket now (deleted or expired: not)."""
        from nats.js.errors import KeyNotFoundError

        try:
            await asyncio.wait_for(self.kv.get(f"{MEMBER}{worker}"), RENEW_S)
        except KeyNotFoundError:
            return False
        return True


def _why(exc: BaseException) -> str:
    """A failed round in words: a timeout's text is empty, and "TimeoutError" alone said nothing of
    what timed out (a walk)."""
    if isinstance(exc, TimeoutError):  # (nats-py's TimeoutError is one too)
        return "the NATS state bucket did not answer in time (the server out of reach or overloaded); trying again"
    return first_line(exc) or type(exc).__name__


async def run(ownership: Ownership, stopping: asyncio.Event) -> None:
    """Tick every ``RENEW_S`` until ``stopping``; a failed tick is logged and tried again."""
    while not stopping.is_set():
        started = asyncio.get_running_loop().time()
        try:
            await ownership.tick()
        except Exception as exc:  # noqa: BLE001 - a broken connection: nats-py reconnects, we retry
            if (count := ownership._limiter.hit("tick")) is not None:  # (every second while the bucket is down)
                log.warning("cluster ownership (%d failed rounds since the last line): %s", count, _why(exc))
        elapsed = asyncio.get_running_loop().time() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), max(0.05, RENEW_S - elapsed))
