"""A paho client whose receive path does less per message: the daemon's MQTT client.

paho 2.x spends most of a QoS 1 subscriber's time outside the application, per message:

- a ``select`` and at least three ``recv`` system calls (the command byte, each length byte, the
  body), since :meth:`paho.mqtt.client.Client.loop_read` reads one packet per wake-up;
- a PUBACK written by its own ``send``, plus a byte to wake the loop, for every ``ack``;
- with MQTT 5, a :class:`paho.mqtt.properties.Properties` object built and cleared per PUBLISH
  (about 40 % of the time in a profile) even when the message carries no property.

:class:`FastClient` keeps paho (connect, TLS, reconnect, sessions, publishing are untouched) and
overrides the receive side only: the socket is read in ``RECV_CHUNK`` blocks and the packets in
them parsed until the socket is drained (the queued writes go out every ``MAX_PACKETS`` packets, so
they are never starved); acknowledgements queued while reading are joined into one write at the end
of the wake-up (the broker still gets one PUBACK per message, only after the message was handled); a
QoS 1 PUBLISH without properties is decoded directly. Measured draining 60,000 queued QoS 1
messages from Mosquitto (``docs/benchmarks.md``): a bare manual-ack subscriber goes from about 18k
to about 80k messages/s with MQTT 5.

These are private methods of paho, so ``pyproject.toml`` pins its minor version; the daemon's
integration tests against a real Mosquitto run on this client. ``message.properties`` is None for
a message decoded on the short path (the daemon never reads it).
"""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as paho

PUBACK = 0x40
RECV_CHUNK = 1 << 18  # bytes per recv: about 2,500 small readings
MAX_PACKETS = 1000  # packets per wake-up before the acknowledgements go out (once the chunk is used up)


class FastClient(paho.Client):
    """:class:`paho.mqtt.client.Client` with the buffered, batched receive path described above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._reading = False

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(RECV_CHUNK)  # BlockingIOError when nothing is there: paho's AGAIN
            self._rpos = 0
            if not self._rbuf:
                return b""  # closed by the broker
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos:end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a dead connection must never reach the next one
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:  # noqa: ARG002 - paho's signature
        """Read and handle packets until the socket is drained (or ``MAX_PACKETS`` with no buffered
        bytes left), then write the acknowledgements they queued in one go."""
        if self._sock is None:
            return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
        self._reading = True
        try:
            handled = 0
            while True:
                if self._sock is None:
                    return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == paho.MQTTErrorCode.MQTT_ERR_AGAIN:
                    break
                handled += 1
                if handled % MAX_PACKETS == 0:
                    if self._rpos >= len(self._rbuf):
                        break  # nothing left in hand, so select() sees whatever comes next
                    self._reading = False  # a long backlog: let the acknowledgements (and pings) out now
                    self._join_acks()
                    self.loop_write()
                    self._reading = True
        finally:
            self._reading = False
        self._join_acks()
        return self.loop_write()

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> paho.MQTTErrorCode:
        if self._reading and command == PUBACK:  # loop_read writes it when this wake-up ends: no wake byte
            self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                     "to_process": len(packet), "packet": packet, "info": info})
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def _join_acks(self) -> None:
        """Join runs of queued PUBACKs into one packet (one ``send``), keeping the queue's order.

        Other threads may append (a publish) meanwhile: the queue is taken with ``popleft`` and put
        back in front with ``extendleft``, so what they appended stays behind it.
        """
        queue = self._out_packet
        if len(queue) < 2:
            return
        taken = []
        while queue:
            try:
                taken.append(queue.popleft())
            except IndexError:
                break
        out: list[dict] = []
        acks: list[bytes] = []
        for item in taken:
            if item["command"] == PUBACK and item["pos"] == 0 and item["info"] is None:
                acks.append(bytes(item["packet"]))
                continue
            if acks:
                out.append(_joined(acks))
                acks = []
            out.append(item)
        if acks:
            out.append(_joined(acks))
        queue.extendleft(reversed(out))

    def _handle_publish(self) -> paho.MQTTErrorCode:
        """A QoS 1 MQTT 5 PUBLISH without properties, decoded without building a ``Properties``;
        anything else goes to paho."""
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        if self._protocol != paho.MQTTv5 or (header & 0x06) != 0x02:
            return super()._handle_publish()
        start = 4 + int.from_bytes(packet[0:2], "big")  # topic length, topic, packet id
        if len(packet) <= start or packet[start] != 0:  # has properties (an alias, user properties...)
            return super()._handle_publish()
        message = paho.MQTTMessage(mid=int.from_bytes(packet[start - 2:start], "big"), topic=bytes(packet[2:start - 2]))
        message.qos = 1
        message.dup = bool(header & 0x08)
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[start + 1:])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS if self._manual_ack else self._send_puback(message.mid)


def _joined(acks: list[bytes]) -> dict:
    data = b"".join(acks)
    return {"command": PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data), "packet": data, "info": None}
