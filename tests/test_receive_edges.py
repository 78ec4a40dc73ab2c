"""Edges of the daemon's receive path that no test pinned (found by mutating service/receive.py):
holding the reading back for the application, what a dead connection leaves behind, and when the
acknowledgements go out. No broker: a fake socket hands the client its bytes."""

from __future__ import annotations

import socket

import paho.mqtt.client as paho
import pytest

from sensorguard.service import receive
from sensorguard.service.receive import FastClient
from tests.test_receive import FakeSocket, _publish_packet, connecting_client

USER_PROPERTY = b"\x07\x26\x00\x01k\x00\x01v"  # property length 7: one user property k=v (paho's path)


class Socket(FakeSocket):
    """A fake socket that says "nothing yet" (paho's AGAIN) instead of end of file when empty."""

    def recv(self, bufsize: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)


def client_on(chunks: list[bytes], got: list, *, connected: bool = True, ack: bool = True) -> FastClient:
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="edge", protocol=paho.MQTTv5, manual_ack=True)

    def on_message(c, userdata, message):
        got.append(message.topic)
        if ack:
            c.ack(message.mid, message.qos)

    client.on_message = on_message
    client._sock = Socket(chunks)
    if connected:
        client._state = paho._ConnectionState.MQTT_CS_CONNECTED
    return client


def test_a_held_client_hands_on_nothing_not_even_through_paho():
    """While the application is full (``hold``), no message is handed on: not the ones already in
    hand, and no packet read through paho's own path either."""
    got: list = []
    client = client_on([_publish_packet("s/a", b"1", 1)], got)
    client.hold = lambda wait_s: True
    assert client.loop_read() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [] and client._held
    client.hold = lambda wait_s: False
    client.loop_read()
    assert got == ["s/a"] and not client._held


def test_a_client_held_after_a_message_reads_no_further():
    """The application full after one message: the next, in hand or behind it, waits."""
    got: list = []
    client = client_on([_publish_packet("s/p", b"3", 3, props=USER_PROPERTY)], got)
    client._rbuf = _publish_packet("s/a", b"1", 1) + _publish_packet("s/b", b"2", 2)  # in hand: the short path
    client.hold = lambda wait_s: len(got) >= 1
    client.loop_read()
    assert got == ["s/a"]
    client.hold = lambda wait_s: False
    client.loop_read()
    assert got == ["s/a", "s/b", "s/p"]


def test_a_held_client_waits_briefly_per_trip_and_reads_again_once_there_is_room():
    """While held, each trip round paho's loop waits at most a moment for room (the loop must come
    round for acknowledgements, publishes and pings), and reads on as soon as there is room."""
    got: list = []
    client = client_on([_publish_packet("s/a", b"1", 1)], got)
    waits: list = []
    full = [True]

    def hold(wait_s: float) -> bool:
        waits.append(wait_s)
        return full[0]

    client.hold = hold
    client.loop_read()
    assert client._held and got == []
    assert client.loop_misc() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS and got == []
    assert 0 < max(waits) <= 0.5
    full[0] = False
    client.loop_misc()
    assert got == ["s/a"] and not client._held


def test_the_bytes_in_hand_of_a_dead_connection_are_never_read_on_the_next():
    """A connection closed while bytes of it were still in hand (a handler closed it): the next
    connection starts with its own bytes only, and not held (the broker reuses packet ids: a
    message of the old one handled again would be acknowledged on the new one)."""
    got: list = []
    client = client_on([], got)
    client._rbuf = _publish_packet("s/a", b"1", 1) + _publish_packet("s/old", b"2", 2)  # in hand: the short path
    client.hold = lambda wait_s: False

    def on_message(c, userdata, message):
        got.append(message.topic)
        c._sock_close()  # the connection dies inside the handler

    client.on_message = on_message
    client.loop_read()
    assert got == ["s/a"]
    assert not client._held
    client.on_message = lambda c, userdata, message: got.append(message.topic)
    client._sock = Socket([_publish_packet("s/new", b"3", 1)])
    client.loop_read()
    assert got == ["s/a", "s/new"]


