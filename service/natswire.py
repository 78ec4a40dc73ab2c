"""A lean NATS connection for the readings: the protocol's few verbs, parsed in one loop.

Profiled draining a backlog with ``serve --cluster``, most of a reading's cost was nats-py's, not
the daemon's: it parses every message's headers (readings sourced into the partitioned stream carry
``Nats-Stream-Source``), builds a ``Msg``, queues it for the subscription's task, and sends every
acknowledgement as a publish of its own. The readings path needs little of the protocol: subscribe
to a pull request's reply subject, publish pull requests, and acknowledge. So, as
:mod:`receive` does for paho, this module speaks those verbs itself on a connection of its own:
``data_received`` parses every whole ``MSG``/``HMSG`` of a read in one loop (headers looked at only
for a status line: 408, 409 and 503 end a pull request) and calls the subscription's function
directly; the acknowledgements of a batch leave in one write. Everything else (leases, key-value
buckets, stream info, the window stream) stays on nats-py.

URLs as nats-py takes them: ``nats://[user:password@ | token@]host:port`` (sent as written, as
nats-py does), ``tls://`` for TLS (verified against the system's CAs, as nats-py does; a server
that requires TLS is met with it too). A lost connection is not re-established here: every
subscription is told (its function gets None), the pulls end with an error, and the caller
connects again (:func:`connect`). An ``INFO`` after connecting (new cluster routes, a server
going into lame-duck mode) is ignored: such a server soon closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import ssl
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

PING_EVERY_S = 5.0  # the connection is checked this often; 2 pings unanswered and it is closed (lost)
MAX_PINGS_OUT = 2
CONNECT_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class WireError(ConnectionError):
    """The server could not be reached, refused the connection, or the connection was lost."""


class Delivery(NamedTuple):
    """One message: ``subject``, ``reply`` (its acknowledgement subject), ``data``; ``status``
    ("408 Request Timeout") for a pull request's status message, else None."""

    subject: str
    reply: bytes
    data: bytes
    status: str | None


Handler = Callable[[Delivery | None], None]  # None: the connection was lost


def stream_seq(message: Delivery) -> float:
    """A JetStream delivery's stream sequence, from its acknowledgement subject: ``$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>...`` (9 tokens), or with a domain and account hash after
    ``ACK`` (12); readings given back are ``nak``-ed in this order, as JetStream redelivers in the
    order it is told. Not a JetStream delivery: infinity (a stable sort keeps its place)."""
    tokens = message.reply.split(b".")
    try:
        return float(tokens[5] if len(tokens) == 9 else tokens[7])
    except (IndexError, ValueError):
        return math.inf


