"""The streaming daemon: MQTT readings in, batched scores, alert events and metrics out.

Threads, and who owns what:

- paho's network thread runs :meth:`Daemon._on_message`, which is kept lean: parse, put the
  samples into their asset's ring buffer (under ``_cond``), acknowledge the message (only now: a
  crash loses nothing the broker believes delivered), count. It never scores.
- the scoring worker waits for due windows, lets a batch fill for at most ``batch_wait_ms`` (or
  until ``batch_max`` windows), scores the whole batch in one forward pass with the same
  :class:`~service.scorer.Scorer` that ``sensorguard score`` uses, steps each asset's alert
  machine (:func:`service.alerts.step`), publishes events and retained states, updates metrics,
  and about once a second marks silent assets stale.
- the HTTP thread answers ``/metrics``, ``/healthz`` and ``/readyz``.

The scorer is only touched under ``_model_lock``, between batches, so a later model hot swap is a
method that replaces it under that lock (and, when channels or window change, the buffers).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from service import mqtt
from service.alerts import AlertEvent, AlertRules, AlertState, mark_stale, step
from service.bundle import Bundle, load_bundle, load_current
from service.config import Settings
from service.logs import RateLimiter
from service.metrics import Metrics, serve_http, shutdown_http
from service.payload import parse_message
from service.scorer import Scorer
from service.windows import Buffers, DueWindow

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0  # how often silent assets are looked for and gauges refreshed
REJECT_LOG_INTERVAL_S = 10.0
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


def load_model(settings: Settings) -> Bundle:
    """The bundle ``settings`` names: a directory, or the registry's current version of ``name``."""
    if settings.model:
        bundle = load_bundle(settings.model)
        name = bundle.name or Path(settings.model).resolve().name
        return _named(bundle, name, bundle.version or "local")
    if settings.registry and settings.name:
        return load_current(settings.registry, settings.name)
    raise ValueError("no model: give model (a bundle directory) or registry and name")


def _named(bundle: Bundle, name: str, version: str) -> Bundle:
    from dataclasses import replace

    return replace(bundle, name=name, version=version)


