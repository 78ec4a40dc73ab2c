"""Edges of the daemon's outward path found by a mutation audit: the outbox (service/outbox.py) that
sends again what the full outgoing queue dropped, the publisher's drop counting and payload shape
(service/publisher.py), and the MQTT client (service/mqtt.py): the status's room behind a full
queue, the resumed session, the Last Will, TLS, the password file, the tools' connection callbacks.

None of it needs a broker: a recording client stands in for paho where one is needed, and paho's own
client, never connected, queues QoS 1 messages exactly as it does while the broker is away."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho
import pytest

from sensorguard.service import mqtt
from sensorguard.service.alerts import AlertEvent, AlertState
from sensorguard.service.config import Settings, load_settings
from sensorguard.service.outbox import Outbox, published
from sensorguard.service.publisher import SENSOR_LINES, Publisher, payload
from sensorguard.service.sensors import SensorEvent
from tests.test_command_edges import FakePublisher  # (what Outbox reads of a Publisher)

SENT = SimpleNamespace(rc=0)  # a publish handle that was queued
DROPPED = SimpleNamespace(rc=paho.MQTT_ERR_QUEUE_SIZE)  # one paho refused: its queue was full




class RecordingClient:
    """A client that records publishes and answers each with ``rc`` (0: queued)."""

    def __init__(self, rc: int = 0, queued: int = 0) -> None:
        self.rc = rc
        self.queued = queued
        self.published: list[tuple[str, bytes, int, bool]] = []

    def queued_out(self) -> int:
        return self.queued

    def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False, properties: Any = None) -> Any:
        self.published.append((topic, payload, qos, retain))
        return SimpleNamespace(rc=self.rc, mid=len(self.published))


def settings(**overrides: Any) -> Settings:
    return load_settings({"model": None, "registry": None, "metrics_port": 0, **overrides}, {}, require_model=False)


def publisher_with(client: Any) -> tuple[Publisher, list[str]]:
    """A publisher on ``client`` whose drops are recorded by kind."""
    publisher, drops = Publisher(settings()), []
    publisher.client = client
    publisher.on_dropped = drops.append
    return publisher, drops


# --- the outbox ------------------------------------------------------------------------------------------


def test_a_close_is_not_resent_while_the_queue_is_still_full() -> None:
    """While the outgoing queue is full a resend would only be dropped again and counted as one more
    drop: the operator's ``publishes_dropped_total`` would climb each tick for one lost clear, and the
    SensorguardOutputLost alert would keep firing on the outbox's own retries."""
    publisher = FakePublisher()
    box, sent = Outbox(publisher, cap=10), []
    box.keep_close("p1", "clear1", [])
    publisher.is_full = True
    box.resend_closes(lambda asset, event, extra: sent.append(event) or SENT)
    assert sent == [] and box.holds_close("p1")
    publisher.is_full = False
    box.resend_closes(lambda asset, event, extra: sent.append(event) or SENT)
    assert sent == ["clear1"] and not box.holds_close("p1")


def test_a_resend_for_one_asset_is_not_held_back_by_another_assets_drop() -> None:
    """Just before an asset's new clear, only that asset's kept closes are sent (``only``): another
    asset whose resend is dropped again must not stop them, or this asset's clear waits behind a
    close that is not its own and its pager stays open a tick longer, every tick the queue is tight."""
    box, sent = Outbox(FakePublisher(), cap=10), []
    box.keep_close("a1", "clear-a1", [])
    box.keep_close("a2", "clear-a2", [])

    def send(asset: str, event: Any, extra: Any) -> Any:
        sent.append(event)
        return None if asset == "a1" else SENT  # a1's is dropped again

    box.resend_closes(send, only="a2")
    assert sent == ["clear-a2"]
    assert not box.holds_close("a2") and box.holds_close("a1")  # a1's waits for the next tick


def test_a_retained_state_that_went_out_later_is_not_sent_again() -> None:
    """A state kept because its publish was dropped, then published again and queued (a newer
    state), is forgotten: republished anyway it spent queue room just as the queue came back, and
    the asset's retained state was written twice for nothing."""
    box, again = Outbox(FakePublisher(), cap=10), []
    box.state_sent("p1", None)  # dropped: kept
    box.state_sent("p1", SENT)  # its next state went out
    box.resend_states(again.append)
    assert again == []


