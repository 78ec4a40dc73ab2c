"""What the daemon says on MQTT: alert events, retained per-asset states, daemon events, status.

The publisher owns the output topics and the payload shape (the contract in ``docs/design.md``);
the daemon decides *when* to publish and hands over the state to publish. Every publish is QoS 1;
states and the status are retained, so a new subscriber sees them at once. Without a client (tests,
before the connection exists) nothing is sent and None is returned.

>>> payload("pump-7", "raised", 0.0, 2.5, 3.0, "17", [], "m", "v0001", 0.2)["ts"]
'1970-01-01T00:00:00.000Z'
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho

from sensorguard.service import mqtt
from sensorguard.service.alerts import AlertEvent, AlertState
from sensorguard.service.config import Settings
from sensorguard.service.instances import status_payload
from sensorguard.service.logs import LineBudget, RateLimiter
from sensorguard.service.sensors import SensorEvent

log = logging.getLogger(__name__)


def iso(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SENSOR_LINES = 100  # sensor fault log lines a minute at most; the rest left out, and said so (events still published)
WRITTEN_UNDER = 0.999999  # the largest score under the line a message or a table writes (6 digits would round it to 1)


def payload(asset: str, kind: str, ts: float, score: float, peak: float, alert_id: str, channels: list[dict],
            model_name: str, model_version: str, line: float) -> dict:
    """An alert event's or a state's payload; ``line`` is the asset's threshold (drift widening included)."""
    return {
        "asset": asset,
        "state": kind,
        "ts": iso(ts),
        "score": _score(score),
        "peak_score": _score(peak),
        "threshold": line,
        "channels": channels,
        "model": {"name": model_name, "version": model_version},
        "alert_id": alert_id or None,
    }


