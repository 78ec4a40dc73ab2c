"""Writes of the daemon's files in ``state_dir``: each failure counted, a recovery said once.

``assets.json`` (alert states and drift baselines: :mod:`~sensorguard.service.state`),
``controls.json`` (maintenance, shelving, acknowledgements: :mod:`~sensorguard.service.commands`)
and ``audit.jsonl`` (accepted commands: :mod:`~sensorguard.service.command_handling`) are written
from the scoring worker and from the network thread. A failed write (a full disk, a read-only
folder) must not stop scoring, so it was only logged: a walk found a read-only state dir only in
the log, while a maintenance it could not keep (lost at the next restart) was answered "accepted"
and nothing told when writing worked again. :class:`StateWrites` counts each failure in
``sensorguard_state_write_failures_total{file}`` and logs one line when a file is written again
after failures (not one per write).

A spell of failures is logged once, not a line per try: :meth:`StateWrites.failed` says which
failures to log (the first, one of another cause, and one every ``REPEAT_S`` while they go on); a walk
with ``state_dir`` on a full disk read two warnings every 30 s for as long as it was full.

>>> writes = StateWrites()
>>> writes.failed(CONTROLS, OSError(28, "full")), writes.failed(CONTROLS, OSError(28, "full"))
(True, False)
>>> writes.worked(CONTROLS), writes.worked(CONTROLS)
(2, 0)
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

log = logging.getLogger(__name__)

ASSETS = "assets.json"  # the label values of state_write_failures_total: the file's name
CONTROLS = "controls.json"
AUDIT = "audit.jsonl"
AUDIT_ROTATED = AUDIT + ".1"  # the older part of the audit: audit.jsonl is moved here past its size cap
STATE_FILES = (ASSETS, CONTROLS, AUDIT)
# serve's exit status when its final save failed (systemd: RestartPreventExitStatus=74). EX_IOERR
# (sysexits.h): the journal says status=74/IOERR; 3, the first choice, read 3/NOTIMPLEMENTED there.
EXIT_UNSAVED = 74
REPEAT_S = 600.0  # a file's writes failing on for the same cause: logged again this often (each one counted)


class StateWrites:
    """Failed writes of the files in ``state_dir`` since each one's last write that worked, and their
    counter (None: counted nowhere, e.g. ``AlarmControls`` outside a daemon). Any thread."""

    def __init__(self, counter: Counter | None = None, directory: str | None = None) -> None:
        self.counter = counter
        self.directory = directory  # (for the log line)
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._said: dict[str, tuple[float, object]] = {}  # name -> when its failure was last logged, its cause

    def failed(self, name: str, cause: BaseException | None = None) -> bool:
        """A write of ``name`` failed: counted; whether the caller should log it (a WARNING; otherwise
        DEBUG): the first failure since the file was last written, one whose cause (errno) differs
        from the last one logged, or one ``REPEAT_S`` after it."""
        key = getattr(cause, "errno", None) or type(cause).__name__
        now = time.monotonic()
        with self._lock:
            self._failures[name] = self._failures.get(name, 0) + 1
            said = self._said.get(name)
            tell = said is None or said[1] != key or now - said[0] >= REPEAT_S
            if tell:
                self._said[name] = (now, key)
        if self.counter is not None:
            self.counter.labels(name).inc()
        return tell

    def worked(self, name: str) -> int:
        """A write of ``name`` worked: the failures before it (logged once, as writing works again)."""
        if not self._failures:  # (the usual case, without the lock)
            return 0
        with self._lock:
            failures = self._failures.pop(name, 0)
            self._said.pop(name, None)
        if failures:
            log.info("writing %s in %s works again (after %d failed %s)", name, self.directory or "state_dir",
                     failures, "write" if failures == 1 else "writes")
        return failures
