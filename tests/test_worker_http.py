"""The ``serve --workers`` parent's requests to its workers: every worker asked at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sensorguard.service.worker_http import at_once, fetch, why_not_ready


@contextmanager
def workers_that_answer_together(n: int) -> Iterator[list[int]]:
    """``n`` loopback endpoints that answer only once all ``n`` were asked: asked one after another,
    the first waits out its timeout for a second that is never asked (as a frozen worker holds a
    sequential scrape), asked at once they all answer."""
    together = threading.Barrier(n)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                together.wait(timeout=5)
                body, status = f"ok {self.server.server_address[1]} {self.path}".encode(), 200
            except threading.BrokenBarrierError:
                body, status = b"alone", 503
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(n)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [server.server_address[1] for server in servers]
    finally:
        together.abort()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_every_worker_is_scraped_at_once_so_a_frozen_one_costs_its_timeout_once():
    """Found by a deploy walk: the parent read its workers one after another, 2 s each for a frozen
    one, and with two frozen a scrape took up to 20 s: past Prometheus's scrape timeout the whole
    parent read as down. Asked at once, the scrape waits for the slowest only."""
    with workers_that_answer_together(3) as ports:
        got = at_once(lambda port: fetch(port, "/metrics"), [ports[0], None, ports[1], ports[2]])
    assert got == [f"ok {ports[0]} /metrics", None, f"ok {ports[1]} /metrics", f"ok {ports[2]} /metrics"]


def test_readiness_asks_every_worker_at_once_too():
    with workers_that_answer_together(2) as ports:
        assert at_once(why_not_ready, list(ports)) == [None, None]


def test_one_worker_or_none_is_asked_in_place():
    assert at_once(lambda port: port * 2, [None, 21, None]) == [None, 42, None]
    assert at_once(lambda port: port, []) == []


def test_a_worker_given_its_port_during_the_probes_is_not_called_ready_unasked(monkeypatch):
    """A review: the parent read each worker's port for the probes and again to word its answer, up
    to the probes' timeout later: a restarting worker given its port meanwhile was never asked and
    left out, and ``/readyz`` said ready while it still started."""
    from types import SimpleNamespace

    import sensorguard.service.workers as workers

    starting, ready = SimpleNamespace(index=1, port=None), SimpleNamespace(index=0, port=10101)

    def probes(call, ports):
        assert ports == [10101, None]
        starting.port = 10102  # the supervisor's loop: the restarted worker said its port meanwhile
        return [None, None]

    monkeypatch.setattr(workers, "at_once", probes)
    assert workers.Supervisor.not_ready(SimpleNamespace(slots=[ready, starting])) == [
        "worker w1: not started, or restarting"]
