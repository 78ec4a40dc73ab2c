"""The queue of windows due for scoring, shared by all assets of one model, oldest first.

A window is queued every ``alert_hop`` samples (:class:`~sensorguard.service.windows.Buffers`);
those off the hop grid (``coarse=False``) are judged only while their asset's alert is up, and the
daemon drops most of them unscored. So the queue keeps a count of them beside its length: the
windows of the hop grid (:meth:`DueWindows.pending`) are what backpressure and the
``buffered_windows`` gauge count, all of them (``len``) what the scorer waits for.

>>> from sensorguard.service.asset_buffer import DueWindow
>>> due = DueWindows()
>>> for ts, coarse in ((1.0, True), (2.0, False), (3.0, True)):
...     due.append(DueWindow("pump", ts, None, 0.0, coarse=coarse))
>>> len(due), due.pending()
(3, 2)
>>> [w.ts for w in due.drain(2)], due.pending()
([1.0, 2.0], 1)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from sensorguard.service.asset_buffer import DueWindow


class DueWindows:
    """Due windows in the order they were queued (``windows``), and how many of them are off the hop
    grid (``off_grid``): both read as they are on the ingest's path (a method call a reading cost
    5-10 % of ``Buffers.add``'s rate, measured), changed only through the methods."""

    def __init__(self) -> None:
        self.windows: deque[DueWindow] = deque()
        self.off_grid = 0  # queued alert-hop windows (coarse False): not counted in pending()

    def __len__(self) -> int:
        return len(self.windows)

    def append(self, window: DueWindow) -> None:
        self.windows.append(window)
        self.off_grid += not window.coarse

    def pending(self) -> int:
        """Windows of the hop grid queued and not yet drained."""
        return len(self.windows) - self.off_grid

    def drain(self, limit: int | None = None) -> list[DueWindow]:
        """Remove and return up to ``limit`` queued windows (all if None), oldest first."""
        due = self.windows
        if limit is None or limit >= len(due):
            out = list(due)
            due.clear()
            self.off_grid = 0
            return out
        out = [due.popleft() for _ in range(max(limit, 0))]
        if self.off_grid:
            self.off_grid -= sum(not w.coarse for w in out)
        return out

    def pending_of(self, assets: set[str]) -> bool:
        """Whether a window of one of ``assets`` is queued."""
        return any(w.asset in assets for w in self.windows)

    def take(self, assets: set[str]) -> list[DueWindow]:
        """Remove and return the queued windows of ``assets``, oldest first."""
        if not self.windows or not assets:
            return []
        taken = [w for w in self.windows if w.asset in assets]
        if taken:
            self.windows = deque(w for w in self.windows if w.asset not in assets)
            self.off_grid -= sum(not w.coarse for w in taken)
        return taken

    def keep_since(self, mark: int, kept: Callable[[DueWindow], bool]) -> None:
        """Of the windows queued after the first ``mark``, keep only those ``kept`` says, in order."""
        since = [w for w in list(self.windows)[mark:] if kept(w)]
        while len(self.windows) > mark:
            self.off_grid -= not self.windows.pop().coarse
        for window in since:
            self.append(window)
