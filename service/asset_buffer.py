"""One asset's ring buffer, and the window due for scoring that is cut from it.

:class:`~sensorguard.service.windows.Buffers` keeps an :class:`AssetBuffer` per asset and queues a
:class:`DueWindow` from it on the cadence; the daemon drains those and scores them in batches.

Storage is a ``(2 * window, C)`` array in which each sample is written twice, at ``p`` and
``p + window``, so the latest window is always the contiguous rows ``p + 1 .. p + window``: a
window is one slice copy, never a concatenation of two pieces.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sensorguard.service.cleaning import Cleaner
from sensorguard.service.sensors import SensorWatch

NO_FAULT = -(1 << 62)
SEEN_TIMES = 1024  # a QoS 1 redelivery after a reconnect repeats at most the in-flight messages


class DueWindow(NamedTuple):
    """A window ready to score: raw values ``(C, window)`` ending at sample time ``ts``.

    ``received`` is when the completing sample arrived (monotonic or wall clock, whatever the
    caller passed), so reading-to-score latency can be measured.
    """

    asset: str
    ts: float
    window: np.ndarray
    received: float
    excluded: tuple[int, ...] = ()  # channels with a sensor fault open: left out of the score
    coarse: bool = True  # on the hop grid; False: an alert-hop window, judged only while the asset's alert is up


class AssetBuffer:
    """Mutable state of one asset's buffer (only :class:`~sensorguard.service.windows.Buffers` touches it)."""

    __slots__ = ("buf", "pos", "count", "last_ts", "last", "cleaner", "watch", "fault_row", "seen", "times", "tpos")

    def __init__(self, window: int, n_channels: int) -> None:
        self.buf = np.empty((2 * window, n_channels), dtype=np.float64)
        self.pos = 0  # next row to write, 0 .. window-1
        self.count = 0  # rows written since the buffer (re)started
        self.last_ts = -np.inf
        self.last: list[float] | None = None  # the last reading's row as buffered (forward fills included)
        self.cleaner = Cleaner(n_channels)  # grid rows, forward fill, restarts: as offline
        self.watch = SensorWatch(n_channels)  # stuck, implausible, missing channels
        self.fault_row = [NO_FAULT] * n_channels  # per channel, the last row (count) written with a fault open
        self.seen = 0.0
        self.times = np.full(SEEN_TIMES, np.nan)  # recent accepted timestamps: tells a redelivery from disorder
        self.tpos = 0

    def stamp(self, ts: float) -> None:
        """The reading's stamp is seen: a redelivery of it is a duplicate, an older one out of order."""
        self.last_ts = ts
        self.times[self.tpos] = ts
        self.tpos = self.tpos + 1 if self.tpos + 1 < SEEN_TIMES else 0
