"""The broker connection's own judgement: why it keeps losing its session (no broker needed)."""

from __future__ import annotations

from sensorguard.service.config import load_settings


def test_a_session_taken_over_is_said_at_once_and_a_lasting_connection_resets_the_count(caplog):
    """MQTT 5 brokers that say why (EMQX, HiveMQ: reason 0x8E) are named at the first drop; plain
    drops count only when they come in a row, each soon after the connect."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from sensorguard.service.connection import CUT_SHORT_IN_A_ROW, Connection

    settings = load_settings({"client_id": "sg-twin"}, {}, require_model=False)
    conn = Connection(settings, None, None, lambda client, message: None, lambda: False)
    conn._taken_over(ReasonCode(PacketTypes.DISCONNECT, "Session taken over"), 60.0)
    assert [r.getMessage() for r in caplog.records][-1].startswith(
        "the broker handed this daemon's session to another client with client id 'sg-twin'")
    caplog.clear()
    conn = Connection(settings, None, None, lambda client, message: None, lambda: False)
    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    for lasted in [1.0] * (CUT_SHORT_IN_A_ROW - 1) + [600.0] + [1.0] * (CUT_SHORT_IN_A_ROW - 1):
        conn._taken_over(lost, lasted)
    assert caplog.records == []  # a connection that lasted broke the run
    conn._taken_over(lost, 0.5)
    assert "3 times in a row within 3 s" in caplog.records[-1].getMessage()
    caplog.clear()  # a broker's own reason for closing is no sign of a twin (a review)
    conn = Connection(settings, None, None, lambda client, message: None, lambda: False)
    for _ in range(2 * CUT_SHORT_IN_A_ROW):
        conn._taken_over(ReasonCode(PacketTypes.DISCONNECT, "Not authorized"), 0.5)
    assert caplog.records == [] and conn._cut_short == 0


def test_a_broker_that_refuses_mqtt_5_is_told_apart_with_the_setting_to_change(caplog):
    """NATS's MQTT listener speaks 3.1.1 only: serve --cluster retried for ever on "Unsupported
    protocol version" without a hint (a README walk)."""
    from types import SimpleNamespace

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from sensorguard.service.connection import Connection

    refused = ReasonCode(PacketTypes.CONNACK, "Unsupported protocol version")
    flags = SimpleNamespace(session_present=False)
    for version, hinted in (("5", True), ("3.1.1", False)):
        caplog.clear()
        settings = load_settings({"client_id": "sg", "mqtt_version": version}, {}, require_model=False)
        Connection(settings, None, None, lambda client, message: None, lambda: False)._on_connect(
            None, None, flags, refused, None)
        said = caplog.records[-1].getMessage()
        assert said.startswith("broker refused the connection: Unsupported protocol version"), said
        assert ("set mqtt_version 3.1.1" in said) is hinted


def test_the_last_outgoing_messages_of_a_refused_burst_are_said_by_the_housekeeping(caplog):
    """A line a minute for outgoing messages the broker refused: the rest of a burst were said only at
    the next refusal, perhaps never (a walk: 13 refused, 8 in the log). The housekeeping says them once
    the minute is over."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode
    from prometheus_client import CollectorRegistry

    from sensorguard.service.connection import Connection
    from sensorguard.service.logs import RateLimiter
    from sensorguard.service.metrics import Metrics

    now = [0.0]
    settings = load_settings({"client_id": "sg"}, {}, require_model=False)
    conn = Connection(settings, Metrics(CollectorRegistry()), None, lambda client, message: None, lambda: False)
    conn._bad_topics = RateLimiter(60.0, clock=lambda: now[0])
    refused = ReasonCode(PacketTypes.PUBACK, "Not authorized")
    for _ in range(5):
        conn._on_publish(None, None, 1, refused, None)
    lines = [r.getMessage() for r in caplog.records if "outgoing message" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("the broker refused 1 outgoing message(s) (Not authorized)")
    conn.say_refused()  # within the minute: nothing yet
    now[0] = 61.0
    conn.say_refused()
    conn.say_refused()  # said once
    lines = [r.getMessage() for r in caplog.records if "outgoing message" in r.getMessage()]
    assert len(lines) == 2 and lines[1].startswith("the broker refused 4 outgoing message(s) (Not authorized)"), lines


def test_the_daemons_housekeeping_says_the_refused_messages_not_said_yet(tiny_bundle, monkeypatch):
    from tests.test_daemon import make

    daemon, _ = make(tiny_bundle)
    told = []
    monkeypatch.setattr(daemon.connection, "say_refused", lambda: told.append(1))
    daemon.housekeeping(0.0)
    assert told == [1]
