"""Recording normal readings for retraining: a rolling, crash-safe store of Parquet files.

The daemon sees the machines' newest normal behaviour, which is exactly what a retrain needs. Only
readings far from alerts are kept: a reading waits ``guard_s`` seconds before it is committed, and
an alert raised in that time discards it (the fault usually started before the alert rose);
after an alert clears, readings are skipped for another ``guard_s``. Files are written to a
temporary name, fsynced and renamed, so a crash never leaves a half-written ``.parquet`` that
would break a later ``sensorguard retrain``. The store is bounded by total size and age (oldest
files go first). A full disk is counted and reported, never fatal: scoring goes on.

An alert's own readings (those held from its guard band before the raise to its clear) are not
thrown away: they are written to ``alerts/<alert id>.parquet`` when it clears (parts every
``ALERT_PART_S`` while it is up, and at a shutdown: ``<alert id>+1.parquet``, ...), and its
acknowledgement moves the file. Acknowledged as a false alarm it goes to ``false_alarms/``, which
``retrain --recorded`` and ``calibrate --recorded`` read as normal data, so the model learns the
pattern it wrongly alerted on; acknowledged as real it goes to ``faults/``, the known faults that
``retrain`` checks a candidate still catches. Unanswered alerts stay in ``alerts/`` and are never
trained on. How a real fault acknowledged as false is kept from blinding the detector is
``retrain``'s gate (``training/retrain_gate.py``): a candidate that misses a known fault, or a fault
injected into held-out data, that the current model catches is not promoted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sensorguard.service.alert_files import AlertFiles
from sensorguard.service.asset_buffer import CLOCK_SLACK_S
from sensorguard.service.logs import counted
from sensorguard.service.record_files import (
    read_guard_bands,
    trim_store,
    write_guard_bands,
    write_readings,
)

if TYPE_CHECKING:
    from sensorguard.service.config import Settings

log = logging.getLogger(__name__)

PENDING_ROW_OVERHEAD = 200  # bytes a held reading costs beyond its values (tuple, stamp, deque slot, array
# header: 199-200 measured with tracemalloc for 3, 10 and 52 channels; the daemon hands over lists, which
# cost 8 x channels more again, so :meth:`Recorder.add` keeps an array)
MAX_GUARDS = 100_000  # guard bands read back at most (one per asset)
SILENT_GUARD_S = 86400.0  # a silent asset's band is kept while others' readings are less than this past it


@dataclass
class Recorder(AlertFiles):
    """Buffers readings per asset and writes committed ones to ``directory`` as Parquet files.

    ``add`` is called for every accepted reading (cheap: an append under a lock); ``flush`` is
    called periodically from the daemon's worker and does the I/O.
    """

    directory: Path
    channels: tuple[str, ...]
    guard_s: float = 300.0
    max_bytes: int = 1 << 30
    max_age_s: float = 30 * 86400.0
    flush_rows: int = 100_000
    flush_interval_s: float = 60.0
    alert_backlog: int = 100_000
    max_pending_bytes: int = 256 << 20  # readings waiting for their guard band, all assets together
    write_failures: int = 0
    rows_written: int = 0
    dropped: int = 0  # readings not recorded: a bound reached (all held, or one alert's backlog), or a failed write
    excluded: Callable[[str, float], bool] | None = None  # (asset, reading time): in maintenance, nothing recorded
    verdict: Callable[[str], bool | None] | None = None  # alert id -> acknowledged false (True), real, or not
    _pending: dict[str, deque] = field(default_factory=dict)
    _pending_rows: int = 0
    _judged: dict[str, float] = field(default_factory=dict)  # per asset: the newest scored window's ts
    _quiet_until: dict[str, float] = field(default_factory=dict)
    _up: dict[str, str] = field(default_factory=dict)  # asset -> the id of its alert up (readings held for it)
    _writing: set[str] = field(default_factory=set)  # alert ids whose files are being written now
    _ready: list[tuple[str, float, np.ndarray]] = field(default_factory=list)
    _alerts: list[tuple[str, str, float, list]] = field(default_factory=list)  # (alert id, asset, peak, rows)
    _unwritten: dict[str, None] = field(default_factory=dict)  # (AlertFiles)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _alert_lock: threading.Lock = field(default_factory=threading.Lock)  # alert files: written vs moved
    _last_flush: float = field(default_factory=time.monotonic)
    _seq: int = 0
    _failures_reported: int = 0
    _failures_said: int = 0  # write_failures when a write last worked: more since, and the next one that works says so
    _guards_saved: dict[str, float] = field(default_factory=dict)  # the bands GUARD_FILE holds
    _guards_retry_at: float = 0.0  # (monotonic) after a refused GUARD_FILE: not tried again before this
    _parted: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # (AlertFiles)
    _next_part: dict[str, int] = field(default_factory=dict)  # (AlertFiles)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("**/*.tmp"):  # left by a crash mid-write: never valid
            if stale.is_file():  # (a folder of that name, a user's, stopped the start: an audit)
                stale.unlink(missing_ok=True)
        self._quiet_until.update(read_guard_bands(self.directory, MAX_GUARDS))
        self._guards_saved = {asset: until for asset, until in self._quiet_until.items()}

    def _save_guards(self, force: bool = False) -> None:
        """Keep the guard bands after clears (finite ones: an alert up is restored with its state)
        when they changed since the last save: every flush, so a crash (or the kill after a stop
        that overran) loses none; only a clean stop wrote them, and a crash right after a clear had
        the fault's tail recorded as normal data after the restart (found by review). ``force`` (the
        stop's last flush): tried even within the wait after a refusal, the last chance to keep them."""
        with self._lock:
            self._expire_guards()
            bands = {asset: until for asset, until in self._quiet_until.items() if np.isfinite(until)}
        if bands == self._guards_saved or (not force and time.monotonic() < self._guards_retry_at):
            return
        if write_guard_bands(self.directory, bands):
            self._guards_saved, self._guards_retry_at = bands, 0.0
            self._worked()
        else:  # counted, and tried again after flush_interval_s (or at the stop), not at every flush: a full disk
            self.write_failures += 1  # logged it every second, and no counter said it (a walk)
            self._guards_retry_at = time.monotonic() + self.flush_interval_s

    def _expire_guards(self) -> None:
        """Drop the bands that ended before their asset's newest scored window, or, for an asset
        not scored here since (silent, or not back since a restart), more than ``SILENT_GUARD_S``
        before the newest scored window of any asset: no later reading falls in them. Kept forever,
        every asset that ever cleared an alert stayed in memory and in GUARD_FILE; judged by another
        asset's clock alone, one device running minutes fast ended the silent assets' bands early
        (both found by review). Called with ``_lock`` held."""
        if not self._judged:
            return
        newest = max(self._judged.values()) - SILENT_GUARD_S
        for asset, until in list(self._quiet_until.items()):
            if np.isfinite(until) and until < self._judged.get(asset, newest):
                del self._quiet_until[asset]

    @property
    def pending_cap(self) -> int:
        """Readings held at most, all assets together (``max_pending_bytes`` over a row's size)."""
        return max(1, self.max_pending_bytes // (8 * len(self.channels) + PENDING_ROW_OVERHEAD))

    def add(self, asset: str, ts: float, values: np.ndarray | list[float]) -> None:
        """Offer one accepted reading; it is committed once its asset's scored windows are
        ``guard_s`` past it with no alert.

        While an alert is up, readings are still held (at most ``alert_backlog`` per asset): the
        daemon offers readings when they arrive, before they are scored, so after a backlog the
        ones received "during" the alert may belong after its clear and its guard band. All held
        readings together are bounded (``max_pending_bytes``): past it the asset's oldest held
        reading goes (or this one, if it holds none), counted in ``dropped``.
        """
        if self.excluded is not None and self.excluded(asset, ts):
            return
        values = np.asarray(values, dtype=np.float64)  # (a list cost 2.5x what the cap counted)
        with self._lock:
            quiet = self._quiet_until.get(asset, -np.inf)
            if ts < quiet < np.inf:
                return
            pending = self._pending.setdefault(asset, deque())
            if self._pending_rows >= self.pending_cap:
                self.dropped += 1
                if not pending:
                    return
                pending.popleft()
                self._pending_rows -= 1
            pending.append((ts, values))
            self._pending_rows += 1
            if quiet == np.inf and len(pending) > self.alert_backlog:
                pending.popleft()  # the oldest: inside the alert
                self._pending_rows -= 1
                self.dropped += 1

    def rewound(self, asset: str, ts: float) -> None:
        """``asset``'s clock stepped back to ``ts`` (:meth:`~sensorguard.service.windows.Buffers.add_at`):
        its held readings stamped after it go (a glitching clock's, never true), and its judged time
        goes back with it. Held, the glitch's reading minutes ahead kept every true one after it
        from being committed until the clock caught up, and went into the file out of order (a review)."""
        with self._lock:
            pending = self._pending.get(asset)
            if pending and pending[-1][0] > ts:
                kept = deque(row for row in pending if row[0] <= ts)
                self._pending_rows -= len(pending) - len(kept)
                self._pending[asset] = kept
            if self._judged.get(asset, -np.inf) > ts:
                self._judged[asset] = ts

    def held(self, asset: str | None = None) -> list[float]:
        """Stamps of the readings held for ``asset`` (all assets: None), oldest first per asset."""
        with self._lock:
            queues = self._pending.values() if asset is None else [self._pending.get(asset, ())]
            return [ts for pending in queues for ts, _ in pending]

    def judged(self, asset: str, ts: float) -> None:
        """The asset's window ending at ``ts`` was scored: its readings are judged up to there (each
        asset on its own clock: one asset running ahead must not commit another's readings)."""
        with self._lock:
            if ts > self._judged.get(asset, -np.inf):
                self._judged[asset] = ts

    def alert_raised(self, asset: str, ts: float, alert_id: str = "") -> None:
        """Commit the asset's readings before the guard band (a later alert cannot reach them); hold
        the rest back until the alert clears, which drops those before its own guard band ends.
        ``alert_id`` (none: a maintenance): what a shutdown files the held readings under."""
        with self._lock:
            if alert_id:
                self._up[asset] = alert_id
            pending = self._pending.get(asset)
            # already held (a maintenance, or an alert up): what it holds is not normal data, whatever comes
            held = self._quiet_until.get(asset, -np.inf) == np.inf  # next (a real alert rising in a maintenance
            while not held and pending and pending[0][0] < ts - self.guard_s:  # committed the band before it)
                t, v = pending.popleft()
                self._pending_rows -= 1
                self._ready.append((asset, t, v))
            while pending and len(pending) > self.alert_backlog:
                pending.popleft()
                self._pending_rows -= 1
                self.dropped += 1
            self._quiet_until[asset] = np.inf

    def alert_cleared(self, asset: str, ts: float, alert_id: str = "", peak: float = float("nan")) -> None:
        """Record again from ``ts + guard_s`` on; held readings up to ``ts`` are the alert's own:
        written to ``alerts/`` at the next flush when it has an ``alert_id`` (``peak``: its highest
        score, in units of the line), dropped otherwise (a maintenance that ended). Those held in
        the band after it are dropped: the fault's tail, neither normal nor the alert's (after a
        backlog they had come before the clear was judged, and were filed with the alert, so an
        acknowledgement as a false alarm taught them as normal: a walk)."""
        with self._lock:
            end = ts + self.guard_s
            self._quiet_until[asset] = end
            self._up.pop(asset, None)
            pending = self._pending.get(asset)
            rows = []
            while pending and pending[0][0] < end:
                row = pending.popleft()
                self._pending_rows -= 1
                if row[0] <= ts:
                    rows.append(row)
            if alert_id and rows:
                self._alerts.append((alert_id, asset, peak, rows))

    def band_of(self, asset: str) -> float | None:
        """Where the guard band after the asset's last clear ends (reading time), None without one:
        passed on with its state when the asset moves to another worker (cluster mode)."""
        with self._lock:
            until = self._quiet_until.get(asset)
            return until if until is not None and np.isfinite(until) else None

    def bands(self) -> dict[str, float]:
        """Every asset's guard band after its last clear (``band_of`` of each), under one lock: the
        scoring thread compares them at every batch in cluster mode (a lock an asset cost 3.7 ms a
        batch at 10,000 assets, beside every reading's ``add``)."""
        with self._lock:
            return {asset: until for asset, until in self._quiet_until.items() if np.isfinite(until)}

    def band(self, asset: str, until: float) -> None:
        """Take on a guard band the asset's previous owner kept (``band_of``): none of its readings
        before ``until`` is recorded here (an alert up here holds them all anyway)."""
        with self._lock:
            if until > self._quiet_until.get(asset, -np.inf):
                self._quiet_until[asset] = until
            self._bound_guards()

    def _bound_guards(self) -> None:
        """At most ``MAX_GUARDS`` bands kept: the one that ends first goes. Called with ``_lock`` held."""
        if len(self._quiet_until) > MAX_GUARDS:
            del self._quiet_until[min(self._quiet_until, key=self._quiet_until.__getitem__)]

    def _file_held(self, asset: str, alert_id: str, held: list | deque, horizon: float) -> None:
        """Queue an alert's held readings up to its newest scored window (and not ahead of this
        machine's clock, ``horizon``) as a part of its file; later ones may belong after its clear.
        Called with ``_lock`` held (a stop, a hand-over). Readings scored but stamped past the horizon
        are said in a line: they went unfiled with no word (a walk replaying faster than real time)."""
        judged = self._judged.get(asset, -np.inf)
        last = min(judged, horizon)
        if rows := [row for row in held if row[0] <= last]:
            self._alerts.append((alert_id, asset, float("nan"), rows))
        if ahead := sum(1 for row in held if last < row[0] <= judged):
            log.warning("recorder: %s of alert %s scored but stamped over %.0f s ahead of this machine's clock "
                        "not filed (a sender's clock ahead, or a replay faster than real time)",
                        counted(ahead, "reading"), alert_id, CLOCK_SLACK_S)

    def holding(self, asset: str) -> bool:
        """Whether an alert of ``asset`` is up here: its readings are held back, none committed."""
        with self._lock:
            return self._quiet_until.get(asset, -np.inf) == np.inf

    def forget(self, asset: str, after: float | None = None) -> None:
        """The asset left this recorder (moved to another worker, or silent after its alert was
        filed): its held readings go (its new owner records from what it receives); with ``after``,
        those stamped after it stay: the asset came back while its silence was being ended (its
        queued windows are judged first, and its readings were taken meanwhile: a review). The guard band
        after its last clear stays: a machine that tripped on its fault, went silent and restarted
        within the band had its start-up readings recorded as normal data (found by review).

        An alert still up (a cluster partition handed over while it is up) has its held readings up to
        its newest scored window filed as a part of its file, as a shutdown files them: its new owner
        records only the readings it takes itself, and dropped here, the alert's file held only the
        readings after the move (its onset lost: a walk)."""
        horizon = time.time() + CLOCK_SLACK_S
        with self._lock:
            held = self._pending.pop(asset, ())
            alert_id = self._up.get(asset)
            if alert_id and after is None:
                self._file_held(asset, alert_id, held, horizon)
            back = [row for row in held if after is not None and row[0] > after]
            if back:
                self._pending[asset] = deque(back)
            self._pending_rows -= len(held) - len(back)
            self._up.pop(asset, None)
            if self._quiet_until.get(asset) == np.inf:  # an alert up: filed by its end (a clear's band)
                del self._quiet_until[asset]
            self._judged.pop(asset, None)
            self._bound_guards()

    def commit(self, now_ts: float | None = None) -> None:
        """Move each asset's readings older than the guard band before its newest scored window
        (reading time; ``now_ts``: as if every asset were judged up to it) to the write buffer."""
        with self._lock:
            for asset, pending in self._pending.items():
                if self._quiet_until.get(asset, -np.inf) == np.inf:
                    continue
                judged = self._judged.get(asset, -np.inf) if now_ts is None else now_ts
                while pending and pending[0][0] < judged - self.guard_s:
                    ts, values = pending.popleft()
                    self._pending_rows -= 1
                    self._ready.append((asset, ts, values))

    def flush(self, now_ts: float | None = None, force: bool = False) -> Path | None:
        """Commit what is due and write a file when enough rows or time accumulated (or ``force``).

        ``force`` (shutdown) writes what is committed now; readings still inside the guard band
        are dropped, not committed: an alert they might have preceded can no longer be seen. An
        alert still up has its held readings up to its newest scored window written to ``alerts/``
        as a part of its file (after a restart it clears as the alert it was, and its later
        readings are the next part): they were lost, and its acknowledgement said they were kept.
        Those after that window are dropped: they may belong after its clear.
        """
        self._save_guards(force)
        if force:
            horizon = time.time() + CLOCK_SLACK_S
            with self._lock:
                for asset, alert_id in self._up.items():
                    held = list(self._pending.pop(asset, ()))
                    self._pending_rows -= len(held)
                    # (later ones went into the part, and may belong after its clear: a review)
                    self._file_held(asset, alert_id, held, horizon)
        else:
            self._part_alerts_up()
        self.commit(now_ts)
        if self._write_alerts():  # the caps hold whatever was written (a whole fleet alerting writes no normal file)
            self._enforce_bounds()
        due = force or len(self._ready) >= self.flush_rows
        due = due or time.monotonic() - self._last_flush >= self.flush_interval_s
        if not due or not self._ready:
            return None
        with self._lock:
            rows, self._ready = self._ready, []
        self._last_flush = time.monotonic()
        day = time.strftime("%Y%m%d", time.gmtime(rows[0][1]))
        self._seq += 1
        try:
            stem = self.directory / day / f"part-{int(time.time() * 1000)}-{os.getpid()}-{self._seq}"
            path = write_readings(rows, self.channels, stem)
        except OSError as exc:  # disk full, read-only, quota: report and keep serving
            self.write_failures += 1
            self.dropped += len(rows)  # (lost with the file: counted only as one failure, a walk)
            log.warning("recording: could not write %d readings (%s); scoring continues", len(rows), exc)
            return None
        self.rows_written += len(rows)
        self._worked()
        self._enforce_bounds()
        return path

    def _worked(self) -> None:
        """A write to the record dir worked: after failures, said once (as the state files' are), so the
        warnings of a full disk have an end in the log (a walk read none, and could not tell when)."""
        if (failed := self.write_failures - self._failures_said) > 0:
            log.info("recording: writing in %s works again (after %s)", self.directory,
                     counted(failed, "failed write"))
        self._failures_said = self.write_failures

    def flush_safely(self, force: bool = False) -> int:
        """:meth:`flush` that never raises (recording must never stop scoring); returns how many
        write failures happened since the last call (for the daemon's counter)."""
        try:
            self.flush(force=force)
        except Exception:  # noqa: BLE001 - a bug in writing is logged and counted, scoring goes on
            self.write_failures += 1
            log.exception("recording: writing readings failed")
        new, self._failures_reported = self.write_failures - self._failures_reported, self.write_failures
        return new

    def _enforce_bounds(self) -> None:
        with self._alert_lock:  # not while an acknowledgement moves an alert's file
            trim_store(self.directory, self.max_bytes, self.max_age_s)


def guard_seconds(guard_s: float, window: int, hop: int, raise_after: int, sample_period: float | None) -> float:
    """The guard band: ``guard_s`` or the samples an alert needs to rise after a fault starts
    (``window + raise_after x hop``) at the bundle's sample period, whichever is longer (at a 10 s
    period a 300 s band was shorter than the 440 s an alert of a window-32, hop-4 model takes with
    the default raise_after 3, so fault onsets were recorded as normal data)."""
    samples = window + raise_after * hop
    return max(guard_s, samples * sample_period) if sample_period else guard_s


def recording(settings: Settings, channels: tuple[str, ...], guard_s: float | None = None) -> Recorder | None:
    """The recorder ``settings`` ask for (``record_dir`` and its bounds), or None without one;
    ``guard_s``: the band to use (:func:`guard_seconds`; default ``record_guard_s``)."""
    if not settings.record_dir:
        return None
    return Recorder(Path(settings.record_dir), channels,
                    guard_s=settings.record_guard_s if guard_s is None else guard_s,
                    max_bytes=int(settings.record_max_mb * (1 << 20)),
                    max_age_s=settings.record_max_age_days * 86400.0)
