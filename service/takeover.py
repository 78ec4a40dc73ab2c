"""Taking a partition over in cluster mode: its assets' windows, alert and drift state, controls.

A new owner of a partition (a worker joined, died or stopped) must score its assets as if nothing
had moved: the next window as complete and due where it would have been, no reading scored twice,
an alert still up, a maintenance still on. Everything it needs is in JetStream:

- the readings stream holds what no owner took yet: each asset's first reading there is the *cut*,
  the first this worker takes;
- the window stream holds each asset's last ``--keep`` readings: those before the cut go into the
  buffer (:meth:`Ingest.prime`), without being counted, recorded or scored again;
- the state bucket holds each asset's alert and drift state with its last scored window (the
  cadence to continue) and, under ``=controls.<asset>``, its maintenance, shelving and recent
  alerts (for acknowledgements).

The event loop's side of :class:`~sensorguard.service.jetstream.ClusterSource`; the scorer never
sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_right
from typing import Any

from sensorguard.service.assets import AssetAlerts
from sensorguard.service.bundle_checks import silence_after
from sensorguard.service.cluster import (
    IN_STREAM,
    READINGS_ROOT,
    READINGS_STREAM,
    WINDOWS_ROOT,
    WINDOWS_STREAM,
    asset_of,
    origin_seq,
)
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.ingest import Ingest
from sensorguard.service.payload import Parsed, parse_message, valid_asset
from sensorguard.service.sensors import resumed_faults
from sensorguard.service.state_adoption import StateAdoption, StateKeys
from sensorguard.service.stream_reads import stream_info, stream_subjects
from sensorguard.service.walked_channels import along_walk

log = logging.getLogger(__name__)

REBUILD_WAIT_S = 5.0  # the window stream's next message, while rebuilding, at most this long
QUIET_BATCH = 64  # stored-time requests in flight at once (Takeover._gone_quiet)
LAG_POLL_S = 0.2  # how often a rebuild looks whether one stream caught up with the other
LAG_WARN_S = 5.0  # a rebuild waiting this long for it says so
PRIME_WARM = 64  # readings replayed before the last window's (the rate estimate's weight on its start: 2e-4)
UNTAKEN_LOOKAHEAD = 16  # unreadable readings skipped at most when looking for an asset's first one


class Takeover(StateAdoption):
    """What a new owner reads to take partitions over; one per rebuild."""

    def __init__(self, nc: Any, states: Any, settings: Settings, ingest: Ingest, alerts: AssetAlerts,
                 controls: AlarmControls | None, listed: StateKeys | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._states = states
        self.settings = settings
        self.ingest = ingest
        self.alerts = alerts
        self.controls = controls
        self._listed = listed or StateKeys()  # the state bucket's keys, shared by a worker's takeovers

    async def rebuild(self, k: int, partitions: int, halt: asyncio.Event | None = None) -> tuple[list[str], int]:
        """Rebuild partition ``k``'s assets' windows and take their state over; (assets, readings
        primed; nothing when ``halt`` came first).

        Per asset of the partition
        in the window stream, the first reading still in the readings stream is the first one this
        worker must take (everything before it was acknowledged, so taken, by the previous owner);
        the last ``window`` readings before it go into the buffer (:meth:`Ingest.prime`; from the
        window before the last one the old owner scored, when the state bucket names it, so the
        cadence continues): the next window is as complete, and due where it would have been, as
        if nothing had moved, and those readings, should they come again, are repeats
        (``duplicate_ts``) instead of being scored twice.

        Both streams copy the input stream, each at its own pace: after a node died one may lag the
        other by a minute (:mod:`watchdog`). A reading in the window stream but not yet copied into
        the readings stream would look taken, be primed, and be refused as a repeat when it came:
        so only readings the readings stream has copied too are primed. And a reading the previous
        owner took from the readings stream before the window stream copied it would be missing
        from the window, for good: so the rebuild first waits for the window stream to copy as far
        as the readings stream had (:meth:`_caught_up`, each way).
        """
        root = f"{WINDOWS_ROOT}.{k}."
        halt = halt or asyncio.Event()
        taken = await self._copied(READINGS_STREAM)  # the previous owner took readings up to here at most
        if not await self._caught_up(k, WINDOWS_STREAM, taken, READINGS_STREAM, halt):
            return [], 0
        subjects = await stream_subjects(self._nc, WINDOWS_STREAM, f"{root}>")
        # a reading of a bad asset id (pump@7) is in the stream too, refused as bad_asset when it was
        # read: its id is no state key, and the bucket's refusal stopped the whole partition (a walk)
        subjects = {s: n for s, n in subjects.items() if valid_asset(asset_of(s)[1])}
        copied = await self._copied(WINDOWS_STREAM)  # read after the listing: every reading listed is at most here
        if not await self._caught_up(k, READINGS_STREAM, copied, WINDOWS_STREAM, halt):
            return [], 0
        cuts, firsts = {}, {}
        for subject in subjects:
            cuts[subject] = await self._first_ts(READINGS_STREAM, f"{READINGS_ROOT}.{k}.{subject[len(root):]}")
            firsts[subject] = await self._first_ts(WINDOWS_STREAM, subject)
        # Readings before the cut exist when the window stream's first one is older (a fresh asset's
        # first reading is the cut); when it is newer, more arrived since than --keep holds.
        quiet = await self._gone_quiet(subjects, cuts)
        kept = await self._read_windows(k, {subject: cuts[subject] for subject in subjects
                                            if firsts[subject] < cuts[subject] and subject not in quiet},
                                        sum(subjects.values()), copied)
        short = [subject for subject in subjects if firsts[subject] > cuts[subject]]
        if short:
            log.warning("cluster: partition %d: the window stream no longer reaches back to where %s "
                        "previous owner stopped (more readings arrived since than cluster init --keep): their "
                        "windows start empty", k, _assets(len(short)))
        assets = [asset_of(subject)[1] for subject in subjects]
        found = await self._bucket_only(k, partitions, set(assets))
        newest = {asset_of(subject)[1]: max(ts for ts, _ in samples) for subject, samples in kept.items() if samples}
        anchors, walked, faults = await self._adopt(assets + found, newest)
        # those the model served here cannot judge (a rolling upgrade: a channel it lacks) are told ended, as
        # a restart's: dropped unsaid, a subscriber pairing faults with their ends held them open for good
        judged = {asset: max(t for t in saved if t is not None) for asset, saved in anchors.items()
                  if saved is not None and any(t is not None for t in saved)}
        faults, unjudged = resumed_faults(faults, self.ingest.buffers.sensors, judged)
        # a key the bucket only listed holds an asset when it held a state: an older version's delete
        # marker (purged by _adopt) is none, and the first takeover after an upgrade counted every
        # marker of its partition as an asset rebuilt, and kept them as its own (an upgrade walk)
        assets += [asset for asset in found if asset in anchors]
        with self.ingest.cond:  # not primed: their next reading is newer than the saved values (a restart's case)
            for asset in {asset_of(subject)[1] for subject in short} & walked.keys():
                if asset not in self.ingest.buffers:
                    self.ingest.buffers.resumed_past[asset] = walked[asset]
        if self.controls is not None and partitions:
            await self._adopt_controls(k, partitions)
        window, primed, partial = self.ingest.buffers.window, 0, []
        # the replay must begin before the previous owner last saved the asset's state (its last
        # scored window), or its sensor watch starts from readings later than any value the state
        # vouches for: a channel walked past its limits since was told an out_of_range sensor fault,
        # held and left out of the score, and an alert up cleared (a walk: --keep 64 at 10 Hz)
        behind = sorted(asset for subject, samples in kept.items()
                        if samples and (saved := anchors.get(asset := asset_of(subject)[1])) and saved[0] is not None
                        and samples[0][0] > saved[0])
        if behind:
            log.warning("cluster: partition %d: the window stream no longer reaches back to where %s "
                        "state was last saved (%s%s): their windows and sensor watches start after it (a channel "
                        "walked past its limits since may be told a sensor fault); cluster init --keep must "
                        "cover a window and the readings an asset sends in 40 s", k, _assets(len(behind)),
                        ", ".join(behind[:3]), f" and {len(behind) - 3} more" if len(behind) > 3 else "")
        for subject, samples in kept.items():
            asset = asset_of(subject)[1]
            if asset in anchors and anchors[asset] is None:  # silent there, awaited: its buffer goes once it
                with self.ingest.cond:  # taught the cleaner the asset's rate (kept for its return, as one
                    self.ingest.prime(asset, prime_span(samples, None, window), None, label=False)  # worker's
                    self.ingest.buffers.forget(asset)  # is), so its next reading starts it and tells its return
                continue
            anchor, judged = anchors.get(asset) or (None, None)
            span = prime_span(samples, anchor, window)
            past = along_walk(walked.get(asset, {}), span, self.ingest.buffers.sensors)
            taken, opened = self.ingest.prime(asset, span, anchor, judged, past, faults=faults.get(asset))
            primed += taken
            if opened:  # listed in its states at once, as a restart restores them (the previous owner's to announce)
                self.alerts.restore_faults({asset: opened})
            if len(span) < window and len(samples) >= 2:
                partial.append((subject, len(span)))
        primed_here = {asset_of(subject)[1] for subject in kept}
        for asset in sorted(set(faults) - primed_here):  # nothing primed (the window stream no longer reaches
            _, opened = self.ingest.prime(asset, [], None, faults=faults[asset])  # back): its first reading
            if opened:  # here resumes them, as a restart's does
                self.alerts.restore_faults({asset: opened})
        self.ingest.fault_closes(unjudged, "the model served here cannot judge them")
        if partial and (keep := await self._keep()) and any(subjects[s] >= keep for s, _ in partial):
            # the stream held all it keeps, yet fewer than a window before the cut (a --keep of 33 for a
            # window of 32: 20 readings, said nowhere; a walk)
            fewest = min(n for _, n in partial)
            log.warning("cluster: partition %d: %s windows were rebuilt from fewer readings than the window "
                        "(%d of %d at the fewest): the window stream keeps %d readings per asset, too few to cover "
                        "what an asset sends during a takeover (cluster init --keep)", k, _assets(len(partial)), fewest,
                        window, keep)
        return assets, primed

    async def _gone_quiet(self, subjects: dict[str, int], cuts: dict[str, float]) -> set[str]:
        """The subjects of assets silent for ``stale_after`` already: none of their readings waits
        in the readings stream, and the window stream stored their last one that long ago (its own
        clock: no sender's). They are not primed: their next reading restarts the window anyway (the
        gap is longer than any the cleaning fills), and primed, their silence was told again by each
        new owner, their stale state overwritten with a score of 0 and no channels (a walk)."""
        from nats.js.errors import NotFoundError

        since = time.time() - silence_after(self.settings.stale_after_s, self.ingest.buffers.policy)

        async def stored(subject: str) -> float:
            try:
                last = await self._js.get_last_msg(WINDOWS_STREAM, subject)
            except NotFoundError:
                return math.inf
            return math.inf if last.time is None else last.time.timestamp()

        idle = [subject for subject in subjects if cuts[subject] == math.inf]  # (none of its readings waits)
        quiet = set()
        for start in range(0, len(idle), QUIET_BATCH):  # (in flight together: one at a time added a
            batch = idle[start : start + QUIET_BATCH]  # round trip per asset to each takeover)
            quiet.update(s for s, t in zip(batch, await asyncio.gather(*map(stored, batch)), strict=True) if t < since)
        return quiet

    async def _keep(self) -> int:
        """The readings per asset the window stream keeps (``cluster init --keep``; 0: unknown)."""
        try:
            reply = await stream_info(self._nc, WINDOWS_STREAM)
        except Exception as exc:  # noqa: BLE001 - only a warning depends on it
            log.debug("window stream info: %s", exc)
            return 0
        return int((reply.get("config") or {}).get("max_msgs_per_subject") or 0)

    async def _copied(self, stream: str) -> int | None:
        """The input stream's sequence up to which ``stream`` copied it; None when it copies nothing
        or its server does not say (a source's ``seq``: newer servers, 2.15 here; without it nothing is
        waited for or filtered, as before this check existed)."""
        sources = (await stream_info(self._nc, stream)).get("sources") or []
        seq = sources[0].get("seq") if sources else None
        return int(seq) if seq else None

    async def _caught_up(self, k: int, stream: str, copied: int | None, ahead: str, halt: asyncio.Event) -> bool:
        """Wait until ``stream`` copied the input stream up to ``copied`` (where the ``ahead`` stream
        was); False when ``halt`` came first."""
        if copied is None:
            return True
        warn_at = time.monotonic() + LAG_WARN_S
        while (done := await self._copied(stream)) is None or done < copied:
            if time.monotonic() >= warn_at:  # again every minute while it lasts
                warn_at = time.monotonic() + 60.0
                # sources removed (by hand): it will never copy, and the line said only "waiting" (a review);
                # None is also a source that reports no position yet: only an empty list is said so
                cut = ""
                if done is None and not (await stream_info(self._nc, stream)).get("sources"):
                    cut = f"; {stream} has no source any more, so it never will: `sensorguard cluster init` restores it"
                log.warning("cluster: partition %d: waiting for %s to copy %s as far as %s has (sequence %d) "
                            "before taking its assets over%s", k, stream, IN_STREAM, ahead, copied, cut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), LAG_POLL_S)
            if halt.is_set():
                return False
        return True

    async def _first_ts(self, stream: str, subject: str) -> float:
        """Reading time of the first reading on ``subject`` in ``stream`` (inf: none)."""
        from nats.js.errors import NotFoundError

        seq = 1
        for _ in range(UNTAKEN_LOOKAHEAD):  # an unreadable message has no time: look at the next one
            try:
                message = await self._js.get_msg(stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return math.inf
            samples = self._parse(subject, message.data or b"").samples
            if samples:
                return min(sample.ts for sample in samples)
            seq = message.seq + 1
        return math.inf

    async def _read_windows(self, k: int, cuts: dict[str, float], total: int,
                            copied: int | None = None) -> dict[str, list]:
        """The window stream's readings of partition ``k`` older than each subject's cut, for the
        subjects in ``cuts``, read in one pass (at most ``total`` messages, through a callback:
        nats-py's ``next_msg`` costs a task and a timer per message); none copied from the input
        stream after its sequence ``copied`` (they may not be in the readings stream yet)."""
        from nats.js.api import DeliverPolicy

        kept: dict[str, list] = {subject: [] for subject in cuts}
        newest = math.inf if copied is None else copied
        if not cuts:
            return kept
        open_ = {subject for subject, cut in cuts.items() if cut < math.inf}  # until a reading at the cut shows
        whole = len(open_) < len(cuts)  # an asset with no untaken reading: everything it has is kept
        seen, done = 0, asyncio.Event()

        async def on_message(message: Any) -> None:
            nonlocal seen
            seen += 1
            cut = cuts.get(message.subject)
            if cut is not None and origin_seq(message.headers) <= newest:
                samples = self._parse(message.subject, message.data).samples
                kept[message.subject].extend((sample.ts, sample.values) for sample in samples if sample.ts < cut)
                if message.subject in open_ and any(sample.ts >= cut for sample in samples):
                    open_.discard(message.subject)
            if seen >= total or not (open_ or whole):
                done.set()

        sub = await self._js.subscribe(f"{WINDOWS_ROOT}.{k}.>", stream=WINDOWS_STREAM, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.ALL, cb=on_message)
        try:
            while not done.is_set():
                before = seen
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), REBUILD_WAIT_S)
                if seen == before and not done.is_set():
                    log.warning("cluster: partition %d: the window stream ended early; windows rebuilt in part", k)
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return kept

    def _parse(self, subject: str, data: bytes) -> Parsed:
        s = self.settings
        prefix = s.topic_prefix.strip("/")
        ignored = self.ingest.buffers.ignored if self.ingest is not None else frozenset()
        return parse_message(f"{prefix}/{asset_of(subject)[1]}/readings", data, prefix, s.max_payload_bytes,
                             s.max_samples_per_message, ignored)


def _assets(n: int) -> str:
    """``1 asset's``, ``2 assets'``: how the lines above count the assets they name (a walk: "1 assets'")."""
    return f"{n} asset's" if n == 1 else f"{n} assets'"


def prime_span(samples: list[tuple[float, Any]], anchor: float | None, window: int) -> list[tuple[float, Any]]:
    """The readings a new owner primes an asset's buffer with: the last window's, back to the last
    window the old owner scored (``anchor``: its end; it may be a grid row the cleaner filled, which
    no reading's time matches), and ``PRIME_WARM`` before them, so the cleaner's rate estimate and
    the sensor watch settle as the old owner's had (from a cold start, a few slow steps among the
    last window's readings refused one the old owner took)."""
    start = len(samples) - window
    if anchor is not None:
        start = min(start, bisect_right([ts for ts, _ in samples], anchor) - window)
    return samples[max(0, start - PRIME_WARM):]
