"""The daemon's scoring worker: batches of due windows scored, and housekeeping about once a second.

:class:`ScoringWorker` is the part of :class:`~sensorguard.service.daemon.Daemon` that runs on the
scoring worker's thread (the daemon's module says which thread owns what): it takes batches from
the ingest, publishes the sensor faults their readings opened first, scores each batch under one
model (:func:`~sensorguard.service.batch_scoring.score_batch`), and between batches ends silent
assets, applies the commands' changes, sends again what the full outgoing queue dropped, saves
state and flushes the recorder. Each step fails on its own: an error is logged and the loop goes
on, or nothing would be scored. It is a mixin, not a class of its own, because it steps the parts
the daemon wires; ``Daemon.__init__`` sets everything listed below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sensorguard.service.alerts import AlertRules
from sensorguard.service.asset_buffer import DueWindow
from sensorguard.service.assets import AssetAlerts
from sensorguard.service.batch_scoring import ScoredWindow, score_batch
from sensorguard.service.command_handling import CommandHandler
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.connection import Connection
from sensorguard.service.hotswap import ModelHolder
from sensorguard.service.ingest import Ingest
from sensorguard.service.jetstream import ClusterSource
from sensorguard.service.metrics import Metrics
from sensorguard.service.publisher import Publisher
from sensorguard.service.recorder import Recorder
from sensorguard.service.state import SAVE_INTERVAL_S
from sensorguard.service.walked_channels import walk_marks
from sensorguard.service.windows import Buffers

# The daemon's logger: these lines keep the name they are known by (``logger`` in JSON logs, filters).
log = logging.getLogger("sensorguard.service.daemon")

HOUSEKEEPING_S = 1.0  # how often silent assets are looked for and gauges refreshed
WALK_SAVE_S = 5.0  # a walk past the sensor limits asks for a save at most this long after the last one


class ScoringWorker:
    """The scoring worker's loop and housekeeping (a mixin of :class:`~sensorguard.service.daemon.Daemon`,
    which owns the attributes declared here)."""

    settings: Settings
    metrics: Metrics
    rules: AlertRules
    buffers: Buffers
    ingest: Ingest
    models: ModelHolder
    alerts: AssetAlerts
    recorder: Recorder | None
    controls: AlarmControls
    connection: Connection
    publisher: Publisher
    source: ClusterSource | None
    commands: CommandHandler
    _listeners: list[Callable[[ScoredWindow], None]]
    _beat: float  # the scoring worker's last time round its loop
    _next_save: float
    _next_shadow_report: float
    _walks: dict[str, tuple]
    _walk_save_after: float
    _report_shadow: Callable[[], None]  # (methods of Daemon)
    _flush_recorder: Callable[[], None]
    _shadow_forgets: Callable[[str], None]

    def _work(self) -> None:
        next_housekeeping = 0.0
        while True:
            self._beat = time.monotonic()
            try:
                batch, last = self.ingest.next_batch(HOUSEKEEPING_S)
            except Exception:  # noqa: BLE001 - a bug here must not end the worker (nothing would be scored)
                log.exception("taking a batch failed")
                batch, last = [], self.ingest.stopping
                time.sleep(HOUSEKEEPING_S)
            try:  # each step on its own: a failure in one must not take the others' work with it
                self.publish_sensor_faults()  # before the windows of their readings
            except Exception:  # noqa: BLE001 - keep serving; the error is logged
                log.exception("publishing sensor faults failed")
            if batch:
                self._score_counted(batch)
            try:
                if self.source is not None:
                    self.source.step()  # cluster mode: hand assets over, pass changed states on
                now = time.monotonic()
                if not last and now >= next_housekeeping:
                    self.housekeeping(now)
                    next_housekeeping = now + HOUSEKEEPING_S
            except Exception:  # noqa: BLE001 - keep serving; the error is logged
                log.exception("cluster step or housekeeping failed")
            if last:
                return

    def publish_sensor_faults(self) -> None:
        """Sensor faults opened or closed since the last call: counted and published (worker thread).
        They wait while the publisher has no client yet: the worker starts before the connection is
        opened, and the closes queued at start were only logged (a review)."""
        if self.publisher.client is None:
            return
        for asset, event in self.ingest.sensor_events():
            self.alerts.sensor(asset, event)

    def _score_counted(self, batch: list[DueWindow]) -> None:
        """:meth:`score_batch`; a failure is logged and its windows counted, and the worker goes on."""
        try:
            self.score_batch(batch)
        except Exception:  # noqa: BLE001 - keep scoring the next batches; the loss is counted
            # every window, off the hop grid too: a batch of an alert's windows alone counted 0, and the
            # SensorguardScoringFailing rule missed it (a review)
            self.metrics.windows_dropped.labels("scoring_failed").inc(len(batch))
            log.exception("scoring a batch of %d windows failed", len(batch))

    def _serves(self, asset: str) -> bool:
        """Whether ``asset`` is this instance's now: one of its partitions' (cluster mode: its worker's,
        also while being taken over or its lease is unsure for a moment)."""
        if self.source is not None:
            return self.source.serves(asset) or self.source.taking_over(asset)
        return self.commands.owns(asset)

    def _walked_on(self, now: float) -> None:
        """A channel walked past its sensor limits that moved by half its ``jump`` since the last
        look asks for a save (:func:`~sensorguard.service.walked_channels.walk_marks`), at most one
        every ``WALK_SAVE_S`` (a plant-wide walk of 10,000 assets asked for one every second, each
        0.2 s of this thread and 1.7 MB written: a review): saved only every ``SAVE_INTERVAL_S``, a
        ``kill -9`` during a walk restarted the watch from an older value (or from the limit, the walk
        having crossed it since the last save), and told the process a sensor fault, held it and
        cleared the alert it raised (an operator walk). Looked at only when a save may follow."""
        if now >= self._walk_save_after:
            marks = walk_marks(self._past_limits(), self.buffers.sensors, self._walks)
            if marks != self._walks:  # (left as they were meanwhile: the next look sees the move again)
                self._walks = marks
                self.alerts.save_soon = True

    def _past_limits(self) -> dict[str, dict[str, float]]:
        """Per asset, its channels walked past their sensor limits (saved with its state: a restart's
        watch goes on from their last plausible values, :meth:`Buffers.past_limits`)."""
        with self.ingest.cond:
            return self.buffers.past_limits()

    def _still_ours(self, windows: list[DueWindow]) -> list[DueWindow]:
        """Cluster mode: the windows whose partition is still this worker's. Taken out of the queue,
        they escape ``Ingest.drop`` when the lease is lost meanwhile, and the new owner scores them
        too (the same alerts twice; a review): dropped and counted as that would have."""
        if self.source is None:
            return windows
        kept = [w for w in windows if self.source.serves(w.asset)]
        if lost := sum(w.coarse for w in windows) - sum(w.coarse for w in kept):
            self.metrics.windows_dropped.labels("partition_lost").inc(lost)
        return kept

    def score_batch(self, batch: list[DueWindow]) -> None:
        """Score due windows in one forward pass, step their assets' alerts, tell the listeners
        (:func:`~sensorguard.service.batch_scoring.score_batch`)."""
        score_batch(batch, self.models, self.alerts, self.metrics, self.recorder, lambda: self.rules, self._listeners)

    def housekeeping(self, now: float) -> None:
        """About once a second on the worker: assets silent for ``stale_after_s`` go stale and free
        their slots (their windows still queued judged first), restored assets that never came back
        end, state is saved, readings recorded.

        Silence counts only while connected, from the later of an asset's last reading and the
        last (re)connect: a broker outage makes no asset stale, and after it the readings the
        broker kept arrive and are scored into the same buffers and alert states.
        """
        self.ingest.say_rewound()  # (assets rewound since the last such line, once its interval passed)
        self.connection.say_refused()  # (outgoing messages refused since the last such line, likewise)
        since = self.connection.connected_since
        if since is not None and now - since >= self.rules.stale_after:
            silent, queued, refused = self.ingest.forget_silent(now - self.rules.stale_after)
            step = max(1, self.settings.batch_max)
            for start in range(0, len(queued), step):  # judged before their silence ends them, as offline
                self._score_counted(self._still_ours(queued[start : start + step]))
            for asset, last_ts in silent.items():
                self.alerts.end(asset, last_ts, refused.get(asset))
                self._shadow_forgets(asset)
                if asset in refused:
                    log.warning("asset %s: none of its readings taken for %.0f s, they were refused (%s: see the "
                                "rejected-reading lines): silent", asset, self.rules.stale_after, refused[asset])
                else:
                    log.info("asset %s sent nothing for %.0f s: silent", asset, self.rules.stale_after)
            self.alerts.expire_restored(now, self.ingest.holds, self._serves)
            if self.buffers.floors or self.buffers.resumed_faults or self.buffers.resumed_past:
                with self.ingest.cond:
                    self.buffers.drop_floors(lambda asset: asset in self.alerts.restored)
        for asset, kind in self.controls.expired(time.time()):  # a shelving or maintenance whose time is up
            log.info("%s of %s ended (its time was up)", kind, asset, extra={"asset": asset})
            self.alerts.request_control_change(asset, False if kind == "maintenance" else None)
        self.alerts.apply_control_changes()
        if self.connection.session_lost:  # (set on paho's thread; a repeat only queues the same assets)
            self.connection.session_lost = False
            self.alerts.states_lost()
        if self.alerts.model_swapped:  # (set by the swap: the states name the model served)
            self.alerts.model_swapped = False
            self.alerts.states_lost()
        self.alerts.resend_clears()
        self.alerts.resend_states()
        for kind, count in self.controls.counts(time.time()).items():
            self.metrics.assets_held.labels(kind).set(count)
        self.alerts.count_held_faults()
        walks = bool(self.alerts.state_dir) and not self.settings.cluster and self.buffers.sensors is not None
        if walks:
            self._walked_on(now)
        if now >= self._next_save or self.alerts.save_soon or self.alerts.confirmed_since_save():
            self.alerts.save()
            self._next_save, self._walk_save_after = now + SAVE_INTERVAL_S, now + WALK_SAVE_S
            if walks:  # the file holds these values now: the marks start from them
                self._walks = walk_marks(self._past_limits(), self.buffers.sensors)
        self._flush_recorder()
        if now >= self._next_shadow_report:
            self._report_shadow()
            self._next_shadow_report = now + self.settings.shadow_report_s
