"""What a rejected reading's log line says beyond its reason: the stamp, value or channel at fault.

The parser (:mod:`sensorguard.service.payload`) and the buffers (:mod:`sensorguard.service.windows`)
return reasons only: they run on the network thread for every message. A log line is due at most
once per reason every few seconds (:mod:`sensorguard.service.ingest`), and only then does
:func:`explain` look at that message again, so "rejected reading: bad_ts" can say which stamp it
could not read, and "unknown_channel" which channel the model does not know, without costing the
readings that are fine.

>>> explain("bad_ts", b'{"ts": "yesterday", "values": {"t": 1}}', ["t"])
"ts 'yesterday' is not epoch seconds (2000..2200) or an ISO 8601 time"
>>> explain("unknown_channel", b'{"ts": 1700000000, "values": {"t": 1, "tmp": 2}}', ["t"])
"'tmp' is not one of the model's 1 channels ('t')"
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sensorguard.service.logs import some
from sensorguard.service.payload import NO_DATA, parse_ts
from sensorguard.service.publisher import iso

MAX_CHARS = 200  # a detail is a phrase, never a dump of the message
SHOWN = 3  # channels named before "and N more"


def explain(reason: str, payload: bytes, channels: Sequence[str], newest: float | None = None,
            floor: float | None = None) -> str:
    """A short phrase about ``payload``'s ``reason`` ('' when there is nothing to add); never raises.

    ``channels``: the model's; ``newest``: the asset's newest reading taken (epoch seconds);
    ``floor``: with no reading taken yet, the end of the asset's last window judged before the
    restart (:attr:`~sensorguard.service.windows.Buffers.floors`), which refuses the readings up
    to it: an ``out_of_order`` line after a restart named the stamp and nothing it was older than.
    """
    try:
        return _explain(reason, payload, channels, newest, floor)[:MAX_CHARS]
    except Exception:  # noqa: BLE001 - a log line's extra words must never cost the daemon
        return ""


def _explain(reason: str, payload: bytes, channels: Sequence[str], newest: float | None,
             floor: float | None) -> str:
    if reason == "too_large":
        return f"{len(payload):,} bytes"
    if reason in ("invalid_json", "not_object", "parse_error"):
        return f"the message starts {bytes(payload[:40])!r}"
    if reason == "bad_samples":  # the line said only "bad_samples" (a walk)
        items = json.loads(bytes(payload).decode("utf-8")).get("samples")
        return "samples is empty" if items == [] else f"samples is {_short(items)}, not a list of readings"
    samples = _samples(payload)
    if reason == "bad_ts":
        for sample in samples:
            if "ts" not in sample:
                return "no ts"
            if parse_ts(sample["ts"]) is None:
                return (f"ts {_short(sample['ts'])} is not epoch seconds (2000..2200) or an ISO 8601 time"
                        f"{_unit(sample['ts'])}")
    if reason == "bad_values":
        return next((why for why in map(_bad_values, samples) if why), "")
    if reason in ("unknown_channel", "missing_channel"):
        known = set(channels)
        for sample in samples:
            values = sample.get("values")
            if not isinstance(values, dict):
                continue
            if reason == "unknown_channel" and (extra := [k for k in values if k not in known]):
                return (f"{some(extra, SHOWN)} {'is' if len(extra) == 1 else 'are'} not one of the model's "
                        f"{len(channels)} channels ({some(list(channels), SHOWN)})")
            if reason == "missing_channel" and (gone := [c for c in channels if _missing(values.get(c))]):
                return f"no value for {some(gone, SHOWN)}, and none recent enough to carry forward"
    if reason in ("out_of_order", "duplicate_ts", "future_ts"):
        stamps = [ts for ts in (parse_ts(s.get("ts")) for s in samples) if ts is not None and ts == ts]
        if stamps:
            ts = _suspect(reason, stamps, newest if newest is not None else floor)
            said = f"ts {iso(ts)}" + (f", one of {len(stamps)} in the message" if len(stamps) > 1 else "")
            if reason == "future_ts":
                return f"{said}; the daemon's clock reads {iso(time.time())}"
            if newest is None and floor is not None:
                return f"{said}; not after {iso(floor)}, the end of the last window judged before the restart"
            return f"{said}; the asset's newest reading {iso(newest)}" if newest else said
    return ""


def _suspect(reason: str, stamps: list[float], newest: float | None) -> float:
    """The stamp of a batch that most likely drew ``reason``: the latest for ``future_ts``; for
    ``out_of_order`` one earlier than a stamp before it (or than the asset's newest), for
    ``duplicate_ts`` one repeated (or not after the newest). A batch's first stamp was named, most
    often the reading that was taken."""
    if reason == "future_ts":
        return max(stamps)
    seen: set[float] = set()
    latest = -float("inf")
    for ts in stamps:
        if (reason == "duplicate_ts" and ts in seen) or (reason == "out_of_order" and ts < latest):
            return ts
        seen.add(ts)
        latest = max(latest, ts)
    if newest is not None:
        for ts in stamps:
            if ts < newest or (reason == "duplicate_ts" and ts == newest):
                return ts
    return stamps[0]


def _unit(ts: object) -> str:
    """What a stamp too large for epoch seconds reads as in a finer unit (a gateway's ``Date.now()``
    sends milliseconds; ``score`` takes those by size in a file, the daemon seconds only)."""
    if type(ts) not in (int, float):
        return ""
    for unit, scale in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        if parse_ts(ts / scale) is not None:
            return f": epoch {unit}? send seconds ({ts / scale:.3f})"
    return ""


def _samples(payload: bytes) -> list[dict]:
    """The message's sample objects (one, or its ``samples``), as the parser reads them."""
    doc = json.loads(bytes(payload).decode("utf-8"))
    if not isinstance(doc, dict):
        return []
    items = doc.get("samples", [doc])
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _bad_values(sample: dict) -> str:
    values = sample.get("values")
    if not isinstance(values, dict) or not values:
        return "no values object" if values is None else f"values {_short(values)} is not an object of numbers"
    for name, value in values.items():
        if value is not None and (type(value) not in (int, float)):
            return f"{name!r} is {_short(value)}, not a number (null for a missing value)"
    return ""


def _missing(value: object) -> bool:
    """Absent, null, NaN or a no-data marker: what the cleaning carries forward (payload's rules)."""
    return value is None or (type(value) in (int, float) and not -NO_DATA < value < NO_DATA)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
