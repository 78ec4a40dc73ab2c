"""Channels walked past their sensor limits, carried across a cluster takeover.

A value past a channel's learned limits is a sensor fault only if it jumped there
(:mod:`~sensorguard.service.sensors`); one that walked out is the process's. A new owner's watch
sees only the readings it replays (the last window and ``PRIME_WARM`` before it), so the previous
owner's state in the bucket carries each such channel's last plausible value (``past_limits``),
written again whenever one moves by half a ``jump`` (:func:`walk_marks`), and the new owner starts
its watch where the replay and that value place the walk (:func:`along_walk`).
"""

from __future__ import annotations

import math
from typing import Any

from sensorguard.service.sensors import SensorRules


def along_walk(saved: dict[str, float], samples: list[tuple[float, Any]], rules: SensorRules | None
               ) -> dict[str, float]:
    """The values a new owner's sensor watch starts from, for the channels its previous owner saw
    walk past their limits (``saved``: their last plausible values, from the state bucket). The
    replay begins at least a window and ``PRIME_WARM`` readings before that state was written:
    judged from the saved value, a walk faster than ``jump`` over the replay was told a sensor fault
    at its first reading, and one out beyond the saved value and back; judged from the limit (a
    fresh watch), one walked farther than ``jump`` before it. So a channel starts from its first
    replayed value when the replay runs from it to within ``jump`` of the saved value in steps
    shorter than ``jump`` (the path the previous owner took as the process's), else from the point
    of the way from the limit to the saved value nearest that first value (a sensor that jumped to a
    rail before the replay began: still a sensor fault)."""
    if not saved or rules is None:
        return {}
    out = {}
    for channel, value in saved.items():
        if channel not in rules.channels:
            continue
        lim = rules.limits[rules.channels.index(channel)]
        path = [v for _, values in samples if isinstance(values, dict)
                and isinstance(v := values.get(channel), float) and math.isfinite(v)]
        if not path or lim.jump is None:
            out[channel] = value
        elif _reaches(path, value, lim.jump):
            out[channel] = path[0]
        else:
            out[channel] = min(max(path[0], min(lim.low, value)), max(lim.high, value))
    return out


def _reaches(path: list[float], value: float, jump: float) -> bool:
    """Whether ``path`` comes within ``jump`` of ``value`` before any step of ``jump`` or more."""
    for i, v in enumerate(path):
        if i and abs(v - path[i - 1]) >= jump:
            return False
        if abs(v - value) < jump:
            return True
    return False


def walk_marks(past: dict[str, dict[str, float]], rules: SensorRules | None,
               before: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Per asset with channels walked half a ``jump`` or more past their limits, where each stood
    when it last moved by half its ``jump``: from its mark in ``before`` (the last look's), or,
    without one, from its nearest limit (where a fresh watch judges it from). The state is written
    again when a mark changes (``changed_states``), so the value saved stays within half a ``jump``
    of the newest reading (give or take the walk of a second), close enough for :func:`along_walk`
    to find the replay reaching it. Written only at status changes and every 30 s, a walk at 10
    readings a second moved hundreds of readings past the saved value, the replay no longer reached
    it, and the new owner told a sensor fault. Cut into fixed half-``jump`` steps instead, a channel
    that settled past its limit with its noise across a step's edge (or across the limit) changed
    its mark at nearly every look and wrote its state (the whole state file) every second for as
    long as it stayed there, and ``floor(value / (jump / 2))`` raised for a tiny ``jump`` or a huge
    value (a review): a mark moves only with a walk of half a ``jump``, noise leaves it where it is."""
    if rules is None or not past:
        return {}
    before = before or {}
    limits = {c: lim for c, lim in zip(rules.channels, rules.limits, strict=True) if lim.jump}
    out = {}
    for asset, values in past.items():
        was = dict(before.get(asset, ()))
        marks = []
        for c, v in sorted(values.items()):
            if (lim := limits.get(c)) is None:
                continue
            mark = was.get(c)
            if abs(v - (mark if mark is not None else lim.high if v > lim.high else lim.low)) >= lim.jump / 2:
                mark = v
            if mark is not None:
                marks.append((c, mark))
        if marks:
            out[asset] = tuple(marks)
    return out
