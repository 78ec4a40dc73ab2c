"""What the ingest tells of readings: each one rejected counted and logged, and the assets whose
clock stepped back.

:class:`IngestLines` is the part of :class:`~sensorguard.service.ingest.Ingest` that counts and
says: a line per reject reason at most every ``REJECT_LOG_INTERVAL_S``, naming what in the payload
was at fault (:mod:`~sensorguard.service.reject_detail`), and one line for all the assets rewound
since the last. It is a mixin, not a class of its own, because it speaks of the ingest's buffers
under its lock; ``Ingest.__init__`` sets everything listed below. Kept apart from the path a
reading takes (parse, buffer, acknowledge, batch): this is what is counted and said of readings,
not what is done with them.
"""

from __future__ import annotations

import logging
import threading
import time

from sensorguard.service.asset_buffer import STEP_BACK_AFTER
from sensorguard.service.logs import RateLimiter
from sensorguard.service.metrics import Metrics
from sensorguard.service.payload import ASSET_RULE
from sensorguard.service.publisher import iso
from sensorguard.service.reject_detail import explain
from sensorguard.service.windows import Buffers

# The ingest's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.ingest")

REWOUND_NAMED = 100  # assets rewound between two "clock stepped back" lines remembered; more are counted
REWOUND_SHOWN = 10  # of those, named in the line


class IngestLines:
    """Rejects counted and told, rewound assets told (a mixin of :class:`~sensorguard.service.ingest.Ingest`,
    which owns the attributes declared here)."""

    buffers: Buffers
    cond: threading.Condition
    metrics: Metrics
    _reject_log: RateLimiter
    _said: set[str]
    _rewound: dict[str, tuple[float, float]]
    _rewound_unnamed: int

    def refuse(self, reason: str, topic: str, payload: bytes) -> None:
        """Count and log one message refused before it reached :meth:`accept` (cluster mode's stray
        subjects: no partition takes them)."""
        self._rejected(reason, topic, None, payload)

    def _rejected(self, reason: str, topic: str, asset: str | None, payload: bytes = b"") -> None:
        """Count one rejected reading; a log line per reason at most every REJECT_LOG_INTERVAL_S,
        saying what in ``payload`` was at fault (the stamp, value or channel: :mod:`reject_detail`)."""
        self.metrics.reject(reason)
        count = self._reject_log.hit(reason)
        if count is not None:
            newest = self.buffers.last_ts(asset) if asset else None
            detail = ASSET_RULE if reason == "bad_asset" else explain(
                reason, payload, self.buffers.channels, newest,
                self.buffers.floors.get(asset) if asset and newest is None else None)
            since = "since the last line" if reason in self._said else "so far"
            self._said.add(reason)  # (bounded: the reasons are a fixed list)
            log.warning(  # (no asset before the topic is read: not_ours said "asset None", a walk)
                "rejected reading: %s%s (topic %r%s; %d like this %s)",
                reason, f": {detail}" if detail else "", topic[:200], "" if asset is None else f", asset {asset!r}",
                count, since, extra={"reason": reason, "count": count},
            )

    def _stepped_back(self, asset: str, ahead: float, ts: float) -> None:
        """An asset rewound to ``ts`` from a stamp ``ahead`` of the clock (the caller holds ``cond``;
        each also counts in ``window_restarts``): said by :meth:`say_rewound`."""
        if asset in self._rewound or len(self._rewound) < REWOUND_NAMED:
            self._rewound[asset] = (ahead, ts)
        else:
            self._rewound_unnamed += 1
        self.say_rewound()

    def say_rewound(self) -> None:
        """Log the assets rewound since the last such line, at most one line every
        REJECT_LOG_INTERVAL_S (also called each housekeeping tick, so none goes unsaid): one line
        for all assets left a gateway's others, rewound seconds later, unnamed (a walk)."""
        if not self._rewound:  # (the common tick: no lock taken)
            return
        with self.cond:
            if not self._rewound or self._reject_log.hit("clock stepped back") is None:
                return
            told = [f"{asset!r} (newest reading {iso(ahead)}; window restarts at {iso(ts)})"
                    for asset, (ahead, ts) in self._rewound.items()]
            more = len(told) - REWOUND_SHOWN + self._rewound_unnamed
            first = next(iter(self._rewound))
            self._rewound.clear()
            self._rewound_unnamed = 0
        log.warning("clock stepped back: %s%s: each newest reading was ahead of this machine's clock (%s) and "
                    "the %d readings after it, in order, were stamped before it (the first %d refused as "
                    "out_of_order); check the sender's clock", ", ".join(told[:REWOUND_SHOWN]),
                    f" and {more} more" if more > 0 else "", iso(time.time()), STEP_BACK_AFTER,
                    STEP_BACK_AFTER - 1, extra={"asset": first})
