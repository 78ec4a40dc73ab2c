"""The readings' lean NATS connection (service/natswire.py): its parser on frames cut anywhere, and
against real nats-server processes (skipped without one, failed under CI=true): messages and pull
statuses, credentials in the URL, TLS, and a lost server telling the pulls instead of leaving them
waiting. None of it needs nats-py."""

from __future__ import annotations

import asyncio
import time

import pytest

from sensorguard.nats_local import NatsError, NatsNode, free_ports
from sensorguard.service import natswire
from sensorguard.service.natswire import Delivery, Wire, WireError, stream_seq
from sensorguard.service.pull import Puller
from tests.nats import need_nats_server

HEADERS = b"NATS/1.0\r\nNats-Stream-Source: SENSORGUARD_IN 17 sensors.site-a.p1.readings\r\n\r\n"
STATUS = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n"
ACK = b"$JS.ACK.SENSORGUARD_READINGS.sg-p3.1.42.40.1700000000000000000.0"


class Capture:
    """What the wire writes (a transport's write end)."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def captured() -> tuple[Wire, Capture]:
    """A wire whose writes are kept (on the running loop, no server)."""
    wire, capture = Wire("t"), Capture()
    wire._transport = capture  # type: ignore[assignment]
    return wire, capture


def frames() -> bytes:
    payload = b'{"ts": 1, "values": {"a": 1.0}}'
    sizes = (len(HEADERS), len(HEADERS) + len(payload))
    return b"".join([
        b"INFO {\"server_id\": \"x\"}\r\n",
        b"HMSG sensorguard.readings.3.site-a.p1 7 %s %d %d\r\n%s%s\r\n" % (ACK, *sizes, HEADERS, payload),
        b"MSG plain.subject 7 5\r\nhello\r\n",
        b"MSG other.sid 9 2\r\nno\r\n",  # a subscription not here: dropped
        b"PING\r\n",
        b"MSG with.reply 7 _INBOX.r 0\r\n\r\n",
        b"HMSG _INBOX.x 7 %d %d\r\n%s\r\n" % (len(STATUS), len(STATUS), STATUS),
    ])


def test_the_parser_gives_the_same_messages_however_the_reads_are_cut():
    async def run() -> None:
        data = frames()
        want = None
        for cut in [len(data), 1, 2, 3, 7, 13, 64]:
            wire, capture = captured()
            got: list[Delivery | None] = []
            wire._subs[b"7"] = got.append
            for start in range(0, len(data), cut):
                wire.data_received(data[start:start + cut])
            assert not wire._buf, f"cut {cut}: {bytes(wire._buf)!r} left over"
            assert bytes(capture.written) == b"PONG\r\n"  # the server's PING answered, once
            assert wire.info.result() == {"server_id": "x"}
            if want is None:
                want = got
                assert got == [
                    Delivery("sensorguard.readings.3.site-a.p1", ACK, b'{"ts": 1, "values": {"a": 1.0}}', None),
                    Delivery("plain.subject", b"", b"hello", None),
                    Delivery("with.reply", b"_INBOX.r", b"", None),
                    Delivery("_INBOX.x", b"", b"", "408 Request Timeout"),
                ]
            assert got == want, f"cut {cut}"

    asyncio.run(run())


def test_acknowledgements_leave_in_one_write_and_skip_what_has_no_reply():
    async def run() -> None:
        wire, capture = captured()
        messages = [Delivery("s", b"$JS.ACK.a", b"", None), Delivery("s", b"", b"", None),
                    Delivery("s", b"$JS.ACK.b", b"", None)]
        wire.ack(messages)
        assert bytes(capture.written) == b"PUB $JS.ACK.a 0\r\n\r\nPUB $JS.ACK.b 0\r\n\r\n"
        capture.written.clear()
        wire.nak(messages[:1])
        assert bytes(capture.written) == b"PUB $JS.ACK.a 4\r\n-NAK\r\n"

    asyncio.run(run())


def test_a_flush_is_answered_by_its_own_pong_not_a_keepalive_one_and_fails_at_once_when_lost():
    async def run() -> None:
        wire, capture = captured()
        wire.connected = True
        wire._keepalive()  # a keepalive PING is out when the flush starts
        flush = asyncio.ensure_future(wire.flush(5))
        await asyncio.sleep(0)
        assert bytes(capture.written) == b"PING\r\nPING\r\n"
        wire.data_received(b"PONG\r\n")  # the keepalive's answer
        await asyncio.sleep(0)
        assert not flush.done()
        wire.data_received(b"-ERR 'Permissions Violation for Publish to x'\r\nPONG\r\n")  # not fatal
        await asyncio.wait_for(flush, 1)
        wire.connection_lost(None)
        started = time.monotonic()
        with pytest.raises(WireError, match="lost"):
            await wire.flush(5)
        assert time.monotonic() - started < 1

    asyncio.run(run())


def test_a_give_back_is_confirmed_by_jetstream_s_answer_and_refused_by_a_status():
    """The last nak carries a reply subject: an empty answer confirms it; a 503 (no consumer leader
    to apply it) is an error, not a confirmation; a message without a reply subject is skipped."""
    async def run(answer: bytes) -> bytes:
        wire, capture = captured()
        messages = [Delivery("s", b"$JS.ACK.a", b"", None), Delivery("s", b"$JS.ACK.b", b"", None),
                    Delivery("s", b"", b"", None)]
        task = asyncio.ensure_future(wire.nak_confirmed(messages, timeout=2))
        await asyncio.sleep(0)
        sub = bytes(capture.written).split(b"\r\n")[2].split()  # after the first nak: SUB <inbox> <sid>
        wire.data_received(answer % (sub[1], sub[2]))
        await task
        assert not wire._subs  # unsubscribed
        return bytes(capture.written)

    written = asyncio.run(run(b"MSG %s %s 0\r\n\r\n"))
    assert written.startswith(b"PUB $JS.ACK.a 4\r\n-NAK\r\nSUB _INBOX.")
    assert b"PUB $JS.ACK.b _INBOX." in written and written.count(b"-NAK") == 2
    status = b"NATS/1.0 503\r\n\r\n"
    with pytest.raises(WireError, match="503"):
        asyncio.run(run(b"HMSG %%s %%s %d %d\r\n%s\r\n" % (len(status), len(status), status)))


def test_the_stream_sequence_is_read_from_both_acknowledgement_subject_forms():
    def seq(reply: bytes) -> float:
        return stream_seq(Delivery("s", reply, b"", None))

    assert seq(ACK) == 42  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
    assert seq(b"$JS.ACK.hub.ACCHASH.S.c.1.77.70.1700000000000000000.3.rnd") == 77  # with domain and account
    assert seq(b"_INBOX.x") == float("inf") and seq(b"") == float("inf")  # not JetStream's: keeps its place


# --- against real servers ----------------------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path):
    """Start single nats-servers with extra configuration lines (authorization, TLS); all stopped after."""
    started: list[NatsNode] = []

    def start(name: str, extra: str = "") -> NatsNode:
        node = NatsNode(tmp_path, name, free_ports(2), None, None, need_nats_server(), extra=extra)
        started.append(node)
        try:
            node.start()
        except NatsError as exc:
            pytest.fail(str(exc))
        return node

    yield start
    for node in started:
        node.kill()


async def _round_trip(url: str, servers: list[str] | None = None) -> list[bytes]:
    """Subscribe on the wire, publish twice on it, read both back."""
    wire = await natswire.connect(servers or [url])
    try:
        got: list[bytes] = []
        arrived = asyncio.Event()
        wire.subscribe("t.>", lambda m: (got.append(m.data), arrived.set()) if m is not None else None)
        wire.publish("t.1", b"one")
        wire.publish("t.2", b"two", reply="_INBOX.x")
        await wire.flush()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5)
        return got
    finally:
        wire.close()


def test_credentials_in_the_url_are_sent_and_a_refusal_is_one_line(servers):
    with_user = servers("user", "authorization { user: sg, password: pass-word_1 }")
    url = f"nats://sg:pass-word_1@127.0.0.1:{with_user.port}"  # as nats-py sends it: as written
    assert asyncio.run(_round_trip(url)) == [b"one", b"two"]
    with pytest.raises(WireError, match="Authorization Violation") as refused:
        asyncio.run(_round_trip(f"nats://sg:wrong@127.0.0.1:{with_user.port}"))
    assert "wrong" not in str(refused.value)  # the password stays out of the message
    with_token = servers("token", "authorization { token: s3cret }")
    assert asyncio.run(_round_trip(f"nats://s3cret@127.0.0.1:{with_token.port}")) == [b"one", b"two"]


def test_the_first_server_that_answers_is_taken(servers):
    alive = servers("alive")
    dead_port = free_ports(1)[0]
    got = asyncio.run(_round_trip("", [f"nats://127.0.0.1:{dead_port}", f"nats://127.0.0.1:{alive.port}"]))
    assert got == [b"one", b"two"]
    with pytest.raises(WireError, match=str(dead_port)):
        asyncio.run(_round_trip(f"nats://127.0.0.1:{dead_port}"))


def test_tls_is_met_when_the_server_requires_it(servers, tmp_path, monkeypatch):
    from cryptography import x509

    from tests.test_security import make_ca, make_server_cert, write_pem

    ca_key, ca_cert = make_ca("nats-test-ca")
    key, cert = make_server_cert(ca_key, ca_cert, [x509.DNSName("localhost")])
    ca = write_pem(tmp_path / "ca.pem", cert=ca_cert)
    tls = servers("tls", f'tls {{ cert_file: "{write_pem(tmp_path / "s.pem", cert=cert)}", '
                         f'key_file: "{write_pem(tmp_path / "s.key", key=key)}" }}')
    url = f"tls://localhost:{tls.port}"
    with pytest.raises(WireError, match="certificate verify failed"):  # its CA is not trusted yet
        asyncio.run(_round_trip(url))
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the system's CAs, as OpenSSL finds them
    assert asyncio.run(_round_trip(url)) == [b"one", b"two"]
    assert asyncio.run(_round_trip(f"nats://localhost:{tls.port}")) == [b"one", b"two"]  # required: met


def test_a_lost_server_ends_the_pull_with_an_error(servers):
    server = servers("lost")

    async def run() -> None:
        wire = await natswire.connect([f"nats://127.0.0.1:{server.port}"])
        puller = Puller(wire, "NONE", "none", batch=8, expires_s=0.5, may_ask=lambda: True)
        puller.open()
        assert await puller.fetch(0.3) == []  # no such stream: refused, waits, nothing comes
        server.kill()
        started = time.monotonic()
        with pytest.raises(WireError, match="lost"):
            while time.monotonic() - started < 10:
                await puller.fetch(0.5)
        assert not wire.connected and time.monotonic() - started < 5

    asyncio.run(run())
