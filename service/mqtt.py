"""MQTT plumbing around paho-mqtt 2.x: a persistent-session client, JSON publishing.

The daemon's client (see DESIGN.md, "MQTT contract"):

- MQTT 5 with ``clean_start=False`` and a ``SessionExpiryInterval``, or 3.1.1 with
  ``clean_session=False``, under a stable client id: readings published while the daemon is away
  wait at the broker and are delivered when it returns;
- ``manual_ack=True``: the daemon acknowledges a reading only once it is in its asset's buffer,
  so every reading the broker believes delivered reached one (the buffers are memory: a restart
  drops the partial windows, a crash also the windows queued for scoring);
- a retained Last Will of ``offline`` on the status topic;
- TLS (``mqtts://``, CA / client certificate / key) and username plus password (from a file or
  the environment, see :class:`service.config.Settings`);
- automatic reconnect with exponential backoff (paho's network thread, ``loop_start``).

Nothing here knows about readings or alerts; :mod:`service.daemon` wires the callbacks.
"""

from __future__ import annotations

import logging
import math
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from sensorguard.service.config import Settings
from sensorguard.service.instances import status_payload
from sensorguard.service.receive import FastClient

log = logging.getLogger(__name__)
UNSUPPORTED_VERSION = 0x84  # CONNACK: "Unsupported protocol version" (an MQTT 3.1.1-only broker, NATS's)


def speaks_311_only(reason_code: Any, settings: Settings) -> bool:
    """Whether a refused connection was an MQTT 5 CONNECT to a broker that speaks MQTT 3.1.1 only
    (NATS's MQTT listener): ``serve`` and the operator commands both say to set the version."""
    return getattr(reason_code, "value", None) == UNSUPPORTED_VERSION and settings.mqtt_version == "5"


def connect_refusal(reason_code: Any, settings: Settings) -> str:
    """A refused CONNECT as the tools say it ("the broker at X refused " + this), with what to check."""
    if speaks_311_only(reason_code, settings):
        return (f"the connection: {reason_text(reason_code)}: it speaks MQTT 3.1.1 only (NATS's MQTT listener "
                "does): give --mqtt-version 3.1.1")
    return f"the connection: {reason_text(reason_code)} (check its access rules and this user's credentials)"


def closed_unaccepted(settings: Settings) -> str:
    """A connection the broker closed before answering its CONNECT: said as a refusal, with the usual
    causes. Logged as "disconnected (Unspecified error)" at every retry, no hint, and the tools waited
    out their timeout to say "could not connect" (a walk of a TLS broker)."""
    tls = settings.broker_parts()[3]
    return ("the connection: closed before it was accepted (" + (
        "does the broker require a client certificate? give tls_cert and tls_key" if tls else
        "is that port a TLS listener? then mqtts:// and tls_ca") + ")")

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
MAX_QUEUED_OUT = 100_000  # outgoing QoS 1 messages kept while disconnected (bounded memory)
MAX_INFLIGHT = 20  # outgoing QoS 1 messages unacknowledged at once (paho's default), or the broker's Receive Maximum
STATUS_ROOM = 16  # places beyond it kept for the retained status (``service.publisher``)
CONNECT_FAIL_LOG_INTERVAL_S = 60.0  # the same failure is logged at most this often (backoff retries)