def test_a_retained_state_dropped_again_on_its_resend_is_kept_for_the_next_tick() -> None:
    """The republish of a kept state can itself be dropped (the queue filled again meanwhile): the
    state must stay kept, or the broker's retained copy goes on saying ``alerting`` until the asset's
    next change, days later perhaps."""
    box = Outbox(FakePublisher(), cap=10)
    box.state_sent("p1", None)
    tries: list[str] = []

    def republish_dropped(asset: str) -> None:
        tries.append(asset)
        box.state_sent(asset, DROPPED)  # the publisher reports the drop as it goes

    box.resend_states(republish_dropped)
    assert tries == ["p1"]
    again: list[str] = []
    box.resend_states(again.append)
    assert again == ["p1"]


def test_a_raise_paho_refused_for_its_full_queue_reads_as_not_published() -> None:
    """paho's handle of a message its full queue refused raises ValueError from ``is_published()``
    (RuntimeError for one queued while away): either way it reads as not published, so its alert is
    not counted as announced, and reading it never raises into the scoring worker's save."""
    refused = paho.MQTTMessageInfo(1)
    refused.rc = paho.MQTT_ERR_QUEUE_SIZE
    assert published(refused) is False
    away = paho.MQTTMessageInfo(2)
    away.rc = paho.MQTT_ERR_NO_CONN
    assert published(away) is False
    away._published = True  # paho sent it after reconnecting: the broker confirmed it
    assert published(away) is True


def test_the_oldest_assets_closes_are_sent_again_first() -> None:
    """When the queue has room for only some, the closes of the asset kept longest go first: that
    asset's is the next the outbox forgets at its cap, and its pager has waited longest."""
    publisher = FakePublisher()
    box, sent = Outbox(publisher, cap=10), []
    for asset in ("a1", "a2", "a3"):
        box.keep_close(asset, f"clear-{asset}", [])

    def send_once(asset: str, event: Any, extra: Any) -> Any:
        sent.append(event)
        publisher.is_full = True  # that one filled the queue again
        return SENT

    box.resend_closes(send_once)
    assert sent == ["clear-a1"] and not box.holds_close("a1") and box.holds_close("a3")


def test_every_asset_whose_retained_state_the_broker_lost_is_sent_again() -> None:
    """A broker that lost its retained messages (a restart without persistence) must get every
    asset's state again, not only the first's: the others would read as unknown until their next
    change, and a new dashboard would show them empty."""
    box, again = Outbox(FakePublisher(), cap=10), []
    box.states_lost(["p1", "p2", "p3"])
    box.resend_states(again.append)
    assert again == ["p1", "p2", "p3"]


# --- the publisher ---------------------------------------------------------------------------------------


def test_a_publish_paho_refuses_for_its_full_queue_is_counted_as_dropped_by_kind() -> None:
    """paho itself can refuse a message for a full queue (``MQTT_ERR_QUEUE_SIZE``) when the
    publisher's own check just missed it: that loss must be counted too, by kind, or
    ``publishes_dropped_total`` reads 0 while alerts and states vanish."""
    publisher, drops = publisher_with(RecordingClient(rc=paho.MQTT_ERR_QUEUE_SIZE))
    event = AlertEvent("raised", 0.0, 2.0, 2.0, "p1@0")
    info = publisher.alert("p1", event, [], ("m", "v0001"), 0.2)
    assert publisher.dropped(info)
    publisher.status(True)
    assert drops == ["alert", "status"]


def test_a_publish_queued_is_not_counted_as_dropped() -> None:
    """The counterpart: a queued publish counts nothing (a drop counted for every message sent would
    page the operator for an outage that is not there)."""
    publisher, drops = publisher_with(RecordingClient(rc=paho.MQTT_ERR_NO_CONN))  # queued while away
    publisher.alert("p1", AlertEvent("raised", 0.0, 2.0, 2.0, "p1@0"), [], ("m", "v0001"), 0.2)
    publisher.status(True)
    assert drops == []