def test_acknowledgements_go_out_during_a_long_backlog(monkeypatch):
    """The acknowledgements made while reading a long backlog go out every ``MAX_PACKETS`` packets
    when more is still in hand, not only when the backlog is all read."""
    monkeypatch.setattr(receive, "MAX_PACKETS", 2)
    got: list = []
    sent_before: list[int] = []
    data = b"".join(_publish_packet(f"s/{k}", b"x", k + 1, props=USER_PROPERTY) for k in range(5))
    client = client_on([data], got)

    def on_message(c, userdata, message):
        sent_before.append(len(c._sock.sent))
        got.append(message.topic)
        c.ack(message.mid, message.qos)

    client.on_message = on_message
    client.loop_read()
    assert len(got) == 5 and sent_before[0] == 0 and sent_before[-1] > 0
    acked = b"".join(client._sock.sent)
    assert acked == b"".join(b"\x40\x02" + (k + 1).to_bytes(2, "big") for k in range(5))  # each once, in order


def test_the_receive_maximum_is_never_set_to_unlimited():
    """paho reads 0 as "no limit": a receive maximum of 0 (or less) is taken as 1, never as unlimited."""
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="rm0", protocol=paho.MQTTv5)
    client.receive_maximum(0)
    assert client.max_inflight_messages == 1


def test_only_qos1_publishes_wait_for_the_connack():
    """A QoS 0 message has no queue to wait in (paho drops one it cannot send): published between
    the CONNECT and the CONNACK it goes at once, as in paho."""
    with connecting_client("q0") as client:
        info = client.publish("sensorguard/events", b"e", qos=0)
        assert info.rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("retain", [False, True])
def test_the_mqtt5_paho_path_keeps_the_flags_and_acknowledges_only_by_hand(retain):
    """A QoS 1 MQTT 5 PUBLISH decoded past paho's ``Properties`` keeps its retain flag (a retained
    reading is stale, the daemon must see it) and is acknowledged by the application only."""
    got: list = []
    client = client_on([], [], ack=False)
    client.on_message = lambda c, userdata, m: got.append((m.topic, m.payload, m.mid, m.retain, m.qos))
    packet = _publish_packet("s/a", b"v", 9, flags=0x01 if retain else 0)
    client._in_packet = {"command": packet[0], "packet": packet[2:], "have_remaining": 1, "remaining_count": [],
                         "remaining_mult": 1, "remaining_length": len(packet) - 2, "to_process": 0, "pos": 0}
    assert client._handle_publish() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [("s/a", b"v", 9, retain, 1)] and not client._out_packet


def test_the_mqtt5_paho_path_acknowledges_by_itself_without_manual_ack():
    """A client without ``manual_ack`` gets its PUBACK from the library, as with paho's own path."""
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="auto", protocol=paho.MQTTv5)
    got: list = []
    client.on_message = lambda c, userdata, m: got.append(m.mid)
    packet = _publish_packet("s/a", b"v", 9)
    client._in_packet = {"command": packet[0], "packet": packet[2:], "have_remaining": 1, "remaining_count": [],
                         "remaining_mult": 1, "remaining_length": len(packet) - 2, "to_process": 0, "pos": 0}
    client._handle_publish()
    assert got == [9] and [bytes(p["packet"]) for p in client._out_packet] == [b"\x40\x02\x00\x09"]


def test_a_connack_is_read_while_the_application_is_full():
    """A reconnect completes during a stall: before the CONNACK nothing is held back."""
    got: list = []
    client = client_on([b"\x20\x03\x00\x00\x00"], got, connected=False)  # CONNACK, MQTT 5, success
    client._state = paho._ConnectionState.MQTT_CS_CONNECTING
    client.hold = lambda wait_s: True
    client.loop_read()
    assert client.is_connected()  # (and held from here on)


