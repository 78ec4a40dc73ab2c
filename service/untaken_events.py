"""Sensor events of readings that were not taken into a window, and what a primed buffer leaves open.

An asset none of whose readings was taken yet (all dropped as ``missing_channel``) announces no
fault and holds no slot: junk with one channel left out and another out of range took
``max_assets`` slots, each with a ``sensor_fault`` event and a retained state (a walk). Its watch
goes on as offline's does; what it opened or closed is held here (:func:`defer`) and told with
its first reading taken, if still so (:func:`told_on_return`). Plain functions over the
:class:`~sensorguard.service.windows.Buffers`' dictionaries, so the hot path keeps its own state.

>>> opened = SensorEvent("out_of_range", "a", True, 1.0, 9.0)
>>> deferred = {}
>>> defer(deferred, [opened], {"a": 0})
>>> [e.kind for e in told_on_return(deferred, was_open={("out_of_range", 0)}, ts=2.0)]
['silent', 'out_of_range']
>>> fresh = {}
>>> defer(fresh, [opened, opened._replace(fault=False, ts=1.5)], {"a": 0}); fresh
{}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sensorguard.service.cleaning import NAN
from sensorguard.service.sensors import SensorEvent

Key = tuple[str, int]  # (kind, channel's column)


def defer(deferred: dict[Key, SensorEvent], events: list[SensorEvent], index: Mapping[str, int]) -> None:
    """Hold ``events`` (in the order they came) of an asset not taken yet: the latest of each fault
    kind and channel, an open and then its close cancelling (nothing to tell of it)."""
    for event in reversed(events):  # (newest first, as they are popped off the queue's end)
        key = (event.kind, index[event.channel]) if event.channel is not None else None
        if key is not None and deferred.pop(key, None) is None:
            deferred[key] = event


def told_on_return(deferred: dict[Key, SensorEvent], was_open: set[Key], ts: float) -> list[SensorEvent]:
    """What an asset's first reading taken tells before its own events: the end of its silence, then
    the held faults still so before that reading (``was_open``: the watch's open faults then; after
    its step, an open and its close in one reading told the close alone: a review)."""
    told = [SensorEvent("silent", None, False, ts, NAN)]
    for key, event in reversed(deferred.items()):
        if (key in was_open) == event.fault:
            told.insert(1, event)
    return told


def left_open(events: Iterable[SensorEvent]) -> list[dict]:
    """The channel faults ``events`` leave open, as ``OpenFaults.saved`` lists them: ``[{"kind",
    "channel", "since", "value"}]`` (a primed buffer's: the previous owner announced them, yet the
    new owner's retained state must list them)."""
    opened: dict[tuple[str, str | None], SensorEvent] = {}
    for event in events:
        if event.kind != "silent":
            if event.fault:
                opened[(event.kind, event.channel)] = event
            else:
                opened.pop((event.kind, event.channel), None)
    return [{"kind": e.kind, "channel": e.channel, "since": e.ts, "value": e.value} for e in opened.values()]