class Wire(asyncio.Protocol):
    """One connection to a NATS server: :meth:`subscribe`, :meth:`publish`, :meth:`ack`, :meth:`nak`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.info: asyncio.Future = asyncio.get_running_loop().create_future()  # the server's INFO
        self.connected = False
        self.error = ""  # why the connection ended (the server's last -ERR, or the transport's error)
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._subs: dict[bytes, Handler] = {}
        self._next_sid = 0
        self._pongs: list[asyncio.Future | None] = []  # one per PING sent (None: a keepalive), answered in order
        self._last_err = ""
        self._pings_out = 0
        self._pinger: asyncio.Task | None = None

    # --- asyncio's side -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        self.error = self.error or self._last_err or (str(exc) if exc else "closed by the server")
        waiting = [f for f in (self.info, *self._pongs) if f is not None and not f.done()]
        for future in waiting:
            future.set_exception(WireError(self.error))
            # marked retrieved: one nobody awaits any more (a wire lost before its INFO, a flush given
            # up) had asyncio log "Future exception was never retrieved" as an ERROR at collection,
            # in whatever ran then (another test's log, in CI); its waiters, if any, still get it
            future.exception()
        self._pongs.clear()
        if self._pinger is not None:
            self._pinger.cancel()
        for handler in list(self._subs.values()):
            handler(None)

    def data_received(self, data: bytes) -> None:
        """Every whole operation in the buffer; a partial one waits for the next read."""
        buf = self._buf
        buf += data
        subs = self._subs
        pos, size = 0, len(buf)
        while pos < size:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            op = buf[pos:pos + 4]
            if op == b"HMSG" or op[:3] == b"MSG":
                headed = op == b"HMSG"
                args = bytes(buf[pos + (5 if headed else 4):end]).split()
                total = int(args[-1])
                start = end + 2
                if start + total + 2 > size:
                    break  # its payload is still on the way
                status = None
                if headed:
                    split = start + int(args[-2])
                    if buf[start + 8:start + 9] == b" ":  # "NATS/1.0 408 Request Timeout\r\n": a status
                        status = bytes(buf[start + 9:buf.find(b"\r\n", start)]).decode("utf-8", "replace").strip()
                else:
                    split = start
                handler = subs.get(args[1])
                if handler is not None:
                    reply = args[2] if len(args) == (5 if headed else 4) else b""
                    handler(Delivery(args[0].decode(), reply, bytes(buf[split:start + total]), status))
                pos = start + total + 2
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            if line == b"PING":
                self._write(b"PONG\r\n")
            elif line == b"PONG":
                self._pings_out = 0
                self._last_err = ""  # alive after it: an earlier error was not the end
                if self._pongs:
                    pong = self._pongs.pop(0)
                    if pong is not None and not pong.done():
                        pong.set_result(None)
            elif line.startswith(b"INFO "):
                if not self.info.done():
                    self.info.set_result(json.loads(line[5:]))
            elif line.startswith(b"-ERR"):  # most close the connection (then connection_lost says so)
                self._last_err = line[4:].decode("utf-8", "replace").strip(" '")
                if self.connected:  # a refused CONNECT is the caller's error, raised from connect()
                    log.warning("nats %s: the server says: %s", self.name, self._last_err)
        del buf[:pos]

    # --- the caller's side ----------------------------------------------------------------------

    def new_inbox(self) -> str:
        return f"_INBOX.{secrets.token_hex(11)}"

    def subscribe(self, subject: str, handler: Handler) -> bytes:
        """``handler`` gets every message on ``subject`` (on the event loop, from ``data_received``)."""
        self._next_sid += 1
        sid = str(self._next_sid).encode()
        self._subs[sid] = handler
        self._write(b"SUB %s %s\r\n" % (subject.encode(), sid))
        return sid

    def unsubscribe(self, sid: bytes) -> None:
        if self._subs.pop(sid, None) is not None and self.connected:
            self._write(b"UNSUB %s\r\n" % sid)

    def publish(self, subject: str, data: bytes, reply: str = "") -> None:
        head = f"PUB {subject} {reply} {len(data)}\r\n" if reply else f"PUB {subject} {len(data)}\r\n"
        self._write(head.encode() + data + b"\r\n")

    def ack(self, messages: list[Delivery]) -> None:
        """Acknowledge ``messages``, one write for them all."""
        if messages:
            self._write(b"".join([b"PUB %s 0\r\n\r\n" % m.reply for m in messages if m.reply]))

    def nak(self, messages: list[Delivery]) -> None:
        """Give ``messages`` back: delivered again at once, in this order."""
        if messages:
            self._write(b"".join([b"PUB %s 4\r\n-NAK\r\n" % m.reply for m in messages if m.reply]))

    async def flush(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Wait until the server has processed everything written so far (a PING answered)."""
        self.check()
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        self._write(b"PING\r\n")
        await asyncio.wait_for(pong, timeout)

    async def nak_confirmed(self, messages: list[Delivery], timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Give ``messages`` back (:meth:`nak`) and wait until JetStream applied the last: it answers
        an acknowledgement that carries a reply subject once done (a PING's answer only says the
        server this connection is on read it, not that the consumer's leader applied it)."""
        messages = [m for m in messages if m.reply]
        if not messages:
            return
        self.check()
        self.nak(messages[:-1])
        answered = asyncio.get_running_loop().create_future()
        inbox = self.new_inbox()
        sid = self.subscribe(inbox, lambda m: answered.done() or answered.set_result(m))
        try:
            self._write(b"PUB %s %s 4\r\n-NAK\r\n" % (messages[-1].reply, inbox.encode()))
            reply = await asyncio.wait_for(answered, timeout)
            if reply is None:
                self.check()
            elif reply.status is not None:  # 503: no responders (no consumer leader right now)
                raise WireError(f"the give-back was not confirmed: {reply.status}")
        finally:
            self.unsubscribe(sid)

    def check(self) -> None:
        """Raise :class:`WireError` if the connection was lost or closed."""
        if self.error or self._transport is None or self._transport.is_closing():  # lost or closed
            raise WireError(f"the connection to NATS was lost ({self.error or 'closed'})")

    def close(self) -> None:
        self.connected = False
        self.error = self.error or "closed"
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # lost: its subscriptions were told, what was to be written comes again or is redone
        transport.write(data)

    async def _ping(self) -> None:
        """A connection that stops answering (a server gone without a reset) is closed, so its pulls
        end with an error instead of waiting for nothing."""
        while self.connected:
            await asyncio.sleep(PING_EVERY_S)
            if self._pings_out >= MAX_PINGS_OUT:
                self.error = f"no answer to {MAX_PINGS_OUT} pings"
                if self._transport is not None:
                    self._transport.abort()
                return
            self._keepalive()

    def _keepalive(self) -> None:
        self._pings_out += 1
        self._pongs.append(None)  # its PONG must not answer a flush
        self._write(b"PING\r\n")


async def connect(servers: tuple[str, ...] | list[str], name: str = "sensorguard", prefer: Any = None) -> Wire:
    """A :class:`Wire` to the first of ``servers`` that answers, the one ``prefer`` names first (a
    parsed URL: the server nats-py is on); :class:`WireError` naming them all."""
    if prefer is not None:
        servers = sorted(servers, key=lambda url: _host_port(url) != (prefer.hostname, prefer.port or 4222))
    errors = []
    for url in servers:
        try:
            return await asyncio.wait_for(_open(url, name), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            errors.append(f"{_where(url)}: {str(exc) or type(exc).__name__}")
    raise WireError("cannot reach the NATS servers: " + "; ".join(errors) if errors else "no NATS server given")


def _parse(url: str) -> SplitResult:
    """``url`` split, ``nats://`` when it names no scheme (``host:port``, as nats-py takes it)."""
    return urlsplit(url if "://" in url else f"nats://{url}")


def _where(url: str) -> str:
    """``url`` without its credentials, for messages."""
    host, port = _host_port(url)
    return f"{_parse(url).scheme}://{host}:{port}"


def _host_port(url: str) -> tuple[str | None, int]:
    parts = _parse(url)
    return parts.hostname, parts.port or 4222


async def _open(url: str, name: str) -> Wire:
    parts = _parse(url)
    if parts.scheme not in ("nats", "tls"):
        raise ValueError(f"not a NATS URL: {url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    loop = asyncio.get_running_loop()
    transport, wire = await loop.create_connection(lambda: Wire(name), host, port)
    try:
        info = await wire.info
        if parts.scheme == "tls" or info.get("tls_required"):
            context = ssl.create_default_context()
            transport = await loop.start_tls(transport, wire, context, server_hostname=host)
            wire.connection_made(transport)
        options: dict = {"verbose": False, "pedantic": False, "lang": "python3", "version": "sensorguard-wire",
                         "protocol": 1, "headers": True, "no_responders": True, "name": name,
                         "tls_required": parts.scheme == "tls" or bool(info.get("tls_required"))}
        if parts.username is not None:
            if parts.password is None:
                options["auth_token"] = parts.username
            else:
                options["user"], options["pass"] = parts.username, parts.password
        wire._write(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
        await wire.flush()  # -ERR 'Authorization Violation' arrives before the PONG
        wire.connected = True
        wire._pinger = asyncio.create_task(wire._ping(), name="nats-wire-ping")
        return wire
    except BaseException:
        transport.close()
        raise
