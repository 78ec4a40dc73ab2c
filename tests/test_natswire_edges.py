"""Edges of the readings' lean NATS connection (service/natswire.py) found by a mutation audit: the
keepalive that closes a dead connection (and only a dead one), a give-back whose confirmation the
loss of the connection cut short, subscriptions given back to the server, the error a lost
connection reports, and the server preferred. No server needed: the wire's writes are captured."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from sensorguard.service import natswire
from sensorguard.service.natswire import Delivery, Wire, WireError

WAIT_S = 30.0  # generous: every wait below ends on an event long before this


class Transport:
    """A transport's write end that keeps what is written; ``answer``: PINGs get a PONG back."""

    def __init__(self, wire: Wire, answer: bool) -> None:
        self.wire = wire
        self.answer = answer
        self.written = bytearray()
        self.pings = 0
        self.aborted = asyncio.Event()
        self.pinged = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.written += data
        if data == b"PING\r\n":
            self.pings += 1
            self.pinged.set()
            if self.answer:
                asyncio.get_running_loop().call_soon(self.wire.data_received, b"PONG\r\n")

    def is_closing(self) -> bool:
        return self.aborted.is_set()

    def abort(self) -> None:
        self.aborted.set()
        self.pinged.set()  # (wakes a test waiting for the next ping)

    def close(self) -> None:
        self.aborted.set()


def wired(answer: bool = True) -> tuple[Wire, Transport]:
    """A connected wire on a captured transport (on the running loop, no server)."""
    wire = Wire("t")
    transport = Transport(wire, answer)
    wire._transport = transport  # type: ignore[assignment]
    wire.connected = True
    return wire, transport


def test_an_answered_keepalive_never_closes_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each PONG proves the server alive: a count of pings that never went back to 0 closed a
    healthy connection after its third ping, and every pull ended with an error (readings late,
    a reconnect every 15 s) on a server that answered every time."""
    monkeypatch.setattr(natswire, "PING_EVERY_S", 0.0)

    async def run() -> None:
        wire, transport = wired(answer=True)
        pinger = asyncio.ensure_future(wire._ping())
        try:
            async with asyncio.timeout(WAIT_S):
                while transport.pings < 3 * natswire.MAX_PINGS_OUT and not transport.aborted.is_set():
                    transport.pinged.clear()
                    await transport.pinged.wait()
            assert not transport.aborted.is_set() and not wire.error
        finally:
            wire.connected = False
            pinger.cancel()

    asyncio.run(run())


def test_a_server_that_stops_answering_is_closed_after_the_allowed_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server gone without a reset answers nothing: after MAX_PINGS_OUT pings unanswered the
    connection is closed, so the pulls end with an error and the worker reconnects, instead of
    waiting a further ping period (or for ever) for readings that cannot come."""
    monkeypatch.setattr(natswire, "PING_EVERY_S", 0.0)

    async def run() -> None:
        wire, transport = wired(answer=False)
        pinger = asyncio.ensure_future(wire._ping())
        await asyncio.wait_for(transport.aborted.wait(), WAIT_S)
        await asyncio.wait_for(pinger, WAIT_S)
        assert transport.pings == natswire.MAX_PINGS_OUT
        assert wire.error == f"no answer to {natswire.MAX_PINGS_OUT} pings"

    asyncio.run(run())


def test_an_error_the_server_got_past_is_not_given_as_why_the_connection_ended() -> None:
    """A ``-ERR`` the connection survived (a publish permission refused, then a PONG) is not why it
    ended later: the log said the connection was lost for a permissions violation, sending the
    operator after access rules when the server had simply gone."""
    async def run() -> None:
        wire, _ = wired()
        wire.data_received(b"-ERR 'Permissions Violation for Publish to x'\r\nPONG\r\n")
        wire.connection_lost(None)
        assert wire.error == "closed by the server"

    asyncio.run(run())