def test_the_status_is_retained_at_qos_1() -> None:
    """The status is what a new subscriber (the operator's dashboard, another instance's check) reads
    at once: not retained, the Last Will's ``offline`` would stand while the daemon serves."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    publisher.status(True)
    [(topic, body, qos, retain)] = client.published
    assert topic == publisher.settings.status_topic() and qos == 1 and retain
    assert json.loads(body)["state"] == "online"


def test_a_score_on_the_line_is_sent_as_on_the_line() -> None:
    """Only a score *under* the line is capped below 1 (so it never reads 1.0 beside ``normal``); a
    window exactly on the line (which raises) must read 1.0, not 0.999999, or the alert's own
    message says it was under its line."""
    body = payload("p", "raised", 0.0, 1.0, 1.0, "p@0", [], "m", "v0001", 0.2)
    assert body["score"] == 1.0 and body["peak_score"] == 1.0
    assert payload("p", "normal", 0.0, 0.9999996, 0.9999996, "", [], "m", "v", 0.2)["score"] == 0.999999


def test_scores_are_sent_with_six_decimals() -> None:
    """Scores are rounded to six decimals in every message (the docs' contract, and what the tables
    write): fewer, and two windows a subscriber compares read the same."""
    body = payload("p", "normal", 0.0, 0.1234567, 2.3456789, "", [], "m", "v0001", 0.2)
    assert body["score"] == 0.123457 and body["peak_score"] == 2.345679


def test_a_state_without_an_alert_or_faults_says_so_with_null_and_an_empty_list() -> None:
    """A normal asset's retained state has ``alert_id: null`` and ``sensor_faults: []``: a subscriber
    that tests ``alert_id`` or iterates the faults must not get ``""`` or ``null`` instead."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    publisher.state("p1", AlertState(), 0.0, [], ("m", "v0001"), 0.2)
    [(topic, body, qos, retain)] = client.published
    doc = json.loads(body)
    assert topic == publisher.settings.state_topic("p1") and qos == 1 and retain
    assert doc["alert_id"] is None and doc["sensor_faults"] == []
    assert "acked" not in doc


def test_a_held_or_acknowledged_state_says_so() -> None:
    """The retained state carries what holds the asset (``suppressed``) and whether its alert was
    acknowledged (``acked``), beside its open sensor faults: a board showing the state would
    otherwise page for an asset in maintenance or an alert someone already took."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    faults = [{"kind": "stuck", "channel": "a"}]
    publisher.state("p1", AlertState(status="alerting", alert_id="p1@0"), 0.0, [], ("m", "v0001"), 0.2,
                    sensor_faults=faults, extra={"suppressed": "maintenance", "acked": True})
    doc = json.loads(client.published[0][1])
    assert doc["suppressed"] == "maintenance" and doc["acked"] is True and doc["sensor_faults"] == faults
    assert doc["alert_id"] == "p1@0" and doc["state"] == "alerting"


def test_a_sensor_event_of_a_nan_value_sends_null() -> None:
    """A missing channel's value is NaN: JSON has no NaN, so it is sent as null (a subscriber's JSON
    parser would refuse the whole event otherwise)."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    publisher.sensor("p1", SensorEvent("missing", "a", True, 0.0, float("nan")), ("m", "v0001"))
    assert json.loads(client.published[0][1])["value"] is None


def test_without_a_client_nothing_is_sent_and_nothing_raises() -> None:
    """Before the connection exists (and in tools that score offline) the publisher has no client:
    every publish is a no-op returning None, never an AttributeError that would stop the scoring
    worker at its first alert."""
    publisher = Publisher(settings())
    assert publisher.alert("p1", AlertEvent("raised", 0.0, 2.0, 2.0, "p1@0"), [], ("m", "v0001"), 0.2) is None
    assert publisher.state("p1", AlertState(), 0.0, [], ("m", "v0001"), 0.2) is None
    assert publisher.sensor("p1", SensorEvent("stuck", "a", True, 0.0, 1.0), ("m", "v0001")) is None
    publisher.daemon_event({"event": "model_swapped"})


