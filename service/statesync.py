"""What a cluster-mode worker writes to the state bucket, so that an asset's next owner finds it.

Per asset, two keys in ``sensorguard_state``: its alert and drift state (``state_key``: on every
alert status change, every 30 s, and on hand-over; when its state ended (silent), a normal state
with its learned drift baseline, deleted when it has none or the silent assets' cap forgets it)
and its maintenance, shelving and acknowledgeable alerts (``controls_key``: when they change). Writes are
queued from any thread and made by the event loop's writer every ``STATE_FLUSH_S``, one flush at a
time so an older state never lands last; a failed write is tried again at the next flush. A
hand-over's states and controls are written by :meth:`hand_over` and :meth:`hand_over_controls`,
tried again while the bucket fails for up to ``HANDOVER_WRITE_S`` (the lease is renewed meanwhile,
so the next owner cannot read the bucket before). Everything here runs on the
event loop, except :meth:`StateSync.queue` and :meth:`StateSync.mark`, which may be called from
any thread through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sensorguard.service.cluster import STATE_BUCKET, controls_key, state_key
from sensorguard.service.commands import AlarmControls
from sensorguard.service.logs import RateLimiter, counted

log = logging.getLogger(__name__)

STATE_FLUSH_S = 0.5  # queued per-asset states and controls are written this often
HANDOVER_WRITE_S = 10.0  # a hand-over's writes are tried again this long while the bucket fails
RETRY_S = 0.5
REFUSING_SAID_S = 10.0  # the state bucket refusing writes this long (past a leader election) is warned of
HANDED_KEPT = 10_000  # assets whose controls hand-overs wrote, remembered for a command's answer (newest kept)


class StateSync:
    """The queue of states and controls to write, and the writer; :meth:`open` once connected."""

    def __init__(self, controls: AlarmControls | None, serves: Callable[[str], bool],
                 coming: Callable[[str], bool] = lambda asset: False) -> None:
        self.controls = controls
        self.serves = serves  # whether an asset is this worker's: only its owner writes its controls
        self.coming = coming  # whether an asset's partition is ours but not served now (taken over, lease unsure)
        self.outbox: dict[str, bytes | None] = {}  # asset -> state to write (None: delete)
        self.controls_dirty: set[str] = set()  # assets whose controls to write
        self.leaving: set[str] = set()  # assets being handed over: their states are no longer passed on
        self._bucket: Any = None
        self._js: Any = None  # (open)
        self._lock: asyncio.Lock | None = None
        self._controls_lock: asyncio.Lock | None = None  # (a flush's controls part; a command's write waits for it)
        self._handed: dict[str, float] = {}  # asset -> when a clean hand-over began writing its controls (monotonic)
        self._handing: dict[str, asyncio.Event] = {}  # assets a hand-over is writing now -> set when it is done
        self._refusing_since: float | None = None  # monotonic: the first failed write since the last that worked
        self._refused = 0  # failed writes since then
        self._refused_last = 0.0  # monotonic: the latest of them
        self._limiter = RateLimiter(60.0)

    def open(self, bucket: Any, js: Any = None) -> None:
        """Write to ``bucket``; ``js``: the JetStream manager its keys are removed through (None: a
        KV delete, whose marker stays)."""
        self._bucket = bucket
        self._js = js
        self._lock = asyncio.Lock()
        self._controls_lock = asyncio.Lock()

    async def _remove(self, key: str) -> None:
        """Remove ``key`` from the state bucket, leaving nothing behind: a KV delete leaves a marker
        that the bucket (no TTL) keeps for good, one for every asset whose state or controls ever
        ended, listed and read again by every takeover (``stream_subjects``, ``_adopt_controls``).
        Purging the key's subject removes it whole; readers take both for a key not there."""
        if self._js is None:
            await self._bucket.delete(key)
        else:
            await self._js.purge_stream(f"KV_{STATE_BUCKET}", subject=f"$KV.{STATE_BUCKET}.{key}")

    def queue(self, states: dict[str, bytes | None]) -> None:
        """States to write (loop thread: schedule it with ``call_soon_threadsafe``)."""
        self.outbox.update(states)

    def mark(self, asset: str) -> None:
        """``asset``'s controls changed (loop thread: schedule it with ``call_soon_threadsafe``)."""
        self.controls_dirty.add(asset)

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every ``STATE_FLUSH_S`` until ``stopping``; a flush that fails is logged (once a
        minute) and the next one goes on: one that raised ended the writer, unsaid until the stop,
        and nothing was written to the bucket from then on while the worker served (a review)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), STATE_FLUSH_S)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - a bug must not end the writer (the full write every 30 s catches up)
                if (count := self._limiter.hit("flush")) is not None:
                    log.exception("cluster: writing the states and controls to the state bucket failed (%d failed "
                                  "flushes since the last line); the next flush tries again", count)

    async def flush(self) -> None:
        """Write the queued controls and states (a state None: delete, the asset's state ended) of
        the assets this worker still serves."""
        if self._lock is None or self._controls_lock is None:
            return
        async with self._lock:
            async with self._controls_lock:
                dirty, self.controls_dirty = self.controls_dirty, set()
                for asset in dirty:
                    try:
                        if not self.serves(asset):  # another worker's now (a stale change): not ours to write
                            if self.coming(asset):  # ours, not served for a moment: written once it is again
                                self.controls_dirty.add(asset)
                            continue
                        if not await self.write_controls(asset):
                            self.controls_dirty.add(asset)  # tried again next time
                    except Exception:  # noqa: BLE001 - one asset's bug: the rest of the batch was lost with it
                        self.controls_dirty.add(asset)
                        self._unexpected("controls", asset)
            out, self.outbox = self.outbox, {}
            for asset, data in out.items():
                try:
                    if not self.serves(asset):  # being given up: a clean hand-over writes its newest state (from
                        if asset in self.leaving or self.coming(asset):  # here, on a timeout); kept while being
                            self.outbox.setdefault(asset, data)  # taken over too. Else not ours: dropped, (kept,
                        continue  # it was written over the newer state of a partition that came back here)
                    if not await self._write_state(asset, data) and asset not in self.leaving:
                        self.outbox.setdefault(asset, data)
                except Exception:  # noqa: BLE001 - as above
                    self.outbox.setdefault(asset, data)
                    self._unexpected("state", asset)

    def _unexpected(self, what: str, asset: str) -> None:
        """An error no bucket refusal explains (a bug) while writing ``asset``'s ``what``: logged with its
        traceback, once a minute; the asset is tried again at the next flush, and the rest of the
        batch is written meanwhile (one that raised lost the batch's other changed controls)."""
        if (count := self._limiter.hit("unexpected")) is not None:
            log.exception("cluster: writing the %s of %s to the state bucket failed (%d such errors since the "
                          "last line); tried again at the next flush", what, asset, count)

    async def _write_state(self, asset: str, data: bytes | None) -> bool:
        """Put (None: delete) ``asset``'s state in the state bucket; whether it was written."""
        try:
            if data is None:
                await self._remove(state_key(asset))
            else:
                await self._bucket.put(state_key(asset), data)
        except Exception as exc:  # noqa: BLE001 - the bucket may be electing a leader
            self._failed("state", asset, exc)
            return False
        self._refusing_since = None  # (a write worked: no refusal spell goes on)
        return True

    def _failed(self, what: str, asset: str, exc: BaseException) -> None:
        """A write the bucket refused: logged at debug (a leader election fails a few for a second or
        two); once it has refused every write for ``REFUSING_SAID_S``, warned once a minute. Only at
        debug, a bucket out of space or of quorum for hours left the states of the assets moved since
        unwritten, and a new owner took older ones, with nothing said (a review)."""
        log.debug("cluster: saving the %s of %s: %s", what, asset, exc)
        now = time.monotonic()
        if self._refusing_since is None or now - self._refused_last > REFUSING_SAID_S:  # (nothing tried for that
            self._refusing_since, self._refused = now, 0  # long: a refusal not tried again ended no spell, and a
        self._refused += 1  # lone one hours later was said as refusals all along)
        self._refused_last = now
        if now - self._refusing_since >= REFUSING_SAID_S and self._limiter.hit("refused") is not None:
            log.warning("cluster: the state bucket has refused every write for %.0f s (%s; the latest, the %s of "
                        "%s: %s): they are tried again at each flush, and a worker taking an asset over meanwhile "
                        "takes its last state written", now - self._refusing_since,
                        counted(self._refused, "write"), what, asset, str(exc) or type(exc).__name__)

    async def _until_written(self, assets: Iterable[str], write: Callable[[str], Awaitable[bool]]) -> set[str]:
        """``write`` each asset, trying the failed ones again for up to ``HANDOVER_WRITE_S``; those
        still not written."""
        left = set(assets)
        deadline = asyncio.get_running_loop().time() + HANDOVER_WRITE_S
        while True:
            left = {asset for asset in left if not await write(asset)}
            if not left or asyncio.get_running_loop().time() >= deadline:
                return left
            await asyncio.sleep(RETRY_S)

    async def hand_over(self, states: dict[str, bytes | None]) -> int:
        """Write the states of assets handed over, trying again while the bucket fails (for up to
        ``HANDOVER_WRITE_S``); how many could not be written (logged). A failed write was dropped:
        its next owner adopted an older state (an alert that had cleared came back up)."""
        if self._bucket is None:  # never opened: nothing can be written
            return len(states)
        left = await self._until_written(states, lambda asset: self._write_state(asset, states[asset]))
        if left:
            log.warning("cluster: the states of %s could not be handed over (e.g. %s)", counted(len(left), "asset"),
                        min(left))
        return len(left)

    async def hand_over_controls(self, leaving: Callable[[str], bool], write: bool) -> None:
        """The controls of the assets ``leaving`` this worker: written for their next owner (with
        ``write``; a clean hand-over, tried again while the bucket fails, as :meth:`hand_over`) or
        not at all (it holds them now), then forgotten here."""
        if self.controls is None:
            return
        held = {asset for asset in self.controls.assets() if leaving(asset)}
        self.controls_dirty -= held
        if write:  # (not under _controls_lock: the hand-overs ran one at a time, commands' writes behind them)
            started, done = time.monotonic(), asyncio.Event()
            self._handing.update(dict.fromkeys(held, done))
            try:
                left = await self._until_written(held, self.write_controls)
                for asset in sorted(left):
                    log.warning("cluster: the controls of %s could not be handed over", asset)
                for asset in held - left:
                    self._handed.pop(asset, None)
                    self._handed[asset] = started
                while len(self._handed) > HANDED_KEPT:
                    self._handed.pop(next(iter(self._handed)))
            finally:
                for asset in held:
                    if self._handing.get(asset) is done:
                        del self._handing[asset]
                done.set()
        self.controls.forget(held)

    async def write_controls_now(self, asset: str, changed: float) -> bool:
        """:meth:`write_controls` between flushes (a command's change, made by ``changed``, monotonic
        time, before its answer); whether the bucket holds it. Only while this worker serves the
        asset (written from here after a hand-over, the forgotten controls deleted the next owner's
        key): handed over since, it holds it if a clean hand-over wrote the asset's controls after the
        change (one under way is waited for); lost (a lease lapsed, nothing written) or being taken
        over, not (yet)."""
        if self._controls_lock is None:
            return False
        async with self._controls_lock:
            if self.serves(asset):
                return await self.write_controls(asset)
        if (handing := self._handing.get(asset)) is not None:
            await handing.wait()
        return not self.coming(asset) and self._handed.get(asset, -math.inf) >= changed

    async def write_controls(self, asset: str) -> bool:
        """Put ``asset``'s controls in the state bucket (delete the key when it has none); whether
        it was written."""
        if self.controls is None or self._bucket is None:
            return True
        doc = self.controls.export(asset)
        try:
            if doc is None:
                await self._remove(controls_key(asset))
            else:
                await self._bucket.put(controls_key(asset), json.dumps(doc, separators=(",", ":")).encode())
        except Exception as exc:  # noqa: BLE001 - the bucket may be electing a leader
            self._failed("controls", asset, exc)
            return False
        self._refusing_since = None  # (a write worked: no refusal spell goes on)
        return True