def iso(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        self._model_lock = threading.Lock()
        self.bundle = bundle
        self.scorer = Scorer(bundle, device="cpu")
        self.hop = settings.hop or bundle.hop
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
        self._latest: dict[str, tuple[float, list[dict]]] = {}  # asset -> (ts, top channels) of its last window
        self._listeners: list[Callable[[ScoredWindow], None]] = []
        self._reject_log = RateLimiter(REJECT_LOG_INTERVAL_S)
        self._accepting = False
        self._stopping = False
        self._stopped = False
        self._connected = threading.Event()
        self._client = None
        self._http: tuple[Any, threading.Thread] | None = None
        self._worker: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve HTTP, start the scoring worker, connect (in the background, with retries)."""
        s = self.settings
        b = self.bundle
        self.metrics.set_model(b.name, b.version, b.threshold_)
        self._http = serve_http(self.registry, s.metrics_host, s.metrics_port, self.ready)
        self._worker = threading.Thread(target=self._work, name="sensorguard-scorer", daemon=True)
        self._worker.start()
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

    def stop(self) -> None:
        """Finish what is in hand, publish final states and ``offline``, disconnect. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False  # from now on messages are not acked: the session keeps them
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
        client = self._client
        if client is not None:
            infos = [info for asset in list(self._states) if (info := self._publish_state(asset)) is not None]
            infos.append(client.publish(self.settings.status_topic(), mqtt.STATUS_OFFLINE, qos=1, retain=True))
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

    # --- MQTT callbacks (paho's network thread) ----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", mqtt.reason_text(reason_code))
            return
        mqtt.subscribe_readings(client, self.settings)
        client.publish(self.settings.status_topic(), mqtt.STATUS_ONLINE, qos=1, retain=True)
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
        try:
            rejects, accepted, asset = self._take(message)
        except Exception:  # noqa: BLE001 - a bug must not stop the network thread
            log.exception("unexpected error handling a message on %r", message.topic)
            rejects, accepted, asset = ["parse_error"], 0, None
        client.ack(message.mid, message.qos)
        if accepted:
            self.metrics.readings.inc(accepted)
        for reason in rejects:
            self.metrics.reject(reason)
            count = self._reject_log.hit(reason)
            if count is not None:
                log.warning(
                    "rejected reading: %s (topic %r, asset %r; %d like this since the last line)",
                    reason, message.topic[:200], asset, count,
                    extra={"reason": reason, "count": count},
                )

    def _take(self, message) -> tuple[list[str], int, str | None]:
        """Parse one message and buffer its samples; returns (rejects, accepted, asset)."""
        s = self.settings
        received = time.monotonic()
        parsed = parse_message(message.topic, message.payload, s.topic_prefix, s.max_payload_bytes,
                               s.max_samples_per_message)
        rejects = parsed.rejects
        accepted = 0
        if parsed.samples:
            rejects = list(rejects)
            with self._cond:
                before = self.buffers.pending()
                for sample in parsed.samples:
                    reason = self.buffers.add(parsed.asset, sample.ts, sample.values, received)
                    if reason is None:
                        accepted += 1
                    else:
                        rejects.append(reason)
                after = self.buffers.pending()
                if after > before and (before == 0 or after >= s.batch_max):
                    self._cond.notify()
        return rejects, accepted, parsed.asset

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
        with self._model_lock:
            scorer = self.scorer
            scores = scorer.score_windows(windows)
        self.metrics.scoring_duration.observe(time.perf_counter() - started)
        self.metrics.windows_scored.inc(len(batch))
        now = time.monotonic()
        latency = self.metrics.reading_to_score
        for i, due in enumerate(batch):
            latency.observe(max(0.0, now - due.received))
            channels = scores.top_channels(i, scorer.channels)
            self._apply(due.asset, due.ts, float(scores.score[i]), float(scores.error[i]), channels)

    def _apply(self, asset: str, ts: float, score: float, error: float, channels: list[dict]) -> None:
        """Step one asset's alert machine with one scored window; publish what changed."""
        old = self._states.get(asset)
        state, event = step(old or AlertState(), score, ts, self.rules)
        self._states[asset] = state
        self._latest[asset] = (ts, channels)
        self.metrics.set_score(asset, score, state.status == "alerting")
        if event is not None:
            self._publish_event(asset, event, channels)
            if event.kind == "raised":
                self.metrics.alert_raised(asset)
        if old is None or state.status != old.status:
            self._publish_state(asset)
        if self._listeners:
            scored = ScoredWindow(asset, ts, score, error, state.status, channels)
            for listener in self._listeners:
                try:
                    listener(scored)
                except Exception:  # noqa: BLE001 - a view must not stop scoring
                    log.exception("listener failed")

    def _housekeeping(self, now: float) -> None:
        """Report assets silent for ``stale_after_s`` as stale and free their slots; refresh gauges."""
        with self._cond:
            silent = self.buffers.idle(now - self.rules.stale_after)
            for asset in silent:
                self.buffers.forget(asset)
            self.metrics.assets.set(len(self.buffers))
            self.metrics.buffered_windows.set(self.buffers.pending())
        for asset in silent:
            state, event = mark_stale(self._states.get(asset, AlertState()), time.time())
            self._states[asset] = state
            self._publish_event(asset, event, self._latest.get(asset, (0.0, []))[1])
            self._publish_state(asset, event.ts)
            self._states.pop(asset, None)
            self._latest.pop(asset, None)
            self.metrics.forget_asset(asset)
            log.info("asset %s sent nothing for %.0f s: stale", asset, self.rules.stale_after)

    # --- publishing -------------------------------------------------------------------------------

    def _payload(self, asset: str, kind: str, ts: float, score: float, peak: float, alert_id: str,
                 channels: list[dict]) -> dict:
        b = self.bundle
        return {
            "asset": asset,
            "state": kind,
            "ts": iso(ts),
            "score": _finite(score),
            "peak_score": _finite(peak),
            "threshold": b.threshold_,
            "channels": channels,
            "model": {"name": b.name, "version": b.version},
            "alert_id": alert_id or None,
        }

    def _publish_event(self, asset: str, event: AlertEvent, channels: list[dict]):
        payload = self._payload(asset, event.kind, event.ts, event.score, event.peak_score, event.alert_id, channels)
        log.info(
            "alert %s: %s score %.2f (peak %.2f), top channels %s",
            event.kind, asset, event.score, event.peak_score,
            ", ".join(f"{c['name']} {c['share']:.0%}" for c in channels),
            extra={"asset": asset, "event": event.kind, "alert_id": event.alert_id},
        )
        if self._client is None:
            return None
        return mqtt.publish_json(self._client, self.settings.alert_topic(asset), payload, qos=1)

    def _publish_state(self, asset: str, ts: float | None = None):
        """The asset's current state, retained: a new subscriber sees it at once.

        ``ts`` is that of the asset's latest scored window unless given (stale: the wall clock).
        """
        state = self._states.get(asset, AlertState())
        if self._client is None:
            return None
        last_ts, channels = self._latest.get(asset, (time.time(), []))
        payload = self._payload(asset, state.status, last_ts if ts is None else ts, state.last_score, state.peak,
                                state.alert_id, channels)
        return mqtt.publish_json(self._client, self.settings.state_topic(asset), payload, qos=1, retain=True)


def _finite(x: float) -> float | None:
    """JSON has no infinity: a non-finite score is sent as null."""
    return round(x, 6) if np.isfinite(x) else None