def test_a_daemon_event_names_the_instance_that_sent_it() -> None:
    """Daemon events (a model swapped, a reload refused) of every instance share one topic: without
    the instance's name the operator cannot tell which daemon refused its new model."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    publisher.daemon_event({"event": "reload_refused"})
    [(topic, body, qos, retain)] = client.published
    assert topic == publisher.settings.events_topic() and qos == 1 and not retain
    assert json.loads(body) == {"event": "reload_refused", "instance": publisher.settings.instance_name}


def test_a_sensor_events_value_is_rounded_and_an_infinite_one_is_null() -> None:
    """A sensor event's value is rounded as scores are (six decimals), and an infinite reading (a
    sensor out of range by overflow) is sent as null, which JSON can carry."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    publisher.sensor("p1", SensorEvent("out_of_range", "a", True, 0.0, 1.23456789), ("m", "v0001"))
    publisher.sensor("p1", SensorEvent("out_of_range", "a", True, 0.0, float("inf")), ("m", "v0001"))
    assert [json.loads(p[1])["value"] for p in client.published] == [1.234568, None]


def test_a_flood_of_drops_is_logged_once_and_every_drop_counted(caplog: pytest.LogCaptureFixture) -> None:
    """While the broker is away every publish may be dropped, thousands a minute: each is counted
    (``publishes_dropped_total``), but the log says so once a minute per kind, not a line per
    message burying everything else."""
    publisher, drops = publisher_with(RecordingClient(queued=mqtt.MAX_QUEUED_OUT))
    with caplog.at_level("WARNING", logger="sensorguard.service.publisher"):
        for i in range(5):
            assert publisher.alert("p1", AlertEvent("raised", i, 2.0, 2.0, "p1@0"), [], ("m", "v0001"), 0.2) is None
    assert drops == ["alert"] * 5
    said = [r.getMessage() for r in caplog.records if "outgoing queue full" in r.getMessage()]
    assert len(said) == 1 and "1 alert message(s) dropped" in said[0]


def test_a_flood_of_sensor_faults_writes_a_minutes_budget_of_lines_and_says_the_rest_is_left_out(
        caplog: pytest.LogCaptureFixture) -> None:
    """Junk machines can open thousands of sensor faults a minute: the log keeps SENSOR_LINES lines a
    minute (channel faults and silent assets alike) and says at once, in one line, that the rest
    are left out; their events are still published."""
    client = RecordingClient()
    publisher, _ = publisher_with(client)
    with caplog.at_level("INFO", logger="sensorguard.service.publisher"):
        for i in range(2 * SENSOR_LINES):
            channel = "a" if i % 2 else None  # a channel's fault, or the whole asset silent
            publisher.sensor(f"p{i}", SensorEvent("stuck" if channel else "silent", channel, True, 0.0, 1.0),
                             ("m", "v0001"))
    lines = [r for r in caplog.records if r.getMessage().startswith("sensor_fault: ")]
    warned = [r for r in caplog.records if "sensor fault lines this minute" in r.getMessage()]
    assert len(lines) == SENSOR_LINES and len(warned) == 1
    assert len(client.published) == 2 * SENSOR_LINES


# --- the MQTT client's queue ----------------------------------------------------------------------------


def test_the_status_has_room_behind_a_full_outgoing_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """paho's queue keeps STATUS_ROOM places beyond the publisher's cap: the retained ``online``
    must reach the broker behind a full backlog after an outage, or the Last Will's ``offline``
    stands while the daemon serves and the operator sees a dead instance."""
    monkeypatch.setattr(mqtt, "MAX_QUEUED_OUT", 3)
    client = mqtt.create_client(settings())  # never connected: QoS 1 publishes queue, as while away
    publisher, drops = publisher_with(client)
    for i in range(3):
        assert not publisher.dropped(publisher.alert("p1", AlertEvent("raised", i, 2.0, 2.0, "p1@0"), [],
                                                     ("m", "v0001"), 0.2))
    assert publisher.full()
    assert publisher.alert("p1", AlertEvent("cleared", 4, 0.1, 2.0, "p1@0"), [], ("m", "v0001"), 0.2) is None
    assert not publisher.dropped(publisher.status(True))
    assert drops == ["alert"]


