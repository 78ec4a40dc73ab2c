"""Reading the cluster's JetStream streams as the server describes them (cluster mode).

nats-py's ``stream_info`` drops the fields a takeover and the watchdog need (a source's position,
the paging of a long subject list), so these ask ``$JS.API.STREAM.INFO`` directly:
:func:`stream_info` (the reply as JSON), :func:`stream_subjects` (every page of a stream's
subjects: a bucket's keys, an asset's readings) and :func:`readings_waiting` (what the last
member to stop says is left for the next).
"""

from __future__ import annotations

import json
from typing import Any

from sensorguard.service.cluster import READINGS_STREAM, REQUEST_S
from sensorguard.service.logs import counted, first_line, span
from sensorguard.service.nats_connect import ClusterError


async def stream_info(nc: Any, stream: str, request: dict | None = None, timeout: float = REQUEST_S) -> dict:
    """``STREAM.INFO`` of ``stream`` as the server sends it (JSON: the sources' positions and the
    paging fields that nats-py's ``StreamInfo`` drops); :class:`ClusterError` for an error reply."""
    body = json.dumps(request).encode() if request else b""
    reply = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", body, timeout=timeout)).data)
    if "error" in reply:
        raise ClusterError(f"stream {stream}: {reply['error'].get('description', reply['error'])}")
    return reply


async def stream_subjects(nc: Any, stream: str, subjects: str) -> dict[str, int]:
    """The subjects of ``stream`` matching ``subjects`` that hold messages, with their counts,
    every page of them (nats-py's ``stream_info`` reads only the first, 100,000 subjects).

    A bucket's keys are listed this way, not with a watch: nats-py's watch can end its first
    replay before every entry came (nats-io/nats.py#842), and a rebuild would miss controls."""
    found: dict[str, int] = {}
    while True:
        reply = await stream_info(nc, stream, {"subjects_filter": subjects, "offset": len(found)})
        before = len(found)
        found.update((reply.get("state") or {}).get("subjects") or {})
        if len(found) >= reply.get("total", 0):
            return found
        if len(found) == before:  # a page with nothing new (a server that ignores the offset): no end otherwise
            raise ClusterError(f"stream {stream}: listed {before} of its {reply['total']} subjects, then no more")


async def readings_waiting(nc: Any) -> str:
    """What the last member says as it stops: nothing takes the readings now, and the readings
    stream keeps them for the next member only as long as its limits allow (a cluster stopped for
    maintenance said only "stopped", and the operator had to ask NATS how long they had)."""
    try:
        info = await stream_info(nc, READINGS_STREAM, timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - said without the count
        return (f"the last member stopped: readings wait in stream {READINGS_STREAM} until a member starts "
                f"(how many not read: {first_line(exc) or type(exc).__name__})")
    waiting = int((info.get("state") or {}).get("messages", 0))
    config = info.get("config") or {}
    age_s, most = int(config.get("max_age", 0)) / 1e9, int(config.get("max_bytes", -1))
    kept = f"each kept {span(age_s)}" if age_s > 0 else "kept with no age limit"
    kept += f", the stream at most {most:,} bytes" if most > 0 else ""
    return (f"the last member stopped: {counted(waiting, 'reading')} wait in stream {READINGS_STREAM}, and "
            f"those arriving wait with them until a member starts ({kept})")
