"""Taking a partition's assets' state over from the cluster's state bucket (cluster mode).

The state bucket holds each asset's alert and drift state with its last scored window (the
cadence to continue) and, under ``=controls.<asset>``, its maintenance, shelving and recent
alerts (for acknowledgements). :class:`StateAdoption` is the part of
:class:`~sensorguard.service.takeover.Takeover` that reads them back for a partition taken over:
the assets the window stream lists, those silent longer than it keeps readings (found in the
bucket itself), and their controls; it purges the delete markers an older version left. A mixin,
as the rest of the takeover's steps share its connection and the partition's asset list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from sensorguard.service.assets import AssetAlerts
from sensorguard.service.cluster import (
    CONTROLS_KEYS,
    STATE_BUCKET,
    key_asset,
    partition_of,
    state_key,
)
from sensorguard.service.commands import AlarmControls
from sensorguard.service.logs import counted, some
from sensorguard.service.payload import valid_asset
from sensorguard.service.state_entry import StateError, decode_asset, faults_in, guard_of, past_in
from sensorguard.service.stream_reads import stream_subjects

log = logging.getLogger("sensorguard.service.takeover")  # (the takeover's lines, as before the split)

KEYS_LISTED_S = 60.0  # the state bucket's keys, listed for the partitions taken meanwhile (_bucket_only)


@dataclass
class StateKeys:
    """The state bucket's keys as a worker last listed them (``at``: monotonic), for
    :meth:`Takeover._bucket_only`; mutable, one per worker, shared by its takeovers."""

    at: float = -math.inf
    keys: list[str] = field(default_factory=list)
    _lock: asyncio.Lock | None = field(default=None, repr=False)
    _loop: Any = field(default=None, repr=False)

    def lock(self) -> asyncio.Lock:
        """Held while listing: the partitions a worker takes at once run their takeovers together,
        and those that came while the first one listed listed the bucket too (one per event loop:
        a lock is bound to the loop it first waited on)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock


class StateAdoption:
    """The state bucket's side of a takeover (a mixin of :class:`~sensorguard.service.takeover.Takeover`,
    which owns the attributes declared here)."""

    _nc: Any
    _js: Any
    _states: Any
    alerts: AssetAlerts
    controls: AlarmControls | None
    _listed: StateKeys

    async def _bucket_only(self, k: int, partitions: int, listed: set[str]) -> list[str]:
        """Partition ``k``'s assets whose state the state bucket holds but not ``listed`` (the window
        stream's): silent longer than it keeps readings (``Layout.windows_max_age_s``). Their state is
        taken over all the same: a silence awaited (their return tells ``sensor_ok``), a drift
        baseline; left behind, their keys stayed in the bucket for good, owned by no worker."""
        if not partitions:
            return []
        # one listing for the partitions taken within KEYS_LISTED_S (a worker starting takes them all at
        # once, and each listed the whole bucket: its keys hold no partition; a review). A key written
        # since is a live asset's, which the window stream lists: those sought here are long silent
        async with self._listed.lock():  # (the takeovers of the partitions taken at once wait for one listing)
            now = time.monotonic()
            if now - self._listed.at > KEYS_LISTED_S:
                prefix = f"$KV.{STATE_BUCKET}."
                found = await stream_subjects(self._nc, f"KV_{STATE_BUCKET}", prefix + ">")
                self._listed.at, self._listed.keys = now, [subject[len(prefix):] for subject in found]
        keys = self._listed.keys
        return sorted(asset for key in keys if not key.startswith(CONTROLS_KEYS[:-1])
                      and (asset := key_asset(key)) not in listed and valid_asset(asset)
                      and partition_of(asset, partitions) == k)

    async def _adopt(self, assets: list[str], newest: dict[str, float]
                     ) -> tuple[dict[str, tuple[float | None, float | None] | None], dict[str, dict[str, float]],
                                dict[str, list[dict]]]:
        """Take over the assets' alert and drift state from the state bucket; each asset's last
        scored window's time on the hop grid (the cadence to continue) and of the last window its
        state holds, when that came after (None for an asset silent there: it is not primed).
        ``newest``: each asset's newest reading in the window stream: one after its silence came back
        on the old owner before the bucket heard (it is adopted live, not silent). And per asset, its
        channels walked past their sensor limits, with their last plausible values (:func:`along_walk`),
        and its open channel faults (:func:`faults_in`: its watch resumes them as the readings are primed)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        anchors: dict[str, tuple[float | None, float | None] | None] = {}
        walked: dict[str, dict[str, float]] = {}
        faults: dict[str, list[dict]] = {}
        up: list[str] = []  # alerts taken over up: said (after a kill -9, "took partition 3" alone: a walk)
        for asset in assets:
            try:
                entry = await self._states.get(state_key(asset))
            except (KeyNotFoundError, KeyDeletedError) as exc:
                await self._purge_marker(state_key(asset), exc)
                continue
            try:
                alert, drift, window_ts, announced, judged_ts, channels, silence = decode_asset(entry.value or b"")
                if silence is not None and newest.get(asset, -math.inf) > silence[0]:
                    silence = None
            except StateError as exc:
                log.warning("cluster: the saved state of %s is unusable (%s): it starts afresh", asset, exc)
                continue
            # (a silent one, None, is not primed: its first reading here tells its return, which a primed
            anchors[asset] = (window_ts, judged_ts) if silence is None else None  # buffer swallowed: a review)
            self.alerts.adopt(asset, alert, drift, announced, window_ts, judged_ts, channels, silence)
            if alert.status == "alerting":
                up.append(f"{asset} ({alert.alert_id})")
            if silence is None and (past := past_in(entry.value or b"")):
                walked[asset] = past
            if silence is None and (carried := faults_in(entry.value or b"")):
                faults[asset] = carried
            if self.alerts.recorder is not None and (until := guard_of(entry.value or b"")) is not None:
                self.alerts.recorder.band(asset, until)  # (the fault's tail after its clear is no normal data)
        if up:
            log.info("cluster: took over %s with an alert up, kept under its id: %s", counted(len(up), "asset"),
                     some(up, quote=False))
        return anchors, walked, faults

    async def _adopt_controls(self, k: int, partitions: int) -> None:
        """Take over the maintenance, shelving and acknowledgeable alerts of partition ``k``'s
        assets, those that never sent a reading included (a maintenance started before)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        prefix = f"$KV.{STATE_BUCKET}."
        for subject in await stream_subjects(self._nc, f"KV_{STATE_BUCKET}", prefix + CONTROLS_KEYS):
            key = subject[len(prefix):]
            asset = key_asset(key)
            if partition_of(asset, partitions) != k:
                continue
            try:
                entry = await self._states.get(key)
            except (KeyNotFoundError, KeyDeletedError) as exc:  # ended (or expired) since the listing
                await self._purge_marker(key, exc)
                continue
            if not entry.value:
                continue
            try:
                self.controls.adopt(asset, json.loads(entry.value))
            except ValueError as exc:
                log.warning("cluster: the saved controls of %s are unusable (%s): none taken over", asset, exc)

    async def _purge_marker(self, key: str, missing: Exception) -> None:
        """``key`` read as deleted: purge its delete marker, up to and including it (a write after it
        stays). A version before this one deleted an ended key, leaving a marker the bucket (no TTL)
        keeps for good; an upgraded cluster kept every one, and each takeover listed and read them all
        back (``_bucket_only``, :meth:`_adopt_controls`), one round trip each, at every takeover."""
        entry = getattr(missing, "entry", None)
        if entry is None or getattr(missing, "op", None) not in ("DEL", "PURGE") or not entry.revision:
            return  # (not there at all: nothing to purge)
        try:
            await self._js.purge_stream(f"KV_{STATE_BUCKET}", subject=f"$KV.{STATE_BUCKET}.{key}",
                                        seq=entry.revision + 1)
        except Exception as exc:  # noqa: BLE001 - a marker left is only a round trip more at the next takeover
            log.debug("cluster: purging the delete marker of %s: %s", key, exc)