class CallsClient:
    """A paho client stand-in that records the calls a function under test makes on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_the_daemon_resumes_its_session_so_readings_sent_while_away_wait_for_it() -> None:
    """MQTT 5: the daemon connects with ``clean_start=False`` and a session expiry; MQTT 3.1.1:
    ``clean_session=False``. A clean start throws away the readings the broker kept while the daemon
    was restarting: windows with holes, and faults in them never judged."""
    v5, client = settings(), CallsClient()
    mqtt.connect_async(client, v5)  # type: ignore[arg-type]
    (name, _, kwargs), (started, _, _) = client.calls
    assert name == "connect_async" and kwargs["clean_start"] is False and started == "loop_start"
    assert kwargs["properties"].SessionExpiryInterval == v5.session_expiry_s
    v311 = settings(mqtt_version="3.1.1")
    assert mqtt.create_client(v311)._clean_session is False
    assert mqtt.create_client(v311, persistent=False)._clean_session is True  # a tool's own client


def test_retained_readings_are_not_sent_on_subscribing() -> None:
    """A reading published with retain is a sensor's stale last value: sent at each (re)subscribe it
    would be judged again as news (MQTT 5 subscribes with ``retainHandling`` do-not-send)."""
    client = CallsClient()
    mqtt.subscribe_readings(client, settings())  # type: ignore[arg-type]
    [(name, (subscriptions,), _)] = client.calls
    assert name == "subscribe" and subscriptions
    for _, options in subscriptions:
        assert options.QoS == 1 and options.retainHandling == options.RETAIN_DO_NOT_SEND


def test_a_cluster_worker_subscribes_to_no_readings_over_mqtt() -> None:
    """In cluster mode readings come from JetStream: an MQTT subscription to none (paho refuses an
    empty list) must not be tried at each reconnect."""
    from dataclasses import replace

    client = CallsClient()
    mqtt.subscribe_readings(client, replace(settings(), cluster=("nats://127.0.0.1:4222",)))  # type: ignore[arg-type]
    assert client.calls == []


def test_only_a_stop_whose_offline_was_not_confirmed_leaves_through_the_last_will() -> None:
    """MQTT 5: the Last Will (``offline``) is asked for only when the final status was not confirmed;
    a normal stop disconnects normally. 3.1.1 has no such reason code: always a plain disconnect."""
    v5, v311 = settings(), settings(mqtt_version="3.1.1")
    for s, will, coded in ((v5, True, True), (v5, False, False), (v311, True, False)):
        client = CallsClient()
        mqtt.disconnect(client, s, will=will)  # type: ignore[arg-type]
        [(name, _, kwargs)] = client.calls
        assert name == "disconnect" and ("reasoncode" in kwargs) is coded, (s.mqtt_version, will)
        if coded:
            assert kwargs["reasoncode"].value == 0x04


def test_a_message_expiry_is_rounded_up_to_whole_seconds() -> None:
    """A command's broker expiry is whole seconds: rounded down, 0.5 s became 0 and a command lived a
    second less than its sender allowed (or none at all); rounded up it never expires early. MQTT
    3.1.1 has no expiry: none is set."""
    assert mqtt.expiry(settings(), 0.5).MessageExpiryInterval == 1
    assert mqtt.expiry(settings(), 30.2).MessageExpiryInterval == 31
    v311 = settings(mqtt_version="3.1.1")
    assert mqtt.expiry(v311, 30.2) is None


def test_waiting_for_publishes_is_false_if_any_one_failed() -> None:
    """The final status and the last events are confirmed before a stop: one that could not go out
    (paho raises for a full queue or no connection) makes the whole wait unconfirmed, even when a
    later one went out; the daemon then leaves through its Last Will instead of a stale ``online``."""
    def raising(timeout: float | None = None) -> None:
        raise RuntimeError("not connected")

    failed = SimpleNamespace(wait_for_publish=raising, is_published=lambda: False)
    went = SimpleNamespace(wait_for_publish=lambda timeout=None: None, is_published=lambda: True)
    assert mqtt.wait_published([went, went], 30.0) is True
    assert mqtt.wait_published([failed, went], 30.0) is False
    assert mqtt.wait_published([went, SimpleNamespace(wait_for_publish=lambda timeout=None: None,
                                                      is_published=lambda: False), went], 30.0) is False


def test_a_broker_closing_connections_before_accepting_is_said_at_the_third_and_the_count_restarts() -> None:
    """A tool says the broker closed its connections before accepting one (TLS on one side only) at
    the UNACCEPTED_CLOSES-th close in a row, not later (the tool waited out its timeout), and an
    accepted connection starts the count again (one close after a good connection is a failover)."""
    client, refusals, drops = SimpleNamespace(), [], []
    mqtt.watch_connects(client, settings(), lambda c: None, refusals.append, lambda: drops.append(1))
    ok = SimpleNamespace(is_failure=False)
    for _ in range(mqtt.UNACCEPTED_CLOSES - 1):
        client.on_disconnect(None, None, None, None, None)
    assert refusals == []
    client.on_connect(client, None, None, ok, None)  # accepted: the count starts again
    client.on_disconnect(None, None, None, None, None)  # that connection dropped
    assert drops == [1] and refusals == []
    for _ in range(mqtt.UNACCEPTED_CLOSES - 1):
        client.on_disconnect(None, None, None, None, None)
    assert refusals == []
    client.on_disconnect(None, None, None, None, None)
    assert len(refusals) == 1 and "closed before it was accepted" in refusals[0]


def test_the_same_connect_failure_is_logged_once_a_minute_while_retrying(caplog: pytest.LogCaptureFixture) -> None:
    """paho retries with a backoff of at most 30 s: a line per try for a broker down all night was
    thousands of the same warning; the same cause is said once a minute at most."""
    fail = mqtt._connect_fail_logger(settings())
    with caplog.at_level("WARNING", logger=mqtt.log.name):
        for _ in range(3):
            try:
                raise ConnectionRefusedError(111, "refused")
            except ConnectionRefusedError:
                fail(None, None)
    said = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(said) == 1 and "connection refused" in said[0]


def test_the_daemons_last_will_is_a_retained_offline_and_a_tools_client_has_none() -> None:
    """The broker publishes the Will when the daemon dies: retained, so a dashboard that subscribes
    later still sees ``offline``. A tool's short-lived client (``replay``, ``ack``) under the same
    settings must carry no Will: its exit would otherwise mark the running daemon offline."""
    s = settings()
    client = mqtt.create_client(s)
    assert client._will and client._will_retain and client._will_qos == 1
    assert client._will_topic == s.status_topic().encode()
    assert json.loads(client._will_payload)["state"] == "offline"
    assert not mqtt.create_client(s, client_id="sg-tool", will=False)._will


def test_a_tls_hint_is_given_only_for_a_tls_connection() -> None:
    """A reset during a TLS handshake most likely means a plain MQTT port: said, with the fix. The
    same reset on a plain connection is not a TLS matter, and the hint would send the operator after
    the wrong setting."""
    assert "plain MQTT listener" in mqtt.describe_connect_error(ConnectionResetError("reset"), tls=True)
    assert mqtt.describe_connect_error(ConnectionResetError("reset"), tls=False) == "reset"


def test_a_password_rotated_in_its_file_is_read_again_before_each_connect(tmp_path: Any) -> None:
    """The password file is read again before every (re)connect: read once, a daemon kept retrying
    the old password after a rotation, refused, until someone restarted it."""
    secret = tmp_path / "password"
    secret.write_text("old\n")
    client = mqtt.create_client(settings(username="sg", password_file=str(secret)))
    assert client._password == b"old"
    secret.write_text("new\n")
    client.on_pre_connect(client, None)
    assert client._password == b"new"


def test_reconnects_back_off_from_one_to_thirty_seconds() -> None:
    """paho's reconnect backoff: a broker restart is met within a second, and a long outage costs a
    try every 30 s at most, not one a second from every daemon at once."""
    client = mqtt.create_client(settings())
    assert (client._reconnect_min_delay, client._reconnect_max_delay) == (1, 30)


def test_the_brokers_host_name_is_checked_unless_tls_insecure_says_otherwise() -> None:
    """Over mqtts:// the broker's certificate must name the host (a man in the middle holding any
    certificate from the same CA is refused); only an explicit ``tls_insecure`` (testing) skips it."""
    checked = mqtt.create_client(settings(broker="mqtts://broker.example:8883"))
    assert checked._ssl_context is not None and checked._tls_insecure is False
    skipped = mqtt.create_client(settings(broker="mqtts://broker.example:8883", tls_insecure=True))
    assert skipped._tls_insecure is True


def test_an_unreadable_password_file_keeps_the_last_password_and_paho_running(tmp_path: Any) -> None:
    """A password file that cannot be read at a reconnect (half-written: not UTF-8; gone) keeps the
    last password: an exception raised in paho's ``on_pre_connect`` ends its network thread, and the
    daemon never reconnects again."""
    secret = tmp_path / "password"
    secret.write_text("old\n")
    client = mqtt.create_client(settings(username="sg", password_file=str(secret)))
    secret.write_bytes(b"\xff\xfe\xfa")  # not UTF-8
    client.on_pre_connect(client, None)
    secret.unlink()
    client.on_pre_connect(client, None)
    assert client._password == b"old"


def test_a_tools_client_starts_a_clean_session() -> None:
    """A tool's own client (``persistent=False``) starts clean under MQTT 5: resuming a session, it
    would be handed the messages a previous run of the tool left behind."""
    client = CallsClient()
    mqtt.connect_async(client, settings(), persistent=False)  # type: ignore[arg-type]
    (name, _, kwargs), _ = client.calls
    assert name == "connect_async" and kwargs["clean_start"] is True and "properties" not in kwargs


def test_a_refused_connection_is_not_also_taken_as_accepted() -> None:
    """A CONNECT the broker refused (credentials, access rules) is a refusal only: taken as accepted
    too, the tool subscribed or published on a connection that does not exist and waited out its
    timeout before saying "no answer"."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    client, refusals, accepted = SimpleNamespace(), [], []
    mqtt.watch_connects(client, settings(), accepted.append, refusals.append)
    client.on_connect(client, None, None, ReasonCode(PacketTypes.CONNACK, "Not authorized"), None)
    assert accepted == [] and len(refusals) == 1 and "Not authorized" in refusals[0]


