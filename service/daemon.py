"""The streaming daemon: MQTT readings in, batched scores, alert events and metrics out.

:class:`Daemon` wires the parts into threads and runs their lifecycle; each part has its module:

=======================  ===================================================================
``connection.py``        the MQTT client: connect with retries, subscribe, clean disconnect
``ingest.py``            readings in (parse, buffer, acknowledge, count), due windows out
``hotswap.py``           the served model, its watcher and hot swap under one lock
``batch_scoring.py``     a batch scored under one model, each asset's alert step, the listeners
``scoring_worker.py``    the scoring worker's loop: batches scored, housekeeping between them
``daemon_callbacks.py``  what the parts call back: shadow reports, maintenance, commands, recorder
``assets.py``            each asset's drift rule and alert machine, stepped per scored window
``publisher.py``         output topics and payloads
``recorder.py``          normal readings kept for retraining
``state.py``             per-asset state across restarts (``state_dir``)
=======================  ===================================================================

Threads, and who owns what:

- paho's network thread hands each message to :meth:`Ingest.handle
  <sensorguard.service.ingest.Ingest.handle>` (parse, buffer, acknowledge, count; never scores).
- the scoring worker takes batches of due windows (:meth:`Ingest.next_batch
  <sensorguard.service.ingest.Ingest.next_batch>`: a batch fills for at most ``batch_wait_ms`` or
  until ``batch_max`` windows), scores each batch in one forward pass with the same
  :class:`~sensorguard.service.scorer.Scorer` that ``sensorguard score`` uses, steps each asset's
  alert machine after the drift rule (:meth:`AssetAlerts.apply
  <sensorguard.service.assets.AssetAlerts.apply>`, the offline step), and about once a second
  runs :meth:`Daemon.housekeeping` (silent assets go stale, state is saved, readings recorded).
- the HTTP thread answers ``/metrics``, ``/healthz`` and ``/readyz``.
- the model watcher (only with ``registry``/``name``, or on SIGHUP) checks the registry's
  ``CURRENT`` every ``reload_poll_s`` (one small file read) and on :meth:`Daemon.request_reload`.

Hot swap (:class:`~sensorguard.service.hotswap.ModelHolder`): the new ``(bundle, scorer)`` pair
is built off every lock and assigned under the holder's lock, which the worker holds for the whole
forward pass of one batch. So a swap lands between two batches: the buffers and the queue of due
windows are untouched (no reading dropped or scored twice, the cadence goes on), each batch is
scored entirely by one model and its events carry that model's name, version and threshold, and
alert states carry over (1.0 is the line under either model), and the new bundle's cleaning
policy applies from the next reading. The daemon keeps the hop it started
with. A refused bundle leaves the old model serving and is not retried until ``CURRENT`` or the
files of the version it names change, or SIGHUP.

Recording (``record_dir``): every accepted reading is offered to the recorder on the network
thread (an append), alert events tell it which assets to hold back, and the worker commits and
writes files about once a second. Reading time for the guard band is the newest timestamp among
*scored* windows, not merely received ones: a backlog replayed after a restart cannot commit
readings before the alert machine has judged them.

Shutdown (:meth:`Daemon.stop`): stop accepting (unacknowledged messages stay with the broker and
come back with the persistent session), score every window already due, publish final states and
``offline``, disconnect without unsubscribing, stop the HTTP server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from sensorguard.service.alerts import AlertRules, AlertState
from sensorguard.service.assets import AssetAlerts
from sensorguard.service.batch_scoring import ScoredWindow
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import cleaning_policy, sensor_rules, silence_after
from sensorguard.service.command_handling import CommandHandler
from sensorguard.service.commands import AlarmControls
from sensorguard.service.config import Settings
from sensorguard.service.connection import Connection
from sensorguard.service.daemon_callbacks import DaemonCallbacks
from sensorguard.service.durable import remove_leftovers
from sensorguard.service.hotswap import ModelHolder
from sensorguard.service.ingest import Ingest
from sensorguard.service.instances import serves_asset
from sensorguard.service.jetstream import ClusterSource
from sensorguard.service.metrics import Metrics
from sensorguard.service.metrics_http import serve_http, shutdown_http
from sensorguard.service.publisher import Publisher
from sensorguard.service.recorder import guard_seconds, recording
from sensorguard.service.scorer import Scorer
from sensorguard.service.scoring_worker import ScoringWorker
from sensorguard.service.sensors import resumed_faults
from sensorguard.service.startup_log import announce
from sensorguard.service.state import SAVE_INTERVAL_S, restore_states, saved_extras
from sensorguard.service.state_writes import ASSETS, CONTROLS, StateWrites
from sensorguard.service.windows import Buffers

log = logging.getLogger(__name__)

STOP_BUDGET_S = 45.0  # a stop's waits together; then up to 5 s for the final publishes (under the 60 s kill)
REPORT_WAIT_S = 5.0  # the last shadow report's write waited for at stop (after the final publishes)
STUCK_S = 120.0  # a scoring worker not round its loop for this long is reported stuck (/healthz 503)


class Daemon(ScoringWorker, DaemonCallbacks):
    """One ``sensorguard serve`` process: build with settings and a bundle, then :meth:`start`.

    The wiring of the parts (ingest, model holder, asset alerts, publisher, recorder) into threads,
    and their lifecycle (the scoring worker's loop: :class:`~sensorguard.service.scoring_worker.ScoringWorker`).
    registry: the Prometheus registry to fill (a fresh one by default, never the global one).
    """

    def __init__(self, settings: Settings, bundle: Bundle, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, settings.max_assets)
        for partition in settings.static_partitions():
            self.metrics.partition_info.labels(settings.instance_name, partition).set(1)
        self.rules = AlertRules(
            raise_after=settings.raise_after,
            clear_after=settings.clear_after,
            clear_level=settings.clear_level,
            clear_at=settings.clear_at,
            stale_after=silence_after(settings.stale_after_s, cleaning_policy(bundle, settings)),
            raise_at=bundle.raise_at,
        )
        self.hop = settings.hop or bundle.hop
        self.publisher = Publisher(settings)  # owns topics and payloads; its client is set on start
        self.publisher.on_dropped = lambda kind: self.metrics.publishes_dropped.labels(kind).inc()
        self.models = ModelHolder(settings, bundle, self.metrics, self.publisher, self.hop)
        try:  # a candidate in the registry's SHADOW is scored from the first window
            self.models.check_shadow()
        except Exception:  # noqa: BLE001 - an experiment must never stop the daemon from starting
            log.exception("checking for a shadow model failed; serving without one")
        self.buffers = Buffers(bundle.channels, bundle.window, self.hop, max_assets=settings.max_assets,
                               policy=cleaning_policy(bundle, settings),
                               sensors=sensor_rules(bundle, cleaning_policy(bundle, settings)),
                               alert_hop=self.alert_hop_of(bundle), ignored=bundle.ignored_columns)
        self.recorder = recording(settings, bundle.channels,
                                  guard_seconds(settings.record_guard_s, bundle.window, self.hop,
                                                settings.raise_after, bundle.sample_period))
        self.ingest = Ingest(settings, self.buffers, self.metrics, self.recorder)
        self.models.on_swap = self._swapped
        # Cluster mode keeps each asset's controls in the state bucket, where its next owner finds
        # them; a local copy would come back stale after the asset moved away and back.
        controls_dir = None if settings.cluster else settings.state_dir
        if settings.state_dir:  # (before anything in it is read or written)
            remove_leftovers(settings.state_dir, (ASSETS, CONTROLS))
        self.controls = AlarmControls(controls_dir, writes=StateWrites(self.metrics.state_write_failures, controls_dir),
                                      forgotten=self.metrics.alerts_forgotten)
        # one read of the extras (a file restore_states sets aside reads as none; what a bad entry held is
        # left out below, with the entry). The assets silent at the save, of this instance's partitions, are
        # awaited as such, not restored as live ones, and nothing else of their entries is taken. Cluster
        # mode takes nothing from the file: the state bucket is what an asset's owner adopts, and a worker
        # restarted without its partitions exported the alerts its file held as active, over their owner's
        # clear, until they expired (a walk: SensorguardAssetAnomaly would fire on an alert cleared)
        extras = saved_extras(None if settings.cluster else settings.state_dir)
        judged, left_open, named, silences = extras.judged, extras.faults, extras.channels, extras.silences
        awaited = {a for a in silences if serves_asset(settings, a)}
        restored = {} if settings.cluster else restore_states(settings.state_dir, settings.max_assets, awaited)
        silent = {a: (*silences[a], restored.pop(a)[1]) for a in sorted(awaited, key=lambda a: silences[a][0])
                  if a in restored}  # (oldest first)
        floors = {asset: ts for asset, ts in judged.items() if asset in restored}
        if not settings.cluster:  # (cluster mode: the state bucket's judged_ts; a prime takes the older readings)
            self.buffers.floors = dict(floors)  # readings the previous run judged are not judged again
        self.alerts = AssetAlerts(self.rules, self.publisher, self.metrics, self.recorder, lambda: self.models.bundle,
                                  restored, settings.state_dir, self.controls, self.hop, floors)
        self.alerts.on_handed_over = self._shadow_forgets  # its machines for an asset moved away end too
        # (before the silences: their restated states include these; cluster mode: none, as the silences)
        self.alerts.restore_returns({a: ts for a, ts in extras.returned.items() if a in restored})
        self.alerts.restore_silences(silent)
        self.alerts.restored_channels = {a: c for a, c in named.items() if a in restored}
        if not settings.cluster:  # open sensor faults go on (cluster mode: not carried); those the model cannot
            # judge any more are told ended (published once the publisher has its client)
            faults, ended = resumed_faults({a: f for a, f in left_open.items() if a in restored},
                                           self.models.bundle.sensors, judged)
            self.alerts.restore_faults(faults)
            self.buffers.resumed_faults = faults
            self.buffers.resumed_past = {a: p for a, p in extras.past.items() if a in restored}
            self.ingest.fault_closes(ended, "the model served cannot judge them")
        self.source = (ClusterSource(settings, self.ingest, self.metrics, self.alerts, self.controls,
                                     lambda: self.connection.publishes(), lambda: self.models.bundle)
                       if settings.cluster else None)
        self.commands = CommandHandler(settings, self.controls, self.publisher, self.metrics, self._commanded,
                                       *((self.source.serves, self.source.taking_over) if self.source else ()))
        self.alerts.serves = self._serves
        if not settings.cluster:  # (cluster mode reads nothing back from the file: nor the lock taken at a save)
            self.alerts.past_limits = self._past_limits
        self.buffers.resume_within = self.rules.stale_after
        if self.recorder is not None:  # an asset in maintenance (live or restored) records nothing as normal
            self.recorder.excluded = self._in_maintenance
            self.recorder.verdict = self.controls.false_alarm
        self.connection = Connection(settings, self.metrics, self.publisher, self.ingest.handle,
                                     lambda: self.ingest.stopping, self.commands,
                                     None if self.source else self.ingest.backlogged)  # (cluster: no readings here)
        self._listeners: list[Callable[[ScoredWindow], None]] = []
        self._stopped = False
        self.unsaved_at_stop = False  # the final save failed: serve exits EXIT_UNSAVED
        self._http: tuple[Any, threading.Thread] | None = None
        self._threads: list[threading.Thread] = []  # the scoring worker first
        self._beat = time.monotonic()  # the scoring worker's last time round its loop
        self._next_save = 0.0
        self._next_shadow_report = 0.0
        self._walks: dict[str, tuple] = {}  # where channels walked past their limits stood at the last look
        self._walk_save_after = 0.0
        self._reporting: threading.Thread | None = None  # the shadow report being written
        self._record_dropped = 0  # recorder drops already counted in the metric

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve HTTP, start the scoring worker and model watcher, connect (in the background, with retries)."""
        s = self.settings
        b = self.bundle
        self.metrics.set_model(b.name, b.version, b.threshold_, b.calibration.get("expected_false_alarms_per_day"))
        self.alerts.restore_until = time.monotonic() + self.rules.stale_after
        self._next_save = time.monotonic() + SAVE_INTERVAL_S
        self._beat = time.monotonic()
        self._http = serve_http(self.registry, s.metrics_host, s.metrics_port, self.ready, self.alive,
                                why_not=self.not_ready)
        self._threads = [
            threading.Thread(target=self._work, name="sensorguard-scorer", daemon=True),
            threading.Thread(target=self.models.watch, args=(lambda: self.ingest.stopping,),
                             name="sensorguard-model-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.ingest.accepting = True
        self.connection.open()  # in cluster mode for alerts, states and commands only
        if self.source is not None:
            self.source.start()
        self.announce()

    def alert_hop_of(self, bundle: Bundle) -> int:
        """The hop while an alert is up: the bundle's, where it is served at its own hop (else the hop)."""
        return bundle.alert_hop if self.hop == bundle.hop else 0

    def _swapped(self, new: Bundle) -> None:
        """A new model is served: its cleaning policy and sensor limits, ignored columns, the score its
        line raises at once at, its alert hop, its recorder guard band (a longer sample period needs
        a longer one, or a fault's onset is recorded as normal), and every asset's retained state."""
        s = self.settings
        self.buffers.set_alert_hop(self.alert_hop_of(new))
        if gone := sorted(self.buffers.ignored - set(new.ignored_columns)):  # (a rollback to an older bundle: a review)
            log.warning("model %s %s no longer ignores %s: readings that carry them are refused as unknown_channel",
                        new.name, new.version, ", ".join(gone[:5]))
        self.buffers.set_ignored(new.ignored_columns)
        policy = cleaning_policy(new, s)
        self.ingest.set_policy(policy, sensor_rules(new, policy))
        silence = silence_after(s.stale_after_s, policy)  # (its sampling may have changed)
        if (silence, new.raise_at) != (self.rules.stale_after, self.rules.raise_at):
            self.rules = self.alerts.rules = replace(self.rules, stale_after=silence, raise_at=new.raise_at)
            self.buffers.resume_within = silence  # (read under no lock: a float replaced whole)
        if self.recorder is not None:
            self.recorder.guard_s = guard_seconds(s.record_guard_s, new.window, self.hop, s.raise_after,
                                                  new.sample_period)
        # each asset's retained state names the model and its line, and is published when its status
        # changes: an asset normal all along named the old model for good (a walk). Sent again, paced,
        # on the scoring thread, as after a broker lost them
        self.alerts.model_swapped = True

    def announce(self) -> None:
        """Log what is served, and every setting that breaks the bundle's promise or live == offline
        (:func:`~sensorguard.service.startup_log.announce`)."""
        announce(self.settings, self.bundle, self.hop, self.metrics_address, self.buffers.policy, self.rules,
                 None if self.recorder is None else self.recorder.guard_s)

    def stop(self) -> None:
        """Finish what is in hand, publish final states and ``offline``, disconnect. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # one budget for every wait: 30 s each (cluster source, scorer, model watcher) outlasted the
        # parent's and systemd's kill (60 s, 75 s) before the final states and "offline" went out
        deadline = time.monotonic() + STOP_BUDGET_S
        if self.source is not None:
            self.source.stop(timeout=25.0)  # no more fetching; its partitions are handed over (~21 s at most)
        self.ingest.stop()  # from now on messages are not acked: the session keeps them
        self.commands.stop()  # commands too (the one in hand is finished)
        self.models.wake()
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._flush_recorder(force=True)
        if self._threads and self._threads[0].is_alive():  # an error with a state_dir, as the docs say: not saved
            self.unsaved_at_stop = bool(self.settings.state_dir)
            (log.error if self.unsaved_at_stop else log.warning)(
                "the scoring worker did not finish in %.0f s: asset state not saved at stop", STOP_BUDGET_S)
        elif not self.alerts.save():  # it said "stopped" and exited 0, the changes since the last save lost
            self.unsaved_at_stop = True
            log.error("the final save to %s failed (see above): the next start resumes from the last save that "
                      "worked, without what changed since (alert states, holds, acknowledgements)",
                      self.settings.state_dir)
        self.connection.close(lambda: [*self.alerts.publish_states(), self.publisher.status(online=False)])
        self._report_shadow(wait_s=min(REPORT_WAIT_S, max(0.1, deadline - time.monotonic())))  # after "offline"
        if self._http is not None:
            shutdown_http(*self._http)
        log.info("stopped%s", " without its final save" if self.unsaved_at_stop else "")

    def run_forever(self, stop_event: threading.Event) -> None:
        """Start, wait for ``stop_event`` (set by a signal handler), stop."""
        self.start()
        try:
            while not stop_event.wait(0.5):
                pass
            # said as it begins: a SIGTERM's stop (its windows scored, its partitions handed over) was
            # seen in the log only at its end, "stopped" (a cluster walk)
            log.info("stopping: scoring the windows due%s%s", ", handing the partitions over" if self.settings.cluster
                     else "", ", then the final save" if self.settings.state_dir and not self.settings.cluster else "")
        finally:
            self.stop()

    def alive(self) -> bool:
        """The scoring worker is running and came round its loop within ``STUCK_S`` (``/healthz``):
        a dead or hung worker left /healthz and /readyz green while nothing was scored, and the
        network thread then blocked on the full buffers, so the connection looked up too."""
        worker = self._threads[0] if self._threads else None
        if worker is None or worker.ident is None or self._stopped:  # not started yet, or stopping
            return True
        return worker.is_alive() and time.monotonic() - self._beat < STUCK_S

    def ready(self) -> bool:
        """Model loaded, broker (and cluster) connected, scoring worker alive (``/readyz``)."""
        return not self.not_ready()

    def not_ready(self) -> list[str]:
        """Why ``/readyz`` is red, one reason each (its 503 body: a probe's log then says which)."""
        reasons = []
        if not self.alive():
            reasons.append(f"the scoring worker is dead or has not come round its loop for {STUCK_S:.0f} s")
        if self.scorer is None:
            reasons.append("no model loaded yet")
        if not self.connection.connected.is_set():
            reasons.append(f"not connected to the broker {self.settings.redacted()['broker']}")
        if self.ingest.stopping:
            reasons.append("stopping")
        if self.connection.refused:
            reasons.append(f"the broker refused a subscription ({', '.join(self.connection.refused)})")
        if self.source is not None and not self.source.ready.is_set():
            waiting = getattr(self.source, "waiting_for", None)
            reasons.append("the cluster's reading stream is not connected" + (f": {waiting}" if waiting else ""))
        if self.source is not None and self.source.ownership is not None and self.source.ownership.disagreement:
            reasons.append(self.source.ownership.disagreement)
        return reasons

    @property
    def metrics_address(self) -> tuple[str, int]:
        """Host and port the HTTP server listens on (useful with port 0)."""
        if self._http is None:
            return self.settings.metrics_host, self.settings.metrics_port
        address = self._http[0].server_address
        return str(address[0]), int(address[1])

    def add_listener(self, listener: Callable[[ScoredWindow], None]) -> None:
        """Call ``listener`` (on the worker thread) for every scored window; keep it quick."""
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, AlertState]:
        """Each asset's current alert state (a copy)."""
        return self.alerts.snapshot()

    @property
    def bundle(self) -> Bundle:
        """The bundle being served now (it changes on a hot swap)."""
        return self.models.bundle

    @property
    def scorer(self) -> Scorer:
        return self.models.scorer

    def request_reload(self) -> None:
        """Check for a new model now (SIGHUP; :meth:`ModelHolder.request_reload`); signal-handler safe."""
        self.models.request_reload()
