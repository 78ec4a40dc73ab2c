"""The daemon's small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``, 404 elsewhere.

prometheus_client's own server answers every path with metrics, which hides typos in probe
configs; this one answers the three paths a scraper and an orchestrator's probes ask for, each
from a callable it is given, and logs its errors in the daemon's log.

>>> from prometheus_client import CollectorRegistry
>>> server, thread = serve_http(CollectorRegistry(), "127.0.0.1", 0, ready=lambda: True)
>>> from http.client import HTTPConnection
>>> http = HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
>>> http.request("GET", "/readyz"); answer = http.getresponse()
>>> answer.status, answer.read().decode().strip()
(200, 'ready')
>>> http.close()
>>> shutdown_http(server, thread)
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("sensorguard.service.metrics")  # (its lines came from there before the split)


def serve_http(
    registry: CollectorRegistry, host: str, port: int, ready: Callable[[], bool],
    alive: Callable[[], bool] = lambda: True, why_not: Callable[[], list[str]] | None = None,
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``/metrics``, ``/healthz`` (``alive``) and ``/readyz`` (``ready``; a 503's body
    says ``why_not``, a line each) on a background thread; 404 elsewhere.

    prometheus_client's own server answers every path with metrics, which hides typos in probe
    configs, hence this wrapper. Port 0 binds a free port: read it from ``server.server_address``.
    Stop with :func:`shutdown_http`.
    """
    handler = _make_handler(registry, ready, alive, why_not)
    server_cls = _V6Server if ":" in host else _Server
    try:
        server = server_cls((host, port), handler)
    except OSError as exc:  # one line naming the setting, not "Address already in use"
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port} (metrics_host, metrics_port): "
                                 f"{exc.strerror or exc}") from None
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sensorguard-http", daemon=True
    )
    thread.start()
    return server, thread


def shutdown_http(server: ThreadingHTTPServer, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Stop serving, close the socket and wait for the server thread."""
    server.shutdown()
    server.server_close()
    thread.join(timeout)


class _Server(ThreadingHTTPServer):
    """The HTTP server, its errors in the daemon's log: socketserver printed a traceback on stderr
    for every client gone before its answer (a scrape's timeout, a probe's short one: 25 lines each,
    none of them JSON under ``log_json``, a walk). That is a debug line now; any other error one
    logged line with its traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        who = client_address[0] if isinstance(client_address, tuple) and client_address else client_address
        if isinstance(exc, ConnectionError):
            log.debug("http %s: the client left before its answer (%s)", who, type(exc).__name__)
        else:
            log.exception("http %s: answering failed", who)


class _V6Server(_Server):
    address_family = socket.AF_INET6


def _make_handler(registry: CollectorRegistry, ready: Callable[[], bool], alive: Callable[[], bool],
                  why_not: Callable[[], list[str]] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sensorguard"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            self._answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                status, content_type, body = 200, *_exposition(registry, self.headers.get("Accept", ""))
            elif path == "/healthz":
                ok = _safe_ready(alive)
                status, content_type, body = (200 if ok else 503), "text/plain; charset=utf-8", (
                    b"ok\n" if ok else b"stuck\n")
            elif path == "/readyz":  # with why_not, asked once: its reasons are the verdict (the workers'
                reasons = _reasons(why_not) if why_not is not None else None  # parent asks each worker)
                is_ready = not reasons if reasons is not None else _safe_ready(ready)
                status = 200 if is_ready else 503
                lines = ["ready\n"] if is_ready else ["not ready\n", *(f"- {r}\n" for r in reasons or ())]
                body = "".join(lines).encode()
                content_type = "text/plain; charset=utf-8"
            else:
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
            log.debug("http %s - " + format, self.address_string(), *args)

    return Handler


def _reasons(why_not: Callable[[], list[str]]) -> list[str]:
    """Why not ready, a line each (empty: ready); a failing list is a reason, not a crashed thread."""
    try:
        return [str(r) for r in why_not()]
    except Exception:  # noqa: BLE001 - the probe must still get its 503
        log.exception("listing why the daemon is not ready failed")
        return ["the readiness check failed (see the log)"]


def _exposition(registry: CollectorRegistry, accept: str) -> tuple[str, bytes]:
    """Text format by default; OpenMetrics when the scraper asks for it."""
    try:
        encoder, content_type = choose_encoder(accept)
        return content_type, encoder(registry)
    except Exception:  # noqa: BLE001 - an odd Accept header must not break scraping
        return CONTENT_TYPE_LATEST, generate_latest(registry)


def _safe_ready(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # noqa: BLE001 - a failing probe means not ready, not a crashed server thread
        log.exception("readiness check failed")
        return False
