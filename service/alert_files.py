"""An alert's own readings on disk: written as parts while it is up and at its clear, filed by its answer.

Part of :class:`~sensorguard.service.recorder.Recorder` (a mixin: it shares the recorder's held
readings and lock), kept apart because it is the one place that moves files an operator's
acknowledgement names. ``alerts/<alert id>.parquet`` holds an alert's readings, later parts
``<alert id>+1.parquet``, ... (written every ``ALERT_PART_S`` while it is up, at a shutdown, and at
its clear); an acknowledgement moves every part to ``false_alarms/`` or ``faults/``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sensorguard.service.asset_buffer import CLOCK_SLACK_S
from sensorguard.service.logs import counted
from sensorguard.service.record_files import (
    ALERTS,
    FALSE_ALARMS,
    FAULTS,
    FILED_SAYS,
    alert_file,
    alert_parts,
    answer_file,
    part_number,
    recorded,
    write_readings,
)

log = logging.getLogger("sensorguard.service.recorder")  # (the recorder's lines, as before the split)

ALERT_PART_S = 600.0  # an alert up has its judged readings written as a part of its file this often (a kill -9
# lost all it held; now at most this long of them)
MAX_UNWRITTEN = 10_000  # alerts whose readings a failed write lost, remembered for their acknowledgements


class AlertFiles:
    """The alert files of a :class:`~sensorguard.service.recorder.Recorder` (its fields, declared here)."""

    directory: Path
    channels: tuple[str, ...]
    verdict: Callable[[str], bool | None] | None
    write_failures: int
    dropped: int
    alert_backlog: int
    _pending: dict[str, deque]
    _pending_rows: int
    _judged: dict[str, float]
    _up: dict[str, str]
    _writing: set[str]
    _alerts: list[tuple[str, str, float, list]]
    _unwritten: dict[str, None]  # ids of alerts whose readings (a part of them) a failed write lost, oldest first
    _lock: threading.Lock
    _alert_lock: threading.Lock
    _parted: dict[str, tuple[str, float, int]]  # asset -> its alert up's id, when (monotonic) its last part
    # went, and the rows its parts hold
    _next_part: dict[str, int]  # alert id -> the number of its next part (the first after a restart: looked up)

    def _part_alerts_up(self) -> None:
        """Queue, as the next part of its file, the held readings of each alert up every
        ``ALERT_PART_S``: those up to its newest scored window (the alert was up through them; later
        ones may belong after its clear) and not ahead of this machine's clock (a glitching clock's,
        which a rewind takes back), its parts holding at most ``alert_backlog`` rows (the held ones,
        its last readings, are capped apart). Held to its clear, a ``kill -9`` (or a power cut) lost
        them all, and an acknowledgement as a false alarm taught the retrain only its tail (a walk)."""
        now, horizon = time.monotonic(), time.time() + CLOCK_SLACK_S
        with self._lock:
            for asset, alert_id in self._up.items():
                kept, since, written = self._parted.get(asset, (alert_id, now, 0))
                if kept != alert_id:  # (another alert of the asset since)
                    since, written = now, 0
                if now - since < ALERT_PART_S:
                    self._parted[asset] = (alert_id, since, written)
                    continue
                pending, rows = self._pending.get(asset), []
                last = min(self._judged.get(asset, -np.inf), horizon)
                while pending and pending[0][0] <= last and written + len(rows) < self.alert_backlog:
                    rows.append(pending.popleft())
                self._pending_rows -= len(rows)
                self._parted[asset] = (alert_id, now, written + len(rows))
                if rows:
                    self._alerts.append((alert_id, asset, float("nan"), rows))
            for asset in [a for a in self._parted if a not in self._up]:
                del self._parted[asset]

    def acknowledged(self, alert_id: str) -> str:
        """An acknowledgement of ``alert_id`` arrived (``verdict`` says which): move its readings'
        file where it now belongs (none yet: the alert is still up or not flushed, and is filed by
        the verdict when it is). Returns what becomes of them, for the command's reply."""
        lost = ("; readings of it were lost here: the disk refused their file (the daemon's log says why)"
                if alert_id in self._unwritten else "")  # (it said "parts filed elsewhere" of them: a walk)
        with self._alert_lock:
            found = alert_parts(self.directory, alert_id)
            try:
                none_here = not found and not self._waiting(alert_id)
                if self._answer(alert_id, keep=none_here) is not None:
                    return ("none of its readings is recorded here" + lost if lost else
                            "none of its readings is recorded here; the answer is kept here, for its parts filed "
                            "elsewhere (another worker's record dir, read with this one by retrain --recorded)")
                if none_here:
                    return "none of its readings is recorded here" + lost
                folders = [self._file(path, alert_id) for path in found]
                return FILED_SAYS[folders[0] if folders else self._folder(alert_id)] + lost
            except OSError as exc:  # a full or read-only disk: the acknowledgement itself stands
                log.warning("recording: could not file the readings of alert %s (%s)", alert_id, exc)
                return f"its readings could not be filed ({exc.strerror or exc})"

    def _answer(self, alert_id: str, keep: bool) -> str | None:
        """Keep the answer to ``alert_id`` as an empty file in its folder when ``keep`` (none of its
        readings is here to carry it), dropping one an earlier answer left in the other folder; the
        folder kept in. In cluster mode the worker that answers may hold no part of an alert (its
        next owner took it over and filed them all): the answer was kept nowhere, and a false alarm
        acknowledged so was never learned by ``retrain --recorded`` over the workers' record dirs (a
        walk); its parts elsewhere follow the answer found anywhere (``recorded_alerts.answers``)."""
        folder = self._folder(alert_id)
        name = answer_file(alert_id)
        for other in (FALSE_ALARMS, FAULTS):
            if other != folder or not keep:
                (self.directory / other / name).unlink(missing_ok=True)
        if not keep or folder == ALERTS:
            return None
        (self.directory / folder).mkdir(parents=True, exist_ok=True)
        (self.directory / folder / name).touch()
        return folder

    def _waiting(self, alert_id: str) -> bool:
        """Whether readings of ``alert_id`` are held here (it is up) or wait to be written."""
        with self._lock:
            return (alert_id in self._up.values() or alert_id in self._writing
                    or any(queued[0] == alert_id for queued in self._alerts))

    def _folder(self, alert_id: str) -> str:
        verdict = self.verdict(alert_id) if self.verdict is not None else None
        return ALERTS if verdict is None else FALSE_ALARMS if verdict else FAULTS

    def _file(self, path: Path, alert_id: str) -> str:
        """Move an alert's file to the folder its verdict names (under ``_alert_lock``); that folder."""
        folder = self._folder(alert_id)
        if path.parent.name != folder and path.exists():  # (an acknowledgement may have filed it already)
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
            os.replace(path, self.directory / folder / path.name)
        return folder

    def _write_alerts(self) -> int:
        """Write the readings of alerts that cleared, each to the folder its acknowledgement says;
        how many alerts there were to write."""
        with self._lock:
            alerts, self._alerts = self._alerts, []
            self._writing = {queued[0] for queued in alerts}  # (an ack meanwhile: "none recorded" was wrong)
        for alert_id, asset, peak, rows in alerts:
            try:  # written unanswered, off the lock (an acknowledgement waits for it on the network thread)
                stem = (self.directory / ALERTS / alert_file(alert_id)).with_suffix("")
                number = self._next_part.get(alert_id)  # (this run wrote one: no folder listed, a walk's stall)
                if number is None:
                    with self._alert_lock:  # a part written before a restart: this is the next ("+" is quoted)
                        parts = alert_parts(self.directory, alert_id) if recorded(self.directory, alert_id) else []
                        number = 1 + max(part_number(p) for p in parts) if parts else 0
                if number:
                    stem = stem.with_name(f"{stem.name}+{number}")
                written = write_readings([(asset, ts, v) for ts, v in rows], self.channels, stem,
                                         {"alert_id": alert_id, "peak": peak})
                self._next_part[alert_id] = number + 1
                with self._alert_lock:  # then filed by the verdict, if one came meanwhile
                    self._file(written, alert_id)
            except OSError as exc:
                self.write_failures += 1
                self.dropped += len(rows)
                self._unwritten[alert_id] = None  # (its acknowledgement says so; the newest MAX_UNWRITTEN kept)
                while len(self._unwritten) > MAX_UNWRITTEN:
                    del self._unwritten[next(iter(self._unwritten))]
                log.warning("recording: could not write the readings of alert %s (%s; %s lost)", alert_id, exc,
                            counted(len(rows), "reading"))
        with self._lock:
            self._writing = set()
            up = set(self._up.values())
            for alert_id in [a for a in self._next_part if a not in up]:  # (cleared, or moved away)
                del self._next_part[alert_id]
        return len(alerts)
