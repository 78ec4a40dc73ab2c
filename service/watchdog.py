"""Keep the partitioned streams copying the input stream after a NATS node died.

``SENSORGUARD_READINGS`` and ``SENSORGUARD_WINDOWS`` copy ``SENSORGUARD_IN`` through source
consumers that nats-server runs itself. When a node dies and a stream's new leader sets its source
up while the input stream has no leader yet, every failed try pushes the next one back further
(the server's retry backoff: 10, 20, 30 s... up to 2 minutes; measured here: readings reached the
partitions 35-38 s after they were published, and once more than 90 s). Readings then pile up in
the input stream, unseen by the workers, which are healthy and fetch nothing.

So one worker (the first member by name) looks every ``CHECK_S``: a stream whose source has been
silent (no contact, or the input stream holding a message more than ``STALL_S`` newer than the
stream's newest) for ``STALL_S`` is asked to step its leader down; the new leader sets the source
up at once. At most once per ``KICK_S`` per stream: a false alarm (the input stream also captures
non-reading topics under the prefix) costs one leader change. The times compared come from the
servers' clocks: keep them in sync (NTP), as Raft wants anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sensorguard.service.cluster import IN_STREAM, READINGS_STREAM, WINDOWS_STREAM
from sensorguard.service.payload import MAX_ASSET_LEVELS
from sensorguard.service.stream_reads import stream_info

log = logging.getLogger(__name__)

CHECK_S = 5.0  # how often the streams are looked at
STALL_S = 10.0  # a source silent this long is stalled
KICK_S = 30.0  # a stream's leader is asked to step down at most this often
REQUEST_S = 5.0  # a JetStream API request's timeout


async def watch_sources(nc: Any, acting: Callable[[], bool], stopping: asyncio.Event) -> None:
    """Until ``stopping``: while ``acting()``, step down a stream whose source stalled."""
    silent: dict[str, float] = {}  # stream -> since when its source looks stalled (monotonic)
    kicked: dict[str, float] = {}
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), CHECK_S)
        if stopping.is_set():
            return
        if not acting():
            silent.clear()
            continue
        try:
            # answers only with a leader: else a step-down is no help
            source = await stream_info(nc, IN_STREAM, timeout=REQUEST_S)
            reading = await _newest_is_reading(nc, source)
            for name in (READINGS_STREAM, WINDOWS_STREAM):
                now = time.monotonic()
                if not stalled(source, await stream_info(nc, name, timeout=REQUEST_S), reading):
                    silent.pop(name, None)
                    continue
                since = silent.setdefault(name, now)
                if now - since >= STALL_S and now - kicked.get(name, -math.inf) >= KICK_S:
                    log.warning("cluster: stream %s has not copied %s for %.0f s: asking its leader to step down, "
                                "so that a new one sources it again", name, IN_STREAM, now - since)
                    kicked[name] = now
                    silent.pop(name, None)
                    reply = json.loads((await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{name}", b"",
                                                         timeout=REQUEST_S)).data)
                    if "error" in reply:
                        log.warning("cluster: stream %s did not step down: %s", name,
                                    reply["error"].get("description", reply["error"]))
        except Exception as exc:  # noqa: BLE001 - the cluster may be electing leaders: look again next time
            log.info("cluster: checking that the streams copy %s: %s", IN_STREAM, exc or type(exc).__name__)


def stalled(source: dict, stream: dict, newest_is_reading: bool = True) -> bool:
    """Whether ``stream`` (JetStream's stream info, as JSON) looks cut off from ``source``'s new
    messages: no contact with its source for ``STALL_S``, or ``source``'s newest message, a
    reading, more than ``STALL_S`` newer than the stream's newest (the input stream also captures
    other topics under the prefix, which are not copied)."""
    active = [s.get("active", -1) for s in stream.get("sources") or []]
    if any(a is None or a < 0 or a > STALL_S * 1e9 for a in active):
        return True
    newest, copied = last_time(source), last_time(stream)
    return newest_is_reading and newest is not None and (copied is None or newest - copied > STALL_S)


def last_time(info: dict) -> float | None:
    """The time of the stream's newest message (epoch seconds), None when it never had one."""
    state = info.get("state") or {}
    if not state.get("last_seq"):
        return None
    head, _, fraction = str(state.get("last_ts", "")).rstrip("Z").partition(".")
    try:  # RFC 3339, nanoseconds at most (Python parses microseconds), UTC
        stamp = datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]}").replace(tzinfo=UTC)
    except ValueError:
        return None
    return stamp.timestamp() if stamp.year >= 2000 else None  # Go's zero time: no message kept


async def _newest_is_reading(nc: Any, info: dict) -> bool:
    """Whether the input stream's newest message is a reading (``<prefix>.<asset>.readings``)."""
    seq = (info.get("state") or {}).get("last_seq")
    if not seq:
        return False
    reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{IN_STREAM}", json.dumps({"seq": seq}).encode(),
                             timeout=REQUEST_S)
    subject = str((json.loads(reply.data).get("message") or {}).get("subject", ""))
    return subject.endswith(".readings") and subject.count(".") <= MAX_ASSET_LEVELS + 1  # one the streams copy


