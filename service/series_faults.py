"""Sensor faults over a whole series, offline: one watch run over a table's rows, and the channels
each window leaves out.

The same :class:`~sensorguard.service.sensors.SensorWatch` the daemon steps per reading runs here
over a time-sorted series (``score``'s ``sensor_faults`` column, training's held channels), so live
equals offline. Kept apart from :mod:`~sensorguard.service.sensors` (the rules and the per-reading
watch the daemon runs): these are what the offline verbs and training read, a whole table at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sensorguard.service.sensors import SensorRules, SensorWatch


def watch_rows(times: Any, values: Any, rules: SensorRules, alive: Any = None) -> tuple[Any, Any, int]:
    """A time-sorted series through one watch, as the daemon sees its readings: ``(values as held,
    (T, C) bool faulted after each reading, faults opened)``; a silence longer than
    ``rules.silence_s`` starts a new watch, bridged by ``alive`` (the stamps of readings refused for
    their rate, which keep the asset alive live: :func:`~sensorguard.service.alerts.silences`)."""
    from sensorguard.service.alerts import silences  # (alerts knows nothing of sensors: no cycle)

    values = np.asarray(values, dtype=np.float64)
    watch = SensorWatch(values.shape[1])
    rows = np.where(np.isfinite(values), values, np.nan).tolist()
    faulted = np.zeros(values.shape, dtype=bool)
    opened = 0
    silent = (silences(times, alive, rules.silence_s) if rules.silence_s is not None
              else np.zeros(len(rows), dtype=bool))
    for i, row in enumerate(rows):
        if silent[i]:
            watch = SensorWatch(values.shape[1])
        opened += sum(e.fault for e in watch.step(float(times[i]), row, rules))
        faulted[i, list(watch.faulted())] = True
    return np.asarray(rows, dtype=np.float64).reshape(values.shape), faulted, opened


def window_faults(faulted: Any, segments: Any, window: int) -> Any:
    """Per row, the channels faulted in any of the ``window`` rows up to it (``(T, C)`` bool): the
    window ending at that row leaves them out, live and offline alike (the daemon counts rows
    since its window restarted, which is where offline segments start)."""
    faulted = np.asarray(faulted, dtype=bool)
    segments = np.asarray(segments)
    out = np.zeros_like(faulted)
    starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
    stops = np.r_[starts[1:], len(segments)]
    for a, b in zip(starts, stops, strict=True):
        cs = np.vstack([np.zeros((1, faulted.shape[1]), dtype=np.int64), np.cumsum(faulted[a:b], axis=0)])
        ends = np.arange(1, b - a + 1)
        out[a:b] = (cs[ends] - cs[np.maximum(ends - window, 0)]) > 0
    return out
