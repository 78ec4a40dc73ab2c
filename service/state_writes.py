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

>>> writes = StateWrites()
>>> writes.failed(CONTROLS)
>>> writes.worked(CONTROLS), writes.worked(CONTROLS)
(1, 0)
"""

from __future__ import annotations

import logging
import threading

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


class StateWrites:
    """Failed writes of the files in ``state_dir`` since each one's last write that worked, and their
    counter (None: counted nowhere, e.g. ``AlarmControls`` outside a daemon). Any thread."""

    def __init__(self, counter: Counter | None = None, directory: str | None = None) -> None:
        self.counter = counter
        self.directory = directory  # (for the log line)
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}

    def failed(self, name: str) -> None:
        """A write of ``name`` failed (the caller logs why): counted."""
        with self._lock:
            self._failures[name] = self._failures.get(name, 0) + 1
        if self.counter is not None:
            self.counter.labels(name).inc()

    def worked(self, name: str) -> int:
        """A write of ``name`` worked: the failures before it (logged once, as writing works again)."""
        if not self._failures:  # (the usual case, without the lock)
            return 0
        with self._lock:
            failures = self._failures.pop(name, 0)
        if failures:
            log.info("writing %s in %s works again (after %d failed %s)", name, self.directory or "state_dir",
                     failures, "write" if failures == 1 else "writes")
        return failures
