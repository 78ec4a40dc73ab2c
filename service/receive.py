"""A paho client whose receive path does less per message: the daemon's MQTT client.

paho 2.x spends most of a QoS 1 subscriber's time outside the application, per message:

- a ``select`` and at least three ``recv`` system calls (the command byte, each length byte, the
  body), since :meth:`paho.mqtt.client.Client.loop_read` reads one packet per wake-up;
- a PUBACK written by its own ``send``, plus a byte to wake the loop, for every ``ack``;
- with MQTT 5, a :class:`paho.mqtt.properties.Properties` object built and cleared per PUBLISH
  (about 40 % of the time in a profile) even when the message carries no property.

:class:`FastClient` keeps paho (connect, TLS, reconnect, sessions, publishing are untouched) and
overrides the receive side (and holds QoS 1 publishes back until the broker's CONNACK, so a
reconnect sends the outage's backlog first, in order):

- the socket is read in ``RECV_CHUNK`` blocks and the packets in them handled until it is drained
  (the queued writes go out every ``MAX_PACKETS`` packets, so they are never starved);
- the common packet, a whole QoS 1 PUBLISH without properties already in the buffer, is decoded in
  one small loop (:meth:`FastClient._take_publishes`) into a :class:`Received` and handed to
  ``on_message`` directly; anything else (another packet type or QoS, properties, a packet not yet
  all read) goes through paho's own ``_packet_read``, which reads the same buffer;
- acknowledgements made while reading are kept as packet ids and written as one packet when the
  wake-up ends: the broker still gets one PUBACK per message, in the order of the messages, only
  after each was handled;
- backpressure stops the reading, not the thread: while :attr:`FastClient.hold` says the
  application is full, no message is handed on (the rest stay in the buffer, the socket and the
  broker), and paho's loop keeps going round every ``HOLD_WAIT_S`` at most, so acknowledgements,
  publishes and PINGREQs still go out. Waiting inside ``on_message`` instead held the whole network
  thread: a scorer stalled past 1.5 keep-alives, or one slow enough to keep the reader waiting
  for room message after message, lost the connection (``/readyz`` red, a reconnect) for nothing.
  A CONNACK is never held back, so a reconnect completes during a stall.

Measured draining 60,000 queued QoS 1 messages from Mosquitto (``docs/benchmarks.md``): a bare
manual-ack subscriber goes from about 18k to about 80k messages/s with MQTT 5 (buffered reads and
joined acknowledgements), and the daemon from about 23k to about 55k readings/s with one worker
(the short path).

These are private methods of paho, so ``pyproject.toml`` pins its minor version; the daemon's
integration tests against a real Mosquitto run on this client. A message decoded on the short path
has ``topic``, ``payload``, ``mid``, ``qos``, ``retain`` and ``dup`` like paho's, and ``properties``
None (the daemon reads no property); ``message_callback_add`` turns the short path off.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

PUBACK = 0x40
PUBACK_WORD = 0x4002  # a PUBACK's fixed header: type 4, remaining length 2 (success, no properties)
RECV_CHUNK = 1 << 18  # bytes per recv: about 2,500 small readings
MAX_PACKETS = 1000  # packets per wake-up before the acknowledgements go out (once the chunk is used up)
HOLD_WAIT_S = 0.2  # while held: how long one trip round paho's loop waits for room


class FastClient(paho.Client):
    """:class:`paho.mqtt.client.Client` with the buffered, batched receive path described above."""

    def queued_out(self) -> int:
        """Outgoing QoS 1 messages paho holds (not yet confirmed by the broker)."""
        return len(self._out_messages)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._reading = False
        self._acks: list[int] = []  # packet ids acknowledged during this wake-up, not yet queued
        self._reader = 0  # the thread in loop_read: only its acknowledgements are kept back
        self._filtered = False  # message_callback_add was used: every message takes paho's path
        # hold(wait_s): whether the application is full, after waiting up to wait_s for room (the
        # daemon's Ingest.backlogged); None: never hold
        self.hold: Callable[[float], bool] | None = None
        self._held = False  # reading stopped for the application: the broker's answers wait unread

    def receive_maximum(self, count: int) -> None:
        """MQTT 5: at most ``count`` QoS 1 messages unacknowledged, as the broker's CONNACK asks (from
        the end of ``on_connect``). paho's setter refuses any change on an open connection (its doubt
        is about 0, unlimited, which this never sets), so the field is set directly. paho's reset at a
        reconnect marks the whole backlog to go at the CONNACK, whatever the limit: beyond the room
        left, messages are queued instead, and go as acknowledgements free room, in order (paho's
        CONNACK loop stops at the first queued one; only older ones are before it)."""
        count = max(1, int(count))
        with self._out_message_mutex:
            self._max_inflight_messages = count
            room = count - self._inflight_messages
            for message in self._out_messages.values():
                if message.qos and message.state == paho.mqtt_ms_publish:
                    if room > 0:
                        room -= 1
                    else:
                        message.state = paho.mqtt_ms_queued

    def _send_publish(self, mid: int, topic: bytes, payload: bytes | bytearray = b"", qos: int = 0,
                      retain: bool = False, dup: bool = False, info: Any = None, properties: Any = None) -> Any:
        """A QoS 1 message published between a reconnect's CONNECT and the broker's CONNACK waits:
        paho sent it at once (a socket exists), and the backlog of the outage went out only at the
        CONNACK, after it: a ``cleared`` ahead of its own ``raised``, an old retained state over a new
        one. Answered "not connected", paho keeps it queued and sends it at the CONNACK in order."""
        if qos and not self.is_connected():
            return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
        return super()._send_publish(mid, topic, payload, qos, retain, dup, info, properties)

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
        # Bytes and acknowledgements of a dead connection must never reach the next one: the broker
        # reuses packet ids, so an old PUBACK would acknowledge a new message before it was handled.
        self._rbuf, self._rpos, self._acks, self._held = b"", 0, [], False
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:  # noqa: ARG002 - paho's signature
        """Read and handle packets until the socket is drained (or ``MAX_PACKETS`` with no buffered
        bytes left), then write the acknowledgements they queued in one go."""
        if self._sock is None:
            return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
        self._reading = True
        self._reader = threading.get_ident()
        try:
            handled = 0
            while True:
                if self._sock is None:
                    return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
                if self._must_hold():
                    break
                if self._rpos < len(self._rbuf) and self._in_packet["command"] == 0:
                    handled += self._take_publishes()  # whole QoS 1 PUBLISH packets already in hand
                    if self._must_hold():
                        break
                rc = self._packet_read()  # the next packet (or the rest of one), through paho
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == paho.MQTTErrorCode.MQTT_ERR_AGAIN:
                    break
                handled += 1
                if handled >= MAX_PACKETS:
                    handled = 0
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

    def _must_hold(self) -> bool:
        """Whether to stop reading here: connected (a CONNACK is never held back), at a packet
        boundary, with the application full. Nothing waits here: ``loop_read`` returns at once,
        so paho's loop comes round to :meth:`loop_misc`, which pings and waits for room. The next
        wake-up comes at once too (a byte on paho's wake pipe): the bytes already in hand are
        invisible to ``select``."""
        hold = self.hold
        if hold is None or self._in_packet["command"] != 0 or not self.is_connected() or not hold(0.0):
            if self._held:
                self._release()
            return False
        self._held = True
        if self._sockpairW is not None:
            with contextlib.suppress(BlockingIOError):
                self._sockpairW.send(b"0")
        return True

    def _release(self) -> None:
        """Reading goes on: the broker's PINGRESPs are still behind the held readings, so its
        silence so far says nothing about the link; paho's keep-alive judges it from now."""
        self._held = False
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        self._ping_t = 0

    def loop_misc(self) -> paho.MQTTErrorCode:
        """While held, once per trip round paho's loop: a PINGREQ when half a keep-alive has passed
        since the last packet out (written at once; the broker drops a client silent for 1.5
        keep-alives), then a wait of up to ``HOLD_WAIT_S`` for room, then the bytes in hand are
        offered again. Paho's own check, which would take the unread PINGRESP for a dead link,
        waits for the release, so a link that dies silently is noticed only after it."""
        if self._held and self._sock is not None:
            now = paho.time_func()
            if self._keepalive and self.is_connected() and now - self._last_msg_out >= self._keepalive / 2:
                self._send_simple_command(paho.PINGREQ)  # (not paho's _send_pingreq: no answer is awaited)
                with self._msgtime_mutex:
                    self._last_msg_out = now
                rc = self.loop_write()
                if rc or self._sock is None:
                    return rc
            hold = self.hold
            if hold is not None and hold(HOLD_WAIT_S):
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # still full: round the loop again
            rc = self.loop_read()
            if rc or self._sock is None or self._held:
                return rc
        return super().loop_misc()

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True  # per-filter callbacks are paho's business: give up the short path
        super().message_callback_add(sub, callback)

    def ack(self, mid: int, qos: int) -> paho.MQTTErrorCode:
        """A QoS 1 acknowledgement made while reading is kept as a packet id and written with the
        others when the wake-up ends (:meth:`_join_acks`); anything else goes through paho."""
        if self._reading and qos == 1 and self._manual_ack and threading.get_ident() == self._reader:
            self._acks.append(mid)
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return super().ack(mid, qos)

    def _take_publishes(self) -> int:
        """Hand every complete QoS 1 PUBLISH without properties at the head of the buffer to
        ``on_message``, without paho's per-packet state machine; returns how many.

        Stops at the first packet that is anything else, incomplete, or has a topic that is not
        UTF-8: paho's :meth:`_packet_read` takes it from there (it reads the same buffer), so
        every unusual packet is still paho's.
        """
        on_message = self.on_message
        if on_message is None or self._filtered or not self._manual_ack:
            return 0
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        props = 1 if self._protocol == paho.MQTTv5 else 0
        taken = 0
        hold = self.hold
        with self._in_callback_mutex:
            while pos + 1 < end and self._sock is not None:  # a handler may have closed the connection
                if hold is not None and hold(0.0):
                    break  # the application is full: loop_read stops here (loop_misc waits for room)
                header = buf[pos]
                if header & 0xF6 != 0x32:  # PUBLISH at QoS 1 (dup and retain flags free)
                    break
                length, shift, i = 0, 0, pos + 1
                while i < end and shift < 28:
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if byte < 0x80:
                        break
                else:
                    break  # the length itself is not all here (or malformed): paho's turn
                stop = i + length
                if stop > end or length < 4:
                    break
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                body = topic_end + 2 + props
                if body > stop or (props and buf[topic_end + 2] != 0):
                    break  # malformed, or it carries properties
                try:
                    topic = buf[i + 2:topic_end].decode()
                except UnicodeDecodeError:
                    break
                message = Received(topic, buf[body:stop], (buf[topic_end] << 8) | buf[topic_end + 1],
                                   bool(header & 0x01), bool(header & 0x08))
                pos = self._rpos = stop
                taken += 1
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:  # paho's own rule for a failing callback
                    self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        self._received()
                        raise
        if taken:
            self._received()
        return taken

    def _received(self) -> None:
        with self._msgtime_mutex:  # what paho's _packet_read does per packet: the keep-alive sees traffic
            self._last_bytes_received = paho.time_func()

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> paho.MQTTErrorCode:
        if self._acks and command == PUBACK and threading.get_ident() == self._reader:
            self._queue_acks()  # keep the reader's PUBACKs in the order of their PUBLISHes
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
        self._queue_acks()
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

    def _queue_acks(self) -> None:
        """Queue the PUBACKs of :attr:`_acks` as one packet (only ever on the reader thread, which
        alone appends to it: no lock needed)."""
        mids, self._acks = self._acks, []
        if mids:
            words = [PUBACK_WORD] * (2 * len(mids))
            words[1::2] = mids
            data = struct.pack(f">{len(words)}H", *words)
            self._out_packet.append({"command": PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data),
                                     "packet": data, "info": None})

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


@dataclass(frozen=True, slots=True)
class Received:
    """A QoS 1 message decoded on the short path: what the daemon reads of paho's ``MQTTMessage``."""

    topic: str
    payload: bytes
    mid: int
    retain: bool = False
    dup: bool = False
    qos: int = 1
    properties: None = None


def _joined(acks: list[bytes]) -> dict:
    data = b"".join(acks)
    return {"command": PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data), "packet": data, "info": None}