def test_a_give_back_cut_short_by_a_lost_connection_is_an_error_not_a_confirmation() -> None:
    """When the connection is lost while a give-back waits for JetStream's answer, the give-back
    was not confirmed: taken as confirmed, the worker went on as if its readings were handed back
    in order, and a partition's next owner could see them out of order or late."""
    async def run() -> None:
        wire, transport = wired()
        messages = [Delivery("s", b"$JS.ACK.a", b"", None)]
        task = asyncio.ensure_future(wire.nak_confirmed(messages, timeout=WAIT_S))
        await asyncio.sleep(0)
        assert b"-NAK" in transport.written
        transport.aborted.set()
        wire.connection_lost(None)
        with pytest.raises(WireError):
            await asyncio.wait_for(task, WAIT_S)

    asyncio.run(run())


def test_a_subscription_given_up_is_given_back_to_the_server() -> None:
    """Every confirmed give-back subscribes to an inbox of its own: without an UNSUB each one stayed
    an interest on the server for the connection's life, one more per give-back, for ever."""
    async def run() -> None:
        wire, transport = wired()
        messages = [Delivery("s", b"$JS.ACK.a", b"", None)]
        task = asyncio.ensure_future(wire.nak_confirmed(messages, timeout=WAIT_S))
        await asyncio.sleep(0)
        sub = bytes(transport.written).split(b"\r\n")[0].split()  # SUB <inbox> <sid>
        wire.data_received(b"MSG %s %s 0\r\n\r\n" % (sub[1], sub[2]))
        await asyncio.wait_for(task, WAIT_S)
        assert bytes(transport.written).endswith(b"UNSUB %s\r\n" % sub[2])
        assert not wire._subs

    asyncio.run(run())


