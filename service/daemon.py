"""The streaming daemon: MQTT readings in, batched scores, alert events and metrics out.

Threads, and who owns what:

- paho's network thread runs :meth:`Daemon._on_message`, which hands the message to
  :class:`~sensorguard.service.ingest.Ingest` (parse, buffer, acknowledge, count; never scores).
- the scoring worker waits for due windows, lets a batch fill for at most ``batch_wait_ms`` (or
  until ``batch_max`` windows), scores the whole batch in one forward pass with the same
  :class:`~service.scorer.Scorer` that ``sensorguard score`` uses, steps each asset's alert
  machine after the drift rule (:func:`service.alerts.judge`), publishes events and retained states, updates metrics,
  and about once a second marks silent assets stale.
- the HTTP thread answers ``/metrics``, ``/healthz`` and ``/readyz``.

- the model watcher (only with ``registry``/``name``, or on SIGHUP) checks the registry's
  ``CURRENT`` every ``reload_poll_s`` (one small file read) and on :meth:`Daemon.request_reload`.

Hot swap (:meth:`Daemon.check_model`, done by :class:`~sensorguard.service.hotswap.ModelHolder`):
the new ``(bundle, scorer)`` pair is built off every lock and assigned under the holder's lock,
which the worker holds for the whole forward pass of one batch. So a swap lands between two
batches: the buffers and the queue of due windows are untouched (no reading dropped or scored
twice, the cadence goes on), each batch is scored entirely by one model and its events carry that
model's name, version and threshold, and alert states carry over (1.0 is the line under either
model). The daemon keeps the hop it started with. A refused bundle leaves the old model serving
and is not retried until ``CURRENT`` changes again or SIGHUP.

Publishing (:class:`~sensorguard.service.publisher.Publisher`) owns the output topics and
payloads; the daemon decides when to publish.

Recording (``record_dir``): every accepted reading is offered to a
:class:`~service.recorder.Recorder` on the network thread (an append), alert events tell it which
assets to hold back, and the worker commits and writes files about once a second. Reading time
for the guard band is the newest timestamp among *scored* windows, not merely received ones: a
backlog replayed after a restart cannot commit readings before the alert machine has judged them.

Shutdown (:meth:`Daemon.stop`): stop accepting (unacknowledged messages stay with the broker and
come back with the persistent session), score every window already due, publish final states and
``offline``, disconnect without unsubscribing, stop the HTTP server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from sensorguard.service import mqtt
from sensorguard.service.alerts import AlertEvent, AlertRules, AlertState, judge, mark_stale
from sensorguard.service.bundle import Bundle
from sensorguard.service.config import Settings
from sensorguard.service.drift import DriftState, widening
from sensorguard.service.hotswap import ModelHolder
from sensorguard.service.ingest import Ingest
from sensorguard.service.logs import first_line
from sensorguard.service.metrics import Metrics, serve_http, shutdown_http
from sensorguard.service.publisher import Publisher
from sensorguard.service.recorder import Recorder
from sensorguard.service.scorer import Scorer
from sensorguard.service.state import SAVE_INTERVAL_S, StateError, load_states, save_states, set_aside
from sensorguard.service.windows import Buffers, DueWindow

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0  # how often silent assets are looked for and gauges refreshed
PUBLISH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ScoredWindow:
    """One scored window, as handed to listeners (the demo's view, tests)."""

    asset: str
    ts: float
    score: float
    error: float
    status: str
    channels: list[dict]


class Daemon:
    """One ``sensorguard serve`` process: build with settings and a bundle, then :meth:`start`.

    registry: the Prometheus registry to fill (a fresh one by default, never the global one).
    """

    def __init__(self, settings: Settings, bundle: Bundle, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, settings.max_assets)
        self.rules = AlertRules(
            raise_after=settings.raise_after,
            clear_after=settings.clear_after,
            clear_level=settings.clear_level,
            stale_after=settings.stale_after_s,
        )
        self.hop = settings.hop or bundle.hop
        self.publisher = Publisher(settings)  # owns topics and payloads; its client is set on start
        self.models = ModelHolder(settings, bundle, self.metrics, self.publisher, self.hop)
        self._cond = threading.Condition()  # guards buffers; signals the worker
        self.buffers = Buffers(
            bundle.channels,
            bundle.window,
            self.hop,
            max_assets=settings.max_assets,
            fill_limit=settings.fill_limit,
            max_gap_s=settings.max_gap_s,
        )
        self._states: dict[str, AlertState] = {}
        self._drift: dict[str, DriftState] = {}  # per asset, kept across model swaps (relative to the baseline)
        self._latest: dict[str, tuple[float, list[dict]]] = {}  # asset -> (ts, top channels) of its last window
        self._listeners: list[Callable[[ScoredWindow], None]] = []
        self._accepting = False
        self._stopping = False
        self._stopped = False
        self._connected = threading.Event()
        self._http: tuple[Any, threading.Thread] | None = None
        self._worker: threading.Thread | None = None
        # hot swap
        self._watcher: threading.Thread | None = None
        self._reload_wake = threading.Event()
        self._reload_forced = False
        # recording
        self.recorder: Recorder | None = None
        if settings.record_dir:
            self.recorder = Recorder(
                Path(settings.record_dir),
                bundle.channels,
                guard_s=settings.record_guard_s,
                max_bytes=int(settings.record_max_mb * (1 << 20)),
                max_age_s=settings.record_max_age_days * 86400.0,
            )
        self.ingest = Ingest(settings, self.buffers, self._cond, self.metrics, self.recorder, lambda: self._stopping)
        self._judged_ts = -np.inf  # newest reading ts among scored windows (the recorder's clock)
        self._record_failures_seen = 0
        # per-asset state saved across restarts: restored entries wait for their asset's next window
        self._restored: dict[str, tuple[AlertState, DriftState | None]] = self._load_states()
        self._restore_until = 0.0  # monotonic time after which restored assets that never came back go
        self._next_save = 0.0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve HTTP, start the scoring worker, connect (in the background, with retries)."""
        s = self.settings
        b = self.bundle
        self.metrics.set_model(b.name, b.version, b.threshold_)
        self._restore_until = time.monotonic() + self.rules.stale_after
        self._next_save = time.monotonic() + SAVE_INTERVAL_S
        self._http = serve_http(self.registry, s.metrics_host, s.metrics_port, self.ready)
        self._worker = threading.Thread(target=self._work, name="sensorguard-scorer", daemon=True)
        self._worker.start()
        self._watcher = threading.Thread(target=self._watch, name="sensorguard-model-watch", daemon=True)
        self._watcher.start()
        client = mqtt.create_client(s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._accepting = True
        mqtt.connect_async(client, s)
        host, port = self.metrics_address
        log.info(
            "serving model %s %s (%d channels, window %d, hop %d, threshold %.4g); broker %s (MQTT %s, "
            "client id %s); metrics on http://%s:%d/metrics",
            b.name, b.version, len(b.channels), b.window, self.hop, b.threshold_,
            s.redacted()["broker"], s.mqtt_version, s.client_id, host, port,
        )
        if (note := hop_warning(self.hop, b)) is not None:
            log.warning(note)
        if self.recorder is not None:
            log.info("recording readings far from alerts to %s (guard %.0f s, at most %g MB, %g days)",
                     s.record_dir, s.record_guard_s, s.record_max_mb, s.record_max_age_days)

    def stop(self) -> None:
        """Finish what is in hand, publish final states and ``offline``, disconnect. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False  # from now on messages are not acked: the session keeps them
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._reload_wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        self._flush_recorder(force=True)
        if self._worker is not None and self._worker.is_alive():
            log.warning("the scoring worker did not finish in 30 s: asset state not saved at stop")
        else:
            self._save_states()
        client = self._client
        if client is not None:
            infos = [info for asset in list(self._states) if (info := self._publish_state(asset)) is not None]
            infos.append(self.publisher.status(online=False))
            if self._connected.is_set() and not mqtt.wait_published(infos, PUBLISH_TIMEOUT_S):
                log.warning("some final states were not confirmed by the broker before disconnecting")
            client.disconnect()  # a normal disconnect: no Last Will, no unsubscribe, the session stays
            client.loop_stop()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if self._http is not None:
            shutdown_http(*self._http)
        log.info("stopped")

    def run_forever(self, stop_event: threading.Event) -> None:
        """Start, wait for ``stop_event`` (set by a signal handler), stop."""
        self.start()
        try:
            while not stop_event.wait(0.5):
                pass
        finally:
            self.stop()

    def ready(self) -> bool:
        """Model loaded and broker connected (``/readyz``)."""
        return self.scorer is not None and self._connected.is_set() and not self._stopping

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
        return dict(self._states)

    def drift_snapshot(self) -> dict[str, DriftState]:
        """Each asset's drift baseline (a copy; empty when the bundle has no drift rule)."""
        return dict(self._drift)

    # --- model hot swap (the watcher thread) --------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        """The bundle being served now (it changes on a hot swap)."""
        return self.models.bundle

    @property
    def scorer(self) -> Scorer:
        return self.models.scorer

    @property
    def model_checks(self) -> int:
        """Calls of check_model so far (polls and SIGHUPs)."""
        return self.models.checks

    @property
    def swaps(self) -> list[dict]:
        """One record per swap (versions, timings): logs, tests, benchmarks."""
        return self.models.swaps

    def request_reload(self) -> None:
        """Check for a new model now (SIGHUP). Only sets flags, so it is safe in a signal handler.

        With a registry: load ``CURRENT`` if it names another version than the running one, even
        one refused before. With a bundle directory: reload that directory.
        """
        self._reload_forced = True
        self._reload_wake.set()

    def _watch(self) -> None:
        s = self.settings
        poll = s.reload_poll_s if (s.registry and s.name) else None  # a bundle directory: SIGHUP only
        while not self._stopping:
            self._reload_wake.wait(poll)
            if self._stopping:
                return
            self._reload_wake.clear()
            forced, self._reload_forced = self._reload_forced, False
            try:
                self.check_model(force=forced)
            except Exception:  # noqa: BLE001 - the watcher must survive; the old model keeps serving
                log.exception("checking for a new model failed")

    def check_model(self, force: bool = False) -> bool | None:
        """Swap in the new model if there is one (:meth:`ModelHolder.check`)."""
        return self.models.check(force)

    # --- MQTT callbacks (paho's network thread) ----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", mqtt.reason_text(reason_code))
            return
        mqtt.subscribe_readings(client, self.settings)
        self.publisher.status(online=True)
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to the broker (session %s); subscribed to %s",
            "resumed" if getattr(flags, "session_present", False) else "new",
            self.settings.readings_filter(),
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stopping:
            log.warning("disconnected from the broker (%s); reconnecting", mqtt.reason_text(reason_code))

    def _on_message(self, client, userdata, message) -> None:
        if not self._accepting:
            return  # shutting down: not acknowledged, so the broker delivers it again next session
        self.ingest.handle(client, message)

    # --- the scoring worker -----------------------------------------------------------------------

    def _work(self) -> None:
        next_housekeeping = 0.0
        while True:
            batch, last = self._next_batch()
            try:
                if batch:
                    self._score_batch(batch)
                now = time.monotonic()
                if not last and now >= next_housekeeping:
                    self._housekeeping(now)
                    next_housekeeping = now + HOUSEKEEPING_S
            except Exception:  # noqa: BLE001 - keep scoring the next batches; the error is logged
                log.exception("scoring a batch of %d windows failed", len(batch))
            if last:
                return

    def _next_batch(self) -> tuple[list[DueWindow], bool]:
        """Wait for due windows, let the batch fill briefly; ``(batch, is_last)``."""
        s = self.settings
        with self._cond:
            if not self.buffers.pending() and not self._stopping:
                self._cond.wait(HOUSEKEEPING_S)
            if self._stopping:
                return self.buffers.drain(), True  # the batch in hand: every window already due
            if not self.buffers.pending():
                return [], False
            deadline = time.monotonic() + s.batch_wait_ms / 1000.0
            while not self._stopping and self.buffers.pending() < s.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = self.buffers.drain(s.batch_max)
            self.metrics.assets.set(len(self.buffers))
            self.metrics.buffered_windows.set(self.buffers.pending())
            return batch, False

    def _score_batch(self, batch: list[DueWindow]) -> None:
        windows = np.stack([due.window for due in batch])
        started = time.perf_counter()
        with self.models.lock:  # one model for the whole batch; a swap waits for it
            scorer, bundle = self.models.scorer, self.models.bundle
            scores = scorer.score_windows(windows)
        self.metrics.scoring_duration.observe(time.perf_counter() - started)
        self.metrics.windows_scored.inc(len(batch))
        now = time.monotonic()
        latency = self.metrics.reading_to_score
        for i, due in enumerate(batch):
            latency.observe(max(0.0, now - due.received))
            channels = scores.top_channels(i, scorer.channels)
            try:
                self._apply(due.asset, due.ts, float(scores.score[i]), float(scores.error[i]), channels, bundle)
            except Exception:  # noqa: BLE001 - one asset's bad window must not cost the rest of the batch
                log.exception("applying a scored window of asset %r failed", due.asset)
            if due.ts > self._judged_ts:
                self._judged_ts = due.ts

    def _apply(self, asset: str, ts: float, score: float, error: float, channels: list[dict],
               bundle: Bundle | None = None) -> None:
        """Step one asset's drift rule and alert machine with one scored window (scored by
        ``bundle``); publish. ``score`` becomes the score against the asset's widened line."""
        old = self._states.get(asset)
        if old is None and asset in self._restored:  # back after a restart: carry on where it was
            old, saved_drift = self._restored.pop(asset)
            if saved_drift is not None:
                self._drift[asset] = saved_drift
            if old.status == "alerting" and self.recorder is not None:
                self.recorder.alert_raised(asset, -np.inf)  # an alert still up: none of its readings is normal
        rule = (bundle or self.bundle).drift_rule
        state, drift, event, score = judge(old or AlertState(), self._drift.get(asset, DriftState()), score, ts,
                                           self.rules, rule)
        self._states[asset] = state
        if rule is not None:
            self._drift[asset] = drift
        self._latest[asset] = (ts, channels)
        self.metrics.set_score(asset, score, state.status == "alerting")
        if event is not None:
            self._publish_event(asset, event, channels, bundle)
            if event.kind == "raised":
                self.metrics.alert_raised(asset)
            if self.recorder is not None:
                if event.kind == "raised":
                    self.recorder.alert_raised(asset, event.ts)
                elif event.kind == "cleared":
                    self.recorder.alert_cleared(asset, event.ts)
        if old is None or state.status != old.status:
            self._publish_state(asset, bundle=bundle)
        if self._listeners:
            scored = ScoredWindow(asset, ts, score, error, state.status, channels)
            for listener in self._listeners:
                try:
                    listener(scored)
                except Exception:  # noqa: BLE001 - a view must not stop scoring
                    log.exception("listener failed")

    def _housekeeping(self, now: float) -> None:
        """Report assets silent for ``stale_after_s`` as stale and free their slots; refresh gauges;
        commit and write recorded readings."""
        with self._cond:
            silent = self.buffers.idle(now - self.rules.stale_after)
            for asset in silent:
                self.buffers.forget(asset)
            self.metrics.assets.set(len(self.buffers))
            self.metrics.buffered_windows.set(self.buffers.pending())
        for asset in silent:
            self._go_stale(asset, self._states.get(asset, AlertState()), self._latest.get(asset, (0.0, []))[1])
            self._drift.pop(asset, None)
            self._latest.pop(asset, None)
            self.metrics.forget_asset(asset)
            if self.recorder is not None:
                self.recorder.forget(asset)
            log.info("asset %s sent nothing for %.0f s: stale", asset, self.rules.stale_after)
        if self._restored and now >= self._restore_until:
            log.info("%d assets restored from the state file sent nothing for %.0f s: stale",
                     len(self._restored), self.rules.stale_after)
            for asset, (saved, _) in list(self._restored.items()):
                if saved.status != "normal":  # its retained state says so: end it as a live asset's would
                    self._go_stale(asset, saved, [])
            self._restored.clear()
        if now >= self._next_save:
            self._save_states()
            self._next_save = now + SAVE_INTERVAL_S
        self._flush_recorder()

    def _go_stale(self, asset: str, state: AlertState, channels: list[dict]) -> None:
        """End ``asset``'s alert state as stale: publish the event and the retained state, forget it."""
        self._states[asset], event = mark_stale(state, time.time())
        self._publish_event(asset, event, channels)
        self._publish_state(asset, event.ts)
        self._states.pop(asset, None)

    def _load_states(self) -> dict[str, tuple[AlertState, DriftState | None]]:
        """The per-asset state saved under ``state_dir`` by the previous run (empty without one)."""
        directory = self.settings.state_dir
        if not directory:
            return {}
        try:
            alerts, drift = load_states(directory)
        except StateError as exc:
            try:
                where = f"moved to {set_aside(directory)}"
            except OSError as err:
                where = f"could not move it aside ({err.strerror or err})"
            log.warning("%s; %s, starting without saved asset state", first_line(exc), where)
            return {}
        restored = {asset: (alerts[asset], drift.get(asset)) for asset in list(alerts)[: self.settings.max_assets]}
        if restored:
            log.info("restored the state of %d assets from %s", len(restored), directory)
        return restored

    def _save_states(self) -> None:
        """Write every asset's alert state and drift baseline (live and still-restored) atomically."""
        directory = self.settings.state_dir
        if not directory:
            return
        alerts = {asset: state for asset, (state, _) in self._restored.items()}
        drift = {asset: d for asset, (_, d) in self._restored.items() if d is not None}
        alerts.update(self._states)
        drift.update(self._drift)
        try:
            save_states(directory, alerts, drift)
        except OSError as exc:  # a full disk must not stop scoring; the next save tries again
            log.warning("saving asset state to %s failed: %s", directory, exc)

    def _flush_recorder(self, force: bool = False) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        try:
            recorder.flush(self._judged_ts, force=force)
        except Exception:  # noqa: BLE001 - recording must never stop scoring
            recorder.write_failures += 1
            log.exception("recording: writing readings failed")
        delta = recorder.write_failures - self._record_failures_seen
        if delta > 0:
            self._record_failures_seen = recorder.write_failures
            self.metrics.record_write_failures.inc(delta)

    # --- publishing -------------------------------------------------------------------------------

    @property
    def _client(self) -> Any:
        return self.publisher.client

    @_client.setter
    def _client(self, client: Any) -> None:
        self.publisher.client = client

    def _line(self, asset: str, bundle: Bundle) -> float:
        """The asset's alert line: the bundle's threshold, widened by the drift rule."""
        return bundle.threshold_ * widening(self._drift.get(asset, DriftState()), bundle.drift_rule)

    def _publish_event(self, asset: str, event: AlertEvent, channels: list[dict], bundle: Bundle | None = None):
        b = bundle or self.bundle
        return self.publisher.alert(asset, event, channels, (b.name, b.version), self._line(asset, b))

    def _publish_state(self, asset: str, ts: float | None = None, bundle: Bundle | None = None):
        """The asset's current state, retained. ``ts`` is that of its latest scored window unless
        given (stale: the wall clock)."""
        b = bundle or self.bundle
        last_ts, channels = self._latest.get(asset, (time.time(), []))
        return self.publisher.state(asset, self._states.get(asset, AlertState()), last_ts if ts is None else ts,
                                    channels, (b.name, b.version), self._line(asset, b))

    def _publish_daemon_event(self, payload: dict) -> None:
        self.publisher.daemon_event(payload)


def hop_warning(hop: int, bundle: Bundle) -> str | None:
    """Why serving at another hop than the bundle's breaks its promise; None when they agree."""
    if hop == bundle.hop:
        return None
    scored = bundle.scored_samples
    judged = "more than once" if hop < scored else ("partly not at all" if hop > scored else "once")
    return (f"serving hop {hop} differs from the bundle's hop {bundle.hop}: each score covers the bundle's "
            f"{scored} newest samples, so rows are judged {judged}, and the bundle's false-alert promise "
            f"assumed hop {bundle.hop}; retrain with train --hop {hop} to change the cadence")
