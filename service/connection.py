"""The daemon's broker connection: connect, subscribe on every (re)connect, disconnect cleanly.

paho runs the callbacks on its network thread. The client connects in the background and retries
(:func:`~sensorguard.service.mqtt.connect_async`); each successful connect subscribes to the
readings again (a resumed persistent session keeps the subscription, a new one needs it) and
publishes the retained ``online`` status. :meth:`Connection.close` is a normal disconnect: no Last
Will, no unsubscribe, so the broker keeps the session and what arrives meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sensorguard.service import mqtt
from sensorguard.service.config import PASSWORD_ENV, Settings
from sensorguard.service.logs import RateLimiter
from sensorguard.service.metrics import Metrics
from sensorguard.service.publisher import Publisher

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
PUBLISH_GRACE_S = 10.0  # cut off from the broker longer than this, a cluster worker hands its partitions on
CUT_SHORT_S = 3.0  # a connection the broker closes sooner than this after accepting it is cut short
CUT_SHORT_IN_A_ROW = 3  # ... this many in a row: most often a second client with this client id
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason (EMQX, HiveMQ; mosquitto 2.0 just closes the socket)
UNSPECIFIED = 0x80  # what paho reports for a socket the broker closed without a DISCONNECT
NOT_AUTHORIZED = (0x86, 0x87)  # CONNACK: "Bad user name or password", "Not authorized" (3.1.1's 4 and 5 too)


class Connection:
    """One MQTT client for readings in and events out.

    on_message: called with ``(client, message)`` for every reading (the ingest); stopping: tells
    a disconnect during shutdown from one to reconnect after.
    """

    def __init__(self, settings: Settings, metrics: Metrics, publisher: Publisher,
                 on_message: Callable[[Any, Any], None], stopping: Callable[[], bool], commands: Any = None,
                 hold: Callable[[float], bool] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.publisher = publisher
        self.on_message = on_message
        self.stopping = stopping
        self.commands = commands  # a CommandHandler: its messages go to it, the rest are readings
        self.hold = hold  # whether the readings' consumer is full (FastClient.hold: reading stops meanwhile)
        self.connected = threading.Event()
        self._bad_topics = RateLimiter(60.0)
        self.connected_since: float | None = None  # monotonic time of the last connect; None while down
        self.down_since = -math.inf  # since when it is down after a connect (before the first: it never published)
        self.unsubscribe: tuple[str, ...] = ()  # filters a previous run of this session served, no longer ours
        self.refused: tuple[str, ...] = ()  # subscriptions the broker refused (its access rules): not ready
        self.session_lost = False  # set by a reconnect without our session; the worker republishes states
        self._connected_before = False
        self._cut_short = 0  # connections in a row the broker closed within CUT_SHORT_S of accepting them
        self._refused_now = False  # the last connection attempt was refused (wrong password, access rules)
        self._unsubscribe_said = False  # the stale partitions' unsubscribe was logged (at INFO once)
        self._refusals_lock = threading.Lock()
        self._refusals: tuple[int, str] = (0, "")  # outgoing messages refused since the last line, the last reason

    def open(self) -> None:
        """Create the client (it becomes the publisher's) and connect in the background."""
        client = mqtt.create_client(self.settings)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._route
        if hasattr(client, "hold"):  # (the daemon's FastClient)
            client.hold = self.hold
        self.publisher.client = client
        mqtt.connect_async(client, self.settings)

    def _route(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # (a broker that does not check topics): raised here, paho's network
            self.metrics.reject("bad_asset")  # thread stopped and nothing more was received
            if (count := self._bad_topics.hit("topic")) is not None:
                log.warning("rejected %d message(s) whose topic is not UTF-8, e.g. %r", count,
                            getattr(message, "_topic", b"")[:200])
            client.ack(message.mid, message.qos)
            return
        try:
            if self.commands is not None and topic.startswith(self.commands.prefix):
                self.commands.submit(client, message)
            else:
                self.on_message(client, message)
        except Exception:  # noqa: BLE001 - re-raised by paho, it ended the network thread for good: no reading,
            # command or reconnect from then on, while connected stayed set and /readyz green (an audit).
            # Acknowledged: left so, each held one of the broker's in-flight slots for the session, and a
            # recurring bug stalled the flow as surely (a command's sender sends it again until answered)
            if (count := self._bad_topics.hit("unexpected")) is not None:
                log.exception("unexpected error handling a message on %r (%d like this since the last line); "
                              "it is dropped", topic[:200], count)
            client.ack(message.mid, message.qos)

    def close(self, final: Callable[[], list]) -> None:
        """Publish ``final()`` (returns the publish handles), wait for the broker to confirm them
        (at most ``PUBLISH_TIMEOUT_S``), disconnect."""
        client = self.publisher.client
        if client is not None:
            infos = final()
            confirmed = not self.connected.is_set() or mqtt.wait_published(infos, PUBLISH_TIMEOUT_S)
            if not confirmed:
                log.warning("some final states were not confirmed by the broker before disconnecting: "
                            "disconnecting so that the broker publishes the offline Last Will")
            mqtt.disconnect(client, self.settings, will=not confirmed)  # no unsubscribe: the session stays
            client.loop_stop()
            left = client.queued_out() if hasattr(client, "queued_out") else 0
            if left:  # (the broker down at the stop, or slower than the wait): said, not lost in silence
                log.warning("%d outgoing messages (alerts, states, events) were never confirmed by the broker and "
                            "are lost with this process", left)
        self.connected_since = None
        self.connected.clear()
        self.metrics.mqtt_connected.set(0)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            said = mqtt.reason_text(reason_code)
            hint = ("; it speaks MQTT 3.1.1 only (NATS's MQTT listener does): set mqtt_version 3.1.1"
                    if mqtt.speaks_311_only(reason_code, self.settings)
                    else "")
            if getattr(reason_code, "value", None) in NOT_AUTHORIZED:
                hint = (f"; check username ({self.settings.username or 'none given'}) and password_file or "
                        f"{PASSWORD_ENV}, and the broker's access rules for client {self.settings.client_id}")
            self._refused_now = True  # paho closes it next: no "disconnected (Protocol error)" line after this one
            if (count := self._bad_topics.hit(f"refused {said}")) is not None:  # (every backoff step, up to 30 s)
                log.warning("broker refused the connection: %s%s%s", said, hint,
                            f" ({count} refusals since the last line)" if count > 1 else "")
            return
        self._refused_now = False
        if self.unsubscribe:  # the resumed session still holds them (idempotent on a new one)
            client.unsubscribe(list(self.unsubscribe))
            # said once: sent again at every connect, a line each read as a layout change each time (a walk)
            log.log(logging.DEBUG if self._unsubscribe_said else logging.INFO,
                    "unsubscribed from %s: no longer this instance's partitions", ", ".join(self.unsubscribe))
            self._unsubscribe_said = True
        self.refused = ()  # this connection's subscriptions are judged afresh
        if self.commands is not None:  # (before a message of this connection is queued)
            self.commands.connected(resumed=bool(getattr(flags, "session_present", False)))
        mqtt.subscribe_readings(client, self.settings)
        if self.commands is not None:
            client.subscribe(self.commands.filter(), qos=1)
        self.publisher.status(online=True)
        # MQTT 5: the broker says how many unacknowledged QoS 1 messages it takes (HiveMQ 10 by default);
        # paho's 20 regardless, and the whole backlog at a reconnect, got the client disconnected
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        if hasattr(client, "receive_maximum"):  # (the daemon's FastClient; after the status, which counts)
            client.receive_maximum(min(mqtt.MAX_INFLIGHT, receive_max) if receive_max else mqtt.MAX_INFLIGHT)
        if self._connected_before and not getattr(flags, "session_present", False):  # the broker restarted
            self.session_lost = True  # without persistence: its retained states may be gone with our session
        self._connected_before = True
        self.connected_since = time.monotonic()
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to the broker (session %s); %s",
            "resumed" if getattr(flags, "session_present", False) else "new",
            f"subscribed to {', '.join(self.settings.readings_filters())}" if self.settings.readings_filters()
            else "alerts and states go out here; readings come from the cluster",  # (it said "subscribed to ")
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """A refused subscription (a broker's access rules) means no readings, or no commands, ever:
        said loudly, and ``/readyz`` fails until a reconnect subscribes again and is granted."""
        refused = tuple(mqtt.reason_text(rc) for rc in reason_codes if rc.is_failure)
        if refused:
            log.error("the broker refused a subscription (%s): check its access rules for this client "
                      "(%s); no readings come through it", ", ".join(refused), self.settings.client_id)
            self.refused += refused
        if any(not rc.is_failure and rc.value == 0 for rc in reason_codes):  # (a broker's max_qos 0)
            log.error("the broker granted a subscription at QoS 0 only: readings sent while this daemon is "
                      "away are not kept for it, and none waits for its acknowledgement; allow QoS 1 for "
                      "client %s", self.settings.client_id)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        """MQTT 5: the broker's acknowledgement can refuse a message (its access rules for the output
        topics, a quota); paho counts it published all the same. Counted and said, or every alert
        and state was lost without a trace while ``/readyz`` stayed green."""
        if reason_code is None or not getattr(reason_code, "is_failure", False):
            return
        self.metrics.publishes_refused.inc()
        with self._refusals_lock:
            self._refusals = (self._refusals[0] + 1, mqtt.reason_text(reason_code))
        self.say_refused()

    def say_refused(self) -> None:
        """Log the outgoing messages the broker refused since the last such line, at most one line a
        minute: at each refusal, and from the daemon's housekeeping, so the last of a burst are said
        too (they waited for the next refusal, perhaps never; a walk)."""
        with self._refusals_lock:
            count, reason = self._refusals
            if not count or self._bad_topics.hit("refused") is None:
                return
            self._refusals = (0, reason)
        log.error("the broker refused %d outgoing message(s) (%s): check its access rules; client %s must be allowed "
                  "to publish under %s/", count, reason, self.settings.client_id, self.settings.output_prefix)

    def publishes(self) -> bool:
        """Whether what is judged here reaches the broker: connected, or cut off for under
        ``PUBLISH_GRACE_S`` (a reconnect); not before the first connect. Cluster mode takes no
        partition, or hands its partitions on, otherwise."""
        return self.connected_since is not None or time.monotonic() - self.down_since < PUBLISH_GRACE_S

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        lasted = None if self.connected_since is None else time.monotonic() - self.connected_since
        if self.connected_since is not None:
            self.down_since = time.monotonic()
        self.connected_since = None
        self.connected.clear()
        self.metrics.mqtt_connected.set(0)
        if self.commands is not None:  # (nothing is carried out until the reconnect says what the waiting are)
            self.commands.disconnected()
        if self._refused_now and lasted is None:  # the refusal said why; "Protocol error" here was wrong
            return
        if lasted is None and not self.stopping():  # closed before its CONNECT was answered: TLS on one side
            # (each backoff step said only "disconnected (Unspecified error)", no hint: a walk)
            if (count := self._bad_topics.hit("unaccepted")) is not None:
                log.warning("broker refused %s; reconnecting%s", mqtt.closed_unaccepted(self.settings),
                            f" ({count} times since the last line)" if count > 1 else "")
            return
        if not self.stopping():
            log.warning("disconnected from the broker (%s); reconnecting", mqtt.reason_text(reason_code))
            self._taken_over(reason_code, lasted)

    def _taken_over(self, reason_code: Any, lasted: float | None) -> None:
        """Say, as an error (at most once a minute), when the session is being taken away: two
        daemons with one client id hand it back and forth every second, each log saying only
        "disconnected (Unspecified error)", and each scores part of the readings."""
        value = getattr(reason_code, "value", None)
        taken = value == SESSION_TAKEN_OVER
        plain = value == UNSPECIFIED  # a close without a reason; a broker's own reason (not authorized,
        # receive maximum exceeded, a quota) is said in the warning above and is no sign of a twin
        self._cut_short = self._cut_short + 1 if taken or (plain and lasted is not None and lasted < CUT_SHORT_S) else 0
        if not taken and self._cut_short < CUT_SHORT_IN_A_ROW:
            return
        if self._bad_topics.hit("taken over") is None:
            return
        why = ("the broker handed this daemon's session to another client" if taken else
               f"the broker closed the connection {self._cut_short} times in a row within {CUT_SHORT_S:.0f} s of "
               "accepting it: most often another client")
        log.error("%s with client id %r (a second daemon with the same settings?), and the two take it from each "
                  "other at every reconnect; give each daemon its own client_id (--client-id) and instance",
                  why, self.settings.client_id)