def create_client(
    settings: Settings, client_id: str | None = None, manual_ack: bool = True, persistent: bool = True,
    will: bool = True,
) -> paho.Client:
    """A configured, not yet connected client for ``settings`` (will, TLS, auth, backoff).

    ``client_id`` overrides the setting (tools such as ``replay`` use their own ids); tools also
    turn off the persistent session and the daemon's Last Will.
    """
    v5 = settings.mqtt_version == "5"
    client = FastClient(
        callback_api_version=paho.CallbackAPIVersion.VERSION2,
        client_id=client_id or settings.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
    client.max_queued_messages_set(MAX_QUEUED_OUT + STATUS_ROOM)
    client.on_connect_fail = _connect_fail_logger(settings)
    if will:
        offline = status_payload(settings.instance_name, settings.client_id, settings.static_partitions(),
                                 settings.topic_prefix, online=False, cluster=bool(settings.cluster_servers()))
        client.will_set(settings.status_topic(), offline, qos=1, retain=True)
    if settings.username:
        client.username_pw_set(settings.username, settings.password())
        if settings.password_file:
            client.on_pre_connect = _password_reader(settings)
    _, _, _, tls = settings.broker_parts()
    if tls:
        client.tls_set(
            ca_certs=settings.tls_ca,
            certfile=settings.tls_cert,
            keyfile=settings.tls_key,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    return client


def _password_reader(settings: Settings) -> Callable[[paho.Client, Any], None]:
    """paho's ``on_pre_connect``: read ``password_file`` again before every (re)connect, so a
    password rotated on disk is used at the next try (read once, the daemon kept retrying the old
    one, refused, until restarted). A file that cannot be read then keeps the last password."""

    def reread(client: paho.Client, userdata: Any) -> None:
        try:
            client.username_pw_set(settings.username, settings.password())
        except Exception as exc:  # noqa: BLE001 - raised here it would end paho's network thread for good
            # the type only: a decoding error's message quotes a byte of the file
            log.warning("MQTT password file %s could not be read again (%s): trying the last password",
                        settings.password_file, type(exc).__name__)

    return reread


def connect_async(client: paho.Client, settings: Settings, persistent: bool = True) -> None:
    """Start connecting in the background; paho's thread keeps reconnecting with backoff."""
    _, host, port, _ = settings.broker_parts()
    if settings.mqtt_version == "5" and persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = settings.session_expiry_s
        client.connect_async(host, port, settings.keepalive_s, clean_start=False, properties=props)
    elif settings.mqtt_version == "5":
        client.connect_async(host, port, settings.keepalive_s, clean_start=True)
    else:
        client.connect_async(host, port, settings.keepalive_s)
    client.loop_start()


class Refused(ConnectionError):
    """The broker refused a connection or a subscription (credentials, access rules)."""


UNACCEPTED_CLOSES = 3  # connections in a row the broker closed before accepting: then a tool says so and stops


def watch_connects(client: paho.Client, settings: Settings, accepted: Callable[[Any], None],
                   refused: Callable[[str], None], dropped: Callable[[], None] = lambda: None) -> None:
    """A short-lived tool client's connection callbacks: ``accepted(client)`` at each connection the
    broker accepts, ``refused(why)`` when it refuses a CONNECT (credentials, access rules, MQTT
    version) or closes ``UNACCEPTED_CLOSES`` connections before accepting one since the last it
    accepted (TLS on one side only: the tools waited out their timeout to say "could not connect";
    one close alone may be a proxy's failover, which the next try gets past: a review; with paho's
    backoff the third comes about 3 s after the first), ``dropped()`` when an accepted one drops.
    A connection refused outright or a failed TLS handshake is paho's ``on_connect_fail``: not
    counted here (the tool says "could not connect", the log why)."""
    up, closes = [False], [0]

    def on_connect(c, u, f, rc, p) -> None:
        if rc.is_failure:
            refused(connect_refusal(rc, settings))
            return
        up[0], closes[0] = True, 0
        accepted(c)

    def on_disconnect(c, u, f, rc, p) -> None:
        if up[0]:
            up[0] = False
            dropped()
            return
        closes[0] += 1
        if closes[0] >= UNACCEPTED_CLOSES:
            refused(closed_unaccepted(settings))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect


@contextmanager
def listening(settings: Settings, topic: str, on_message: Callable[[Any, Any, Any], None], timeout_s: float,
              client_id: str | None = None, qos: int = 1) -> Iterator[paho.Client | None]:
    """A short-lived client (clean session, no Last Will, automatic acks) subscribed to ``topic`` at
    ``qos``: yields it once the subscription is granted, or None when that did not happen within
    ``timeout_s``; disconnects on exit. Tools use it to read retained messages or an answer.

    :class:`Refused` when the broker refuses the connection or the subscription (its access
    rules): a refused subscription was taken as granted, so a command went out and its answer,
    which could never arrive, was reported as "no answer", and the instance check read "no other
    instance". Retained messages by the thousand want ``qos`` 0: Mosquitto sends a QoS 1
    subscriber its in-flight window and queue of them (about 1,020 by default) and drops the rest."""
    answered = threading.Event()
    refused: list[str] = []

    def on_subscribe(c, u, mid, reason_codes, p) -> None:
        refused.extend(f"the subscription to {topic}: {reason_text(rc)} (check its access rules and this user's "
                       "credentials)" for rc in reason_codes if rc.is_failure)
        answered.set()

    def refuse(why: str) -> None:
        refused.append(why)
        answered.set()

    client = create_client(settings, client_id=client_id, manual_ack=False, persistent=False, will=False)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    watch_connects(client, settings, lambda c: c.subscribe(topic, qos=qos), refuse)
    connect_async(client, settings, persistent=False)
    try:
        if answered.wait(timeout_s) and refused:
            raise Refused(f"the broker at {settings.redacted()['broker']} refused {refused[0]}")
        yield client if answered.is_set() else None
    finally:
        client.disconnect()
        client.loop_stop()


def disconnect(client: paho.Client, settings: Settings, will: bool = False) -> None:
    """End the connection. A normal DISCONNECT makes the broker discard the Last Will; with ``will``
    (the final ``offline`` status was not confirmed) MQTT 5 disconnects with reason code 0x04 so the
    broker publishes the Will instead, and a retained ``online`` does not outlive the daemon. MQTT
    3.1.1 has no such code: it disconnects normally (the status may then stay ``online``)."""
    if will and settings.mqtt_version == "5":
        client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    else:
        client.disconnect()


def subscribe_readings(client: paho.Client, settings: Settings) -> None:
    """QoS 1 subscription to the readings of the instance's partitions (idempotent: safe on each
    reconnect)."""
    topics = settings.readings_filters()
    if not topics:  # cluster mode: readings come from JetStream
        return
    if settings.mqtt_version == "5":
        # retained readings are a sensor's stale last value, not news: not sent on subscribing
        client.subscribe([(topic, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
                          for topic in topics])
    else:
        client.subscribe([(topic, 1) for topic in topics])


def publish_json(client: paho.Client, topic: str, payload: Any, qos: int = 1, retain: bool = False,
                 properties: Any = None):
    """Publish ``payload`` as compact JSON; returns paho's ``MQTTMessageInfo``.

    While disconnected paho keeps QoS 1 messages and sends them after reconnecting.
    """
    return client.publish(topic, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), qos=qos, retain=retain,
                          properties=properties)


def expiry(settings: Settings, seconds: float) -> Any:
    """PUBLISH properties with a message expiry of ``seconds`` (rounded up) for MQTT 5, else None:
    the broker drops a copy not delivered by then, by its own clock."""
    if settings.mqtt_version != "5":
        return None
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = math.ceil(seconds)
    return properties


def wait_published(infos: list, timeout_s: float) -> bool:
    """Wait until every message in ``infos`` went out (or ``timeout_s`` passed); True if all did."""
    import time

    deadline = time.monotonic() + timeout_s
    ok = True
    for info in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            info.wait_for_publish(timeout=remaining)
        except (RuntimeError, ValueError):  # queue full or not connected: it will not go out now
            ok = False
            continue
        ok = ok and info.is_published()
    return ok


def _connect_fail_logger(settings: Settings):
    """paho's ``on_connect_fail``: say why the broker cannot be reached (TLS, refused, DNS...).

    paho calls it from inside its ``except OSError`` around each (re)connect attempt and otherwise
    logs the failure only at debug level without the cause, so a wrong CA or a firewall would be
    silent. The same cause is logged at most once a minute while the retries back off.
    """
    last: dict[str, float] = {}
    _, host, port, tls = settings.broker_parts()

    def on_connect_fail(client, userdata) -> None:  # noqa: ARG001 - paho's signature
        cause = describe_connect_error(sys.exc_info()[1], tls)
        now = time.monotonic()
        if now - last.get(cause, -CONNECT_FAIL_LOG_INTERVAL_S) >= CONNECT_FAIL_LOG_INTERVAL_S:
            last[cause] = now
            log.warning("cannot connect to the broker at %s:%d: %s; retrying", host, port, cause)

    return on_connect_fail


def describe_connect_error(err: BaseException | None, tls: bool = False) -> str:
    """One readable line for a failed connection attempt (``tls``: over mqtts://)."""
    if tls and isinstance(err, ConnectionResetError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return f"{err} (is that port a plain MQTT listener? then mqtt://, without TLS)"
    if isinstance(err, ssl.SSLCertVerificationError):
        said = err.verify_message or err.reason
        if "mismatch" in str(said).lower():  # (the CA was right: "set tls_ca" sent people after the wrong thing)
            return (f"TLS certificate verification failed ({said}): the broker's certificate does not name the host "
                    "in the broker URL; connect by a name it has (tls_insecure skips the check: testing only)")
        return (f"TLS certificate verification failed ({said}): set tls_ca to the CA that signed the broker's "
                "certificate, and check the broker host name")
    if isinstance(err, ssl.SSLError):
        return f"TLS error ({err.reason or err})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running, is the port right?)"
    if isinstance(err, TimeoutError):
        return "timed out"
    if err is None:
        return "unknown error"
    return str(err) or type(err).__name__


def reason_text(reason_code: Any) -> str:
    """A readable reason for logs from paho's ReasonCode / int."""
    name = getattr(reason_code, "getName", None)
    if callable(name):
        return name()
    return paho.error_string(reason_code) if isinstance(reason_code, int) else str(reason_code)
