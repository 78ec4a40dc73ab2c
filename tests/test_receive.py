"""The daemon's receive path (service/receive.py) against a real Mosquitto: every message arrives
once and intact, with and without MQTT 5 properties, and each is acknowledged (nothing comes back
in the next session)."""

from __future__ import annotations

import threading
import time
from collections import deque

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensorguard.service.receive import PUBACK, FastClient


def _subscriber(port: int, client_id: str, protocol: int, got: list, done: threading.Event, n: int) -> FastClient:
    kwargs = {} if protocol == paho.MQTTv5 else {"clean_session": False}
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, manual_ack=True,
                        **kwargs)
    subscribed = threading.Event()

    def on_message(c, userdata, message):
        got.append((message.topic, message.payload, message.qos, message.retain))
        c.ack(message.mid, message.qos)
        if len(got) >= n:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe("t/#", qos=1)
    if protocol == paho.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(10), "subscription not granted"
    return client


def _publish(port: int, messages: list[tuple[str, bytes, Properties | None]]) -> None:
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(topic, payload, qos=1, properties=props) for topic, payload, props in messages]
    for info in infos:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_every_queued_message_arrives_once_intact_and_acknowledged(mosquitto, protocol):
    user = Properties(PacketTypes.PUBLISH)
    user.UserProperty = ("k", "v")
    messages = [(f"t/a{i % 7}/readings", f'{{"i": {i}, "pad": "{"x" * (i % 300)}"}}'.encode(),
                 user if i % 10 == 0 else None) for i in range(3000)]  # some with properties: paho's path
    client_id = f"fast-{protocol}"
    got: list = []
    done = threading.Event()
    _subscriber(mosquitto.port, client_id, protocol, got, done, 0).disconnect()  # the session exists: queued
    _publish(mosquitto.port, messages)
    client = _subscriber(mosquitto.port, client_id, protocol, got, done, len(messages))
    assert done.wait(30), f"only {len(got)} of {len(messages)} arrived"
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()
    assert [(t, p) for t, p, _, _ in got] == [(t, p) for t, p, _ in messages]  # each once, in order, intact
    assert {q for _, _, q, _ in got} == {1}

    again: list = []  # everything was acknowledged: the resumed session has nothing left to send
    client = _subscriber(mosquitto.port, client_id, protocol, again, threading.Event(), 1)
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()
    assert again == []


def test_acks_are_joined_in_order_behind_nothing():
    client = FastClient(paho.CallbackAPIVersion.VERSION2, client_id="join", manual_ack=True)

    def item(command: int, data: bytes, info=None) -> dict:
        return {"command": command, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data), "packet": data,
                "info": info}

    client._out_packet = deque([item(PUBACK, b"a1"), item(PUBACK, b"a2"), item(0x30, b"pub"), item(PUBACK, b"a3")])
    client._join_acks()
    assert [(p["command"], p["packet"], p["to_process"]) for p in client._out_packet] == [
        (PUBACK, b"a1a2", 4), (0x30, b"pub", 3), (PUBACK, b"a3", 2)]