def test_holding_wakes_the_loop_at_once():
    """The bytes in hand are invisible to ``select``: holding writes a byte to paho's wake pipe, so
    the loop comes round at once to wait for room and read them."""
    got: list = []
    client = client_on([_publish_packet("s/a", b"1", 1)], got)
    reader, writer = socket.socketpair()
    try:
        client._sockpairW = writer
        client.hold = lambda wait_s: True
        client.loop_read()
        reader.settimeout(1.0)
        assert reader.recv(16) == b"0"
    finally:
        reader.close()
        writer.close()


def held_client(keepalive: int = 30) -> FastClient:
    got: list = []
    client = client_on([_publish_packet("s/a", b"1", 1)], got)
    client._keepalive = keepalive
    client.hold = lambda wait_s: True
    client.loop_read()
    assert client._held
    return client


def test_a_held_client_pings_every_half_keepalive_and_no_more():
    """While held, paho's own keep-alive waits: a PINGREQ goes once half a keep-alive has passed
    since the last packet out (the broker drops a client silent for 1.5 keep-alives), then not
    again before the next half."""
    client = held_client()
    now = paho.time_func()
    client._last_msg_out = now - 16.0
    client.loop_misc()
    client.loop_misc()
    assert client._sock.sent == [b"\xc0\x00"]  # one PINGREQ
    quiet = held_client()
    quiet._last_msg_out = paho.time_func() - 10.0
    quiet.loop_misc()
    assert quiet._sock.sent == []


def test_a_held_client_is_not_taken_for_dead_and_its_release_restarts_the_keepalive():
    """While held, the broker's PINGRESP waits unread behind the held messages: paho's check would
    take the silence for a dead link, so it waits for the release, which starts it afresh."""
    client = held_client()
    now = paho.time_func()
    client._last_msg_out = now
    client._last_bytes_received = client._ping_t = now - 100.0  # a PINGREQ long unanswered
    client.hold = lambda wait_s: wait_s == 0.0  # room for a moment, full again when read
    assert client.loop_misc() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client._sock is not None and client._held
    client.hold = lambda wait_s: False
    client.loop_read()
    assert not client._held and client._ping_t == 0 and paho.time_func() - client._last_bytes_received < 5.0


def test_a_per_topic_callback_gets_its_messages_not_on_message():
    """``message_callback_add`` turns the short path off: the topic's own callback gets its message."""
    got: list = []
    special: list = []
    client = client_on([], got)
    client._rbuf = _publish_packet("s/special", b"1", 1) + _publish_packet("s/other", b"2", 2)
    client.message_callback_add("s/special", lambda c, userdata, m: special.append(m.topic))
    client.loop_read()
    assert special == ["s/special"] and got == ["s/other"]


def test_only_qos1_acknowledgements_are_kept_as_pubacks():
    """A QoS 0 message has nothing to acknowledge and a QoS 2 one another exchange: only QoS 1
    acknowledgements made while reading are kept to be joined as PUBACKs."""
    import threading

    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="q", protocol=paho.MQTTv5, manual_ack=True)
    client._reading, client._reader = True, threading.get_ident()
    client.ack(5, 0)
    assert client._acks == [] and not client._out_packet


def test_a_connection_closed_while_held_starts_the_next_one_unheld():
    """Held when the connection died: the next connection is not held from its start (paho's own
    keep-alive judges it until the application says it is full)."""
    client = held_client()
    client._sock_close()
    assert not client._held


def test_without_manual_ack_the_short_path_is_off_and_paho_acknowledges():
    """The short path hands messages on for the application to acknowledge: a client without
    ``manual_ack`` reads through paho's path, which acknowledges each message itself."""
    got: list = []
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="auto", protocol=paho.MQTTv5)
    client.on_message = lambda c, userdata, m: got.append(m.mid)
    client._sock = Socket([])
    client._rbuf = _publish_packet("s/a", b"1", 7)
    client.loop_read()
    assert got == [7] and client._sock.sent == [b"\x40\x02\x00\x07"]