def test_the_preferred_server_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The readings' wire goes to the server nats-py is on when it is listed (``prefer``): the lease
    and the pulls then fail together, instead of the pulls going on through a server cut off from
    the one holding the leases."""
    tried: list[str] = []

    async def fake_open(url: str, name: str) -> Any:
        tried.append(url)
        return url

    monkeypatch.setattr(natswire, "_open", fake_open)
    servers = ["nats://a:4222", "nats://b:4223", "c:4224"]
    got = asyncio.run(natswire.connect(servers, prefer=urlsplit("nats://b:4223")))
    assert got == "nats://b:4223" and tried == ["nats://b:4223"]
    tried.clear()
    assert asyncio.run(natswire.connect(servers, prefer=urlsplit("nats://c"))) == "nats://a:4222"  # c on 4224


def test_every_subscription_hears_at_once_that_the_connection_was_lost() -> None:
    """A pull waiting for its batch is told the connection is gone (its function gets None) and
    ends with an error at once, instead of waiting out its request's expiry, and a give-back
    waiting for its confirmation fails now, not after its timeout."""
    async def run() -> None:
        wire, _ = wired()
        got: list[Delivery | None] = []
        wire.subscribe("a", got.append)
        wire.subscribe("b", got.append)
        wire.connection_lost(None)
        assert got == [None, None]
        assert not wire.connected  # (its pinger stops, and nothing more is written)

    asyncio.run(run())


def test_a_lost_connection_is_no_longer_said_to_be_connected() -> None:
    """After the loss the wire says it is not connected: its keepalive loop ends, and giving up a
    subscription writes nothing to the dead transport."""
    async def run() -> None:
        wire, transport = wired()
        sid = wire.subscribe("a", lambda m: None)
        wire.connection_lost(None)
        assert not wire.connected
        written = bytes(transport.written)
        wire.unsubscribe(sid)
        assert bytes(transport.written) == written

    asyncio.run(run())


def test_a_connection_closed_here_says_so_not_that_the_server_closed_it() -> None:
    """The error a closed wire reports is read in the log when its pulls end: a connection this
    process closed itself must not read "closed by the server", which sends the operator after a
    server that did nothing wrong."""
    async def run() -> None:
        wire, _ = wired()
        wire.close()
        wire.connection_lost(None)
        assert wire.error == "closed"
        with pytest.raises(WireError, match="closed"):
            wire.check()

    asyncio.run(run())


def test_an_info_after_connecting_is_ignored() -> None:
    """A server sends INFO again after the connection is up (new cluster routes, lame-duck mode):
    taken as the first, it raised InvalidStateError in the parser and the readings' connection
    died with it, on every routine cluster change."""
    async def run() -> None:
        wire, _ = wired()
        got: list[Delivery | None] = []
        wire.subscribe("s", got.append)
        wire.data_received(b'INFO {"server_id": "a"}\r\nINFO {"ldm": true}\r\nMSG s 1 2\r\nok\r\n')
        assert wire.info.result() == {"server_id": "a"}
        assert got == [Delivery("s", b"", b"ok", None)]

    asyncio.run(run())


def test_a_connection_lost_before_the_servers_info_fails_the_connect_at_once() -> None:
    """A server that closes the connection before its INFO (a TLS port, a full server): the connect
    fails at once with why, and the next server is tried, instead of waiting out the timeout."""
    async def run() -> None:
        wire, _ = wired()
        wire.connected = False
        wire.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(WireError, match="reset by peer"):
            await asyncio.wait_for(wire.info, WAIT_S)

    asyncio.run(run())


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:1883", "http://127.0.0.1:8222", "mqtts://127.0.0.1:8883"])
def test_a_url_of_another_scheme_is_refused_by_name(url: str) -> None:
    """``mqtt://`` or ``http://`` given for the cluster (a common slip: the broker's URL, the
    monitoring port) is refused as not a NATS URL, naming it, instead of a connection error that
    sends the operator after a firewall."""
    with pytest.raises(WireError, match=f"not a NATS URL: {url}"):
        asyncio.run(natswire.connect([url]))


def test_an_error_on_an_open_connection_is_logged_and_a_refused_connect_is_left_to_its_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    """A ``-ERR`` on a working connection (a pull refused by the server's permissions) is said in the
    log: the connection may go on, and nothing else says why readings stopped. During the connect
    the refusal is raised by connect() instead, said once, not twice."""
    async def run() -> None:
        wire, _ = wired()
        wire.connected = False  # still connecting
        wire.data_received(b"-ERR 'Authorization Violation'\r\n")
        assert not said()
        wire.connected = True
        wire.data_received(b"-ERR 'Permissions Violation for Subscription to x'\r\n")

    def said() -> list[logging.LogRecord]:  # (the wire's own: asyncio's at another test's collection came too)
        return [r for r in caplog.records if r.name == natswire.log.name]

    with caplog.at_level("WARNING", logger=natswire.log.name):
        asyncio.run(run())
    [record] = said()
    assert "Permissions Violation for Subscription to x" in record.getMessage()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_out_of_reach_is_named_without_its_credentials() -> None:
    """The error naming the servers that could not be reached goes to the log and the terminal: the
    password or token written in the URL must not go with it."""
    port = free_port()
    with pytest.raises(WireError) as failed:
        asyncio.run(natswire.connect([f"nats://sg:pass-word_1@127.0.0.1:{port}", f"s3cret@127.0.0.1:{port}"]))
    said = str(failed.value)
    assert f"nats://127.0.0.1:{port}: " in said and said.count(f"127.0.0.1:{port}") == 2
    assert "pass-word_1" not in said and "s3cret" not in said and "sg:" not in said


def test_a_url_without_a_port_is_the_default_port_when_preferring(monkeypatch: pytest.MonkeyPatch) -> None:
    """``nats://b`` and ``nats://b:4222`` are the same server: the preferred one is found either way."""
    tried: list[str] = []

    async def fake_open(url: str, name: str) -> Any:
        tried.append(url)
        return url

    monkeypatch.setattr(natswire, "_open", fake_open)
    assert asyncio.run(natswire.connect(["nats://a", "nats://b"], prefer=urlsplit("nats://b:4222"))) == "nats://b"


def test_a_wire_lost_with_nobody_waiting_leaves_no_unretrieved_future(caplog: pytest.LogCaptureFixture) -> None:
    """A wire lost before its INFO (or with a flush given up) set its futures' exceptions with no one
    left to await them: asyncio logged "Future exception was never retrieved" as an ERROR when they
    were collected, into whatever ran then (another test's captured log failed it, in CI)."""
    import gc

    async def run() -> None:
        wire, _ = wired()
        wire._pongs.append(asyncio.get_running_loop().create_future())
        wire.connection_lost(None)

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(run())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