def test_a_connection_closed_before_it_was_accepted_names_the_likely_tls_mismatch() -> None:
    """A broker that closes the connection before its CONNACK is most often TLS on one side only:
    over mqtts:// the likely cause is a required client certificate; over mqtt:// a TLS port.
    Swapped, the hint sends the operator after the wrong half of the configuration."""
    assert "is that port a TLS listener" in mqtt.closed_unaccepted(settings(broker="mqtt://b:1883"))
    assert "client certificate" in mqtt.closed_unaccepted(settings(broker="mqtts://b:8883"))


def test_what_the_caps_leave_out_is_counted_and_said(caplog: pytest.LogCaptureFixture) -> None:
    """A close past the 16 kept for an asset, every close of the oldest asset past the cap, and a
    retained state past the cap are lost for good: they went unsaid (a review), so a close sent again
    later could not be told from one never sent. They are counted by kind and logged once a minute."""
    from prometheus_client import CollectorRegistry

    from sensorguard.service.metrics import Metrics
    from sensorguard.service.outbox import UNSENT_PER_ASSET

    metrics = Metrics(CollectorRegistry())
    box = Outbox(FakePublisher(), cap=2, metrics=metrics)

    def forgotten(kind: str) -> float:
        return metrics.publishes_forgotten.labels(kind)._value.get()

    assert forgotten("close") == 0 and forgotten("state") == 0  # (at 0: increase() sees the first)
    with caplog.at_level(logging.WARNING, logger="sensorguard.service.outbox"):
        for i in range(UNSENT_PER_ASSET + 1):
            box.keep_close("a1", f"clear-{i}", [])
        assert forgotten("close") == 1
        box.keep_close("a2", "clear", [])
        box.keep_close("a3", "clear", [])  # past the cap of 2 assets: a1's 16 go
        assert forgotten("close") == 1 + UNSENT_PER_ASSET and not box.holds_close("a1")
        for asset in ("a1", "a2", "a3"):
            box.state_sent(asset, DROPPED)
        assert forgotten("state") == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "closes of announced alerts" in lines[0] and "retained states" in lines[1]
    assert lines[0].endswith("lost for good (1 so far)")