@pytest.mark.parametrize("packet", [
    _publish_packet("s/q0", b"x\x00yz", 0, qos=0),  # QoS 0: no packet id (it would read one from the payload)
    _publish_packet("s/q2", b"v", 5, qos=2),  # QoS 2: another acknowledgement
    b"\x32\x86\x80\x80\x80\x00" + b"\x00\x01s\x00\x01\x00",  # a remaining length in 5 bytes: malformed
], ids=["qos0", "qos2", "five-byte-length"])
def test_the_short_path_leaves_other_qos_and_malformed_lengths_to_paho(packet):
    """Only a QoS 1 PUBLISH with a well-formed length is decoded on the short path."""
    got: list = []
    client = client_on([], got)
    client._rbuf = packet
    assert client._take_publishes() == 0 and got == [] and client._rpos == 0


def test_a_failing_handler_is_raised_as_in_paho_unless_suppressed():
    """paho's rule for a failing ``on_message``: raised unless ``suppress_exceptions``; the keep-alive
    still saw the traffic."""
    client = client_on([], [])

    def broken(c, userdata, message):
        raise RuntimeError("handler bug")

    client.on_message = broken
    client._rbuf = _publish_packet("s/a", b"1", 1)
    client._last_bytes_received = 0.0
    with pytest.raises(RuntimeError):
        client._take_publishes()
    assert client._last_bytes_received > 0.0
    client.suppress_exceptions = True
    client._rbuf, client._rpos = _publish_packet("s/b", b"2", 2), 0
    assert client._take_publishes() == 1


def test_messages_taken_on_the_short_path_count_as_traffic_for_the_keepalive():
    got: list = []
    client = client_on([], got)
    client._rbuf = _publish_packet("s/a", b"1", 1)
    client._last_bytes_received = 0.0
    assert client._take_publishes() == 1 and client._last_bytes_received > 0.0


def test_an_acknowledgement_made_outside_a_read_goes_out_at_once():
    """Outside a read, an acknowledgement goes through paho (written at once, or the loop woken):
    only the reader's are kept for the end of its read."""
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="now", protocol=paho.MQTTv5, manual_ack=True)
    client._sock = Socket([])
    client.ack(7, 1)
    assert client._sock.sent == [b"\x40\x02\x00\x07"]


def test_two_queued_pubacks_are_joined_into_one_write():
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="two", manual_ack=True)
    client._reading, client._reader = True, __import__("threading").get_ident()
    client.ack(1, 1)
    client._packet_queue(receive.PUBACK, b"\x40\x02\x00\x02", 2, 1)
    client._reading = False
    client._join_acks()
    assert [bytes(p["packet"]) for p in client._out_packet] == [b"\x40\x02\x00\x01\x40\x02\x00\x02"]


def in_packet(packet: bytes) -> dict:
    return {"command": packet[0], "packet": packet[2:], "have_remaining": 1, "remaining_count": [],
            "remaining_mult": 1, "remaining_length": len(packet) - 2, "to_process": 0, "pos": 0}


def test_a_qos2_mqtt5_publish_is_paho_s_to_decode():
    """Only QoS 1 is decoded past paho's ``Properties``: a QoS 2 message is paho's exchange (kept
    until the broker's PUBREL), not handed on at once as if it were QoS 1."""
    got: list = []
    client = client_on([], [])
    client.on_message = lambda c, userdata, m: got.append((m.topic, m.payload, m.qos))
    client._in_packet = in_packet(_publish_packet("s/a", b"v", 9, qos=2))
    client._handle_publish()
    assert got == [] and client._in_messages[9].qos == 2  # handed on at its PUBREL, by paho


def test_an_mqtt5_publish_cut_before_its_property_length_does_not_crash_the_reader():
    """A QoS 1 MQTT 5 PUBLISH that ends right after its packet id (no property length) is malformed:
    paho's path judges it; the fast decoder must not fail with an IndexError on the network thread."""
    client = client_on([], [])
    client._in_packet = in_packet(_publish_packet("s/a", b"", 9, props=b""))
    try:
        client._handle_publish()
    except IndexError as err:  # pragma: no cover - the failure this pins
        pytest.fail(f"IndexError: {err}")
    except Exception:  # noqa: BLE001 - paho's own verdict on a malformed packet is its business
        pass
