"""The audit trail of accepted commands: ``<state_dir>/audit.jsonl``, one JSON line a command.

Each accepted maintenance, shelve or ack is written here once applied (and published as an
event), so who held or answered what, and when, can be read back after the fact; a hold still due
can be re-issued from it when ``controls.json`` is lost. The file is rotated to ``audit.jsonl.1``
past ``MAX_AUDIT_BYTES``: one older part is kept, bounded on disk.

>>> import tempfile
>>> from sensorguard.service.command_messages import Command
>>> d = tempfile.mkdtemp()
>>> entry = audit_entry(Command("shelve", "pump-7", until=120.0, reason="valve swap"), 60.0, "site-a")
>>> entry["command"], entry["until"], entry["instance"]
('shelve', '1970-01-01T00:02:00.000Z', 'site-a')
>>> audit(d, entry); (Path(d) / AUDIT).read_text().count("pump-7")
1
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from sensorguard.service.command_messages import Command
from sensorguard.service.publisher import iso
from sensorguard.service.state_writes import AUDIT, AUDIT_ROTATED, StateWrites

log = logging.getLogger("sensorguard.service.command_handling")  # (its lines came from there before the split)

MAX_AUDIT_BYTES = 10 << 20  # audit.jsonl is rotated to audit.jsonl.1 (AUDIT_ROTATED) past this size


def audit_entry(c: Command, now: float, instance: str) -> dict:
    """An accepted command as its audit line and its event on ``<output_prefix>/events`` hold it."""
    entry = {"event": "command", "command": c.verb, "asset": c.asset, "ts": iso(now), "by": c.by or None,
             "request_id": c.request_id or None, "instance": instance}
    if c.verb == "maintenance":
        entry.update(action=c.action, until=None if c.until is None else iso(c.until), reason=c.reason or None)
    elif c.verb == "shelve":
        entry.update(until=iso(c.until or now), reason=c.reason or None)
    else:
        entry.update(alert_id=c.alert_id, false_alarm=c.false_alarm, note=c.note or None)
    return entry

def audit(state_dir: str | None, entry: dict[str, Any], writes: StateWrites | None = None) -> None:
    """Append one accepted command to ``<state_dir>/audit.jsonl`` (a failure is logged and counted
    in ``writes``, not fatal). A line that cannot be written is not retried: it is lost, and the
    command's event on ``<output_prefix>/events`` is its only record."""
    if not state_dir:
        return
    path = Path(state_dir) / AUDIT
    try:
        if path.exists() and path.stat().st_size > MAX_AUDIT_BYTES:  # one older file kept: bounded on disk
            path.replace(path.with_name(AUDIT_ROTATED))
        _append_whole(path, (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8"))
    except OSError as exc:
        if writes is not None:  # (each lost line is said: a command's, never a periodic save's)
            writes.failed(AUDIT, exc)
        log.warning("writing the audit log in %s failed: %s", state_dir, exc)
        return
    if writes is not None:
        writes.worked(AUDIT)


def _append_whole(path: Path, line: bytes) -> None:
    """Append ``line`` to ``path`` whole or not at all: a disk that fills in the middle of it has the
    file cut back to where it ended. Left there, the line's first part (a full page's end) took the
    next command's line, written when space was back, into one line no reader parses: a walk lost a
    command that was saved (``...,"by":nul{"event":"command",...``)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # (the umask applies, as open's)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)