class Publisher:
    """Publishes on the topics ``settings`` names through ``client`` (set once connected).

    While the broker is away paho keeps QoS 1 messages, at most ``mqtt.MAX_QUEUED_OUT``; past that a
    message is dropped, told to ``on_dropped`` (the daemon counts it by kind) and logged, rate
    limited. The retained status has ``mqtt.STATUS_ROOM`` places of its own: ``online`` must reach
    the broker behind a full backlog, or the Last Will's ``offline`` would stand while serving.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        self.on_dropped: Any = lambda kind: None
        self._drop_log = RateLimiter(60.0)
        self._sensor_lines = LineBudget(SENSOR_LINES, 60.0)

    def _publish_json(self, kind: str, topic: str, body: Any, retain: bool = False) -> Any:
        """QoS 1 JSON on ``topic``, unless the outgoing queue is full (then counted as dropped)."""
        if self.full():
            self._dropped(kind)
            return None
        return self._sent(kind, mqtt.publish_json(self.client, topic, body, qos=1, retain=retain))

    def _sent(self, kind: str, info: Any) -> Any:
        if getattr(info, "rc", None) == paho.MQTT_ERR_QUEUE_SIZE:
            self._dropped(kind)
        return info

    def _dropped(self, kind: str) -> None:
        self.on_dropped(kind)
        if (count := self._drop_log.hit(kind)) is not None:
            log.warning("outgoing queue full (%d messages waiting for the broker): %d %s message(s) dropped",
                        mqtt.MAX_QUEUED_OUT, count, kind)

    def alert(self, asset: str, event: AlertEvent, channels: list[dict], model: tuple[str, str], line: float):
        """An alert raised or cleared, on ``<output_prefix>/alerts/<asset>``; logged too."""
        body = payload(asset, event.kind, event.ts, event.score, event.peak_score, event.alert_id, channels, *model,
                       line)
        log.info(
            "alert %s: %s score %.2f (peak %.2f), top channels %s",
            event.kind, asset, event.score, event.peak_score,
            ", ".join(f"{c['name']} {c['share']:.0%}" for c in channels),
            extra={"asset": asset, "event": event.kind, "alert_id": event.alert_id},
        )
        if self.client is None:
            return None
        return self._publish_json("alert", self.settings.alert_topic(asset), body)

    def full(self) -> bool:
        """Whether the outgoing queue is full now (a publish would be dropped)."""
        queued = getattr(self.client, "queued_out", None)
        return queued is not None and queued() >= mqtt.MAX_QUEUED_OUT

    @staticmethod
    def dropped(info: Any) -> bool:
        """Whether a publish returned by this class was dropped (the outgoing queue was full)."""
        return info is None or getattr(info, "rc", None) == paho.MQTT_ERR_QUEUE_SIZE

    def state(self, asset: str, state: AlertState, ts: float, channels: list[dict], model: tuple[str, str],
              line: float, sensor_faults: list[dict] | None = None, extra: dict | None = None):
        """The asset's current state, retained on ``<output_prefix>/state/<asset>``, with its open
        sensor faults beside the process state (``extra``: ``suppressed``, ``acked``). ``peak_score`` is
        the highest score of the alert pending or up, null without one (a walk read a normal state's
        ``"score": 0.99, "peak_score": 0.0``)."""
        if self.client is None:
            return None
        peak = state.peak if state.status in ("pending", "alerting") or state.alert_id else math.nan
        body = payload(asset, state.status, ts, state.last_score, peak, state.alert_id, channels, *model, line)
        body["sensor_faults"] = sensor_faults or []
        body.update(extra or {})
        return self._publish_json("state", self.settings.state_topic(asset), body, retain=True)

    def sensor(self, asset: str, event: SensorEvent, model: tuple[str, str], ended_alert: str | None = None,
               refused: str | None = None):
        """A sensor fault opened (``sensor_fault``) or closed (``sensor_ok``) on ``<output_prefix>/alerts/<asset>``.

        ``ended_alert``: the ``alert_id`` of the process alert this fault ends (an asset gone
        ``silent`` while alerting), so a subscriber tracking open alerts closes it. ``refused``: a
        ``silent`` asset that did send, every reading refused since its last one taken, for this reason."""
        state = "sensor_fault" if event.fault else "sensor_ok"
        extra = {"asset": asset, "event": state, "kind": event.kind, "channel": event.channel}
        written, left_out, first = self._sensor_lines.take()
        if first:  # (said at once: a count said with the next line came late, or never after a short flood)
            log.warning("over %d sensor fault lines this minute: the rest of this minute's are left out of the log "
                        "(their events are published all the same; sensorguard_sensor_faults_total counts them)",
                        SENSOR_LINES)
        if left_out:
            log.warning("%d sensor fault lines were left out of the log (over %d a minute)", left_out, SENSOR_LINES)
        if written and event.channel is None:  # the whole asset (silent): it read "silent of None (value nan)"
            said = (" ended: a reading at" if not event.fault else ": no reading after" if refused is None
                    else f": every reading refused ({refused}) after")
            log.info("%s: %s %s%s %s", state, asset, event.kind, said, iso(event.ts), extra=extra)
        elif written:  # (left out: published below all the same)
            log.info("%s: %s %s of %s (value %s)", state, asset, event.kind, event.channel, event.value, extra=extra)
        if self.client is None:
            return None
        body = {"asset": asset, "state": state, "kind": event.kind, "channel": event.channel, "ts": iso(event.ts),
                "value": _finite(event.value) if event.value == event.value else None,
                "model": {"name": model[0], "version": model[1]}}
        if ended_alert:
            body["alert_id"] = ended_alert
        if refused:
            body["refused"] = refused
        return self._publish_json("sensor", self.settings.alert_topic(asset), body)

    def daemon_event(self, body: dict) -> None:
        """A daemon event (model swapped, reload refused) on ``<output_prefix>/events``."""
        if self.client is not None:
            self._publish_json("event", self.settings.events_topic(), {**body, "instance": self.settings.instance_name})

    def status(self, online: bool):
        """The instance's retained status (``online``; ``offline`` is also its Last Will), JSON with
        its name and partitions (:mod:`sensorguard.service.instances`)."""
        s = self.settings
        body = status_payload(s.instance_name, s.client_id, s.static_partitions(), s.topic_prefix, online,
                              bool(s.cluster_servers()))
        return self._sent("status", self.client.publish(s.status_topic(), body, qos=1, retain=True))


def _finite(x: float) -> float | None:
    """JSON has no infinity: a non-finite score is sent as null."""
    return round(x, 6) if math.isfinite(x) else None


def _score(x: float) -> float | None:
    """A score in units of the line as sent (:func:`_finite`): one under the line is never rounded up
    to it (0.9999996 read 1.0 beside ``normal``: a review), as ``score``'s table writes it."""
    shown = _finite(x)
    return min(shown, WRITTEN_UNDER) if shown is not None and x < 1 else shown
