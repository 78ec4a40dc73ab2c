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
STEP_BACK_AFTER = 5  # readings in order behind a stamp ahead of the clock: the sender's clock stepped back
CLOCK_SLACK_S = 60.0  # a stamp further ahead of this machine's clock is no true reading (Buffers.add_at)
NOT_BEHIND = (0, -np.inf, -np.inf, -np.inf)  # AssetBuffer.behind with no run of such readings


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

    __slots__ = ("buf", "pos", "count", "last_ts", "last", "cleaner", "watch", "fault_row", "seen", "times", "tpos",
                 "behind", "refused")

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
        self.behind = NOT_BEHIND  # steps_back(): refused in a row, the last of them, last_ts then, before the jump
        self.refused: tuple[str, float] | None = None  # the last reading refused: its reason, when (as seen)

    def write(self, row: list[float], faulted: tuple[int, ...]) -> None:
        """Append one grid row (``faulted``: its channels with a sensor fault open)."""
        window, pos = len(self.buf) // 2, self.pos
        buf = self.buf
        buf[pos] = row
        buf[pos + window] = row
        self.pos = pos + 1 if pos + 1 < window else 0
        self.count += 1
        for j in faulted:
            self.fault_row[j] = self.count

    def shift(self, rows: int) -> None:
        """Count ``rows`` fewer rows written: the hop cadence restarts that much later (a takeover's)."""
        if rows:
            self.count -= rows
            self.fault_row = [r - rows if r != NO_FAULT else r for r in self.fault_row]

    def cut(self, asset: str, ts: float, received: float, coarse: bool) -> DueWindow:
        """The latest full window, ending at ``ts``; channels faulted in any of its rows are left out."""
        window, pos = len(self.buf) // 2, self.pos
        values = self.buf[pos : pos + window].T.copy()  # always a copy; ascontiguousarray may not be
        oldest = self.count - window
        excluded: tuple[int, ...] = ()
        if max(self.fault_row) > oldest:
            excluded = tuple(j for j, r in enumerate(self.fault_row) if r > oldest)
        return DueWindow(asset, ts, values, received, excluded, coarse)

    def stamp(self, ts: float) -> None:
        """The reading's stamp is seen: a redelivery of it is a duplicate, an older one out of order."""
        self.last_ts = ts
        self.times[self.tpos] = ts
        self.tpos = self.tpos + 1 if self.tpos + 1 < SEEN_TIMES else 0

    def steps_back(self, ts: float, clock: float) -> float | None:
        """Whether the reading at ``ts``, refused as older than the newest stamp, shows the sender's
        clock stepped back: the newest is ahead of ``clock`` (this machine's, with a slack; no true
        reading is), this one is not, and it is the ``STEP_BACK_AFTER``-th in a row in order that
        continues the readings taken before the stamps went ahead (newer than the newest of them
        not ahead of the clock: no redelivery; with none such, the asset's first reading was the
        jump if it is the only one, else nothing shows one). One reading
        from a glitching clock, up to ``max_future_s`` ahead, made every true one after it
        ``out_of_order`` until the asset went silent (about 5 minutes).

        The newest stamp, when the asset was rewound: its stamps go back to that newest one before
        the jump (its window restarts at this reading, as after a long gap; its sensor watch goes
        on); the caller takes the reading again. None otherwise.
        """
        if self.last_ts <= clock or ts > clock:
            return None
        count, last, newest, before = self.behind
        if newest != self.last_ts or ts <= last:  # a reading taken since, or not in order: start over
            taken = self.times[self.times <= clock]  # (NaN: slots not written yet)
            before = float(taken.max()) if len(taken) else -np.inf
            # a redelivery; or every stamp ahead, more than one: a sender's clock minutes fast, whose
            # backlog sent again rewound it. One alone: the asset's first reading was the glitch (a walk)
            if ts <= before or (not len(taken) and np.count_nonzero(self.times == self.times) > 1):
                self.behind = NOT_BEHIND
                return None
            count = 0
        if count + 1 < STEP_BACK_AFTER:
            self.behind = (count + 1, ts, self.last_ts, before)
            return None
        # back to the stamp before the jump (none: the run's last), not -inf: a fifth reading refused
        # again (a new channel with the clock reset) left -inf, which a silence could not write (a review)
        self.behind, ahead, self.last_ts = NOT_BEHIND, self.last_ts, before if before > -np.inf else last
        self.cleaner.rewind()
        return ahead
