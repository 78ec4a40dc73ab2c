"""Connecting to the NATS servers of cluster mode, and their refusals as one readable line.

nats-py says little when a connection fails ("no servers available for connection") and much
when a request does (``ServiceUnavailableError: code=None ...``): a command needs one line naming
the cause (a wrong password, a server without JetStream), and a daemon a warning at most once a
minute per kind while it keeps trying.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from sensorguard.service.logs import RateLimiter, first_line
from sensorguard.service.settings_checks import hide_credentials

CONNECT_TIMEOUT_S = 5.0

log = logging.getLogger("sensorguard.service.cluster")  # (the lines operators know, and tests capture)


class ClusterError(ValueError):
    """A cluster that cannot be reached or set up as asked; the message is one readable line."""


async def connect(servers: tuple[str, ...], forever: bool = False, **callbacks: Any) -> Any:
    """A nats-py connection to ``servers``, or a :class:`ClusterError` naming them.

    ``forever``: a daemon's connection, reconnecting without limit (a command gives up after two
    tries); ``callbacks``: nats-py's ``disconnected_cb``, ``reconnected_cb``...
    """
    try:
        import nats
    except ImportError:
        raise ClusterError("cluster mode needs nats-py: pip install 'sensorguard[cluster]'") from None
    seen: list[str] = []  # what each try met: nats-py's own error says only "no servers available"
    connected: list[bool] = []  # once connected, a port that answered NATS before is no MQTT port
    where = ", ".join(hide_credentials(s) for s in servers)  # (a nats://user:secret@ URL is logged every 5 s)
    if (plain := await _offers_no_tls(servers)) is not None:
        raise ClusterError(f"{hide_credentials(plain)}: the server does not require TLS, and nats-py would go on "
                           "in plain text with it (the URL's credentials too): turn TLS on in the server (a tls "
                           "block in its config), or give nats:// to go without")

    async def _warn_error(exc: Exception) -> None:
        """A daemon's error callback: a warning naming the servers, at most one a minute per kind (a
        worker that could not reach NATS at start, a wrong password, said nothing: the errors were
        debug lines; then only "nats: [Errno 111] Connect call failed", no server named: a walk)."""
        if (count := _ERRORS.hit(type(exc).__name__)) is not None:
            log.warning("NATS %s: %s (%d such error(s) in the last minute)%s; trying again", where, first_line(exc),
                        count, "" if connected else not_nats([first_line(exc) or type(exc).__name__]))

    async def _log_error(exc: Exception) -> None:
        """A command's error callback: a debug line (nats-py's default prints a traceback for every
        failed try), and the error kept for the one line a failure says."""
        log.debug("nats: %s", exc)
        seen.append(first_line(exc) or type(exc).__name__)

    try:
        nc = await nats.connect(servers=list(servers), connect_timeout=CONNECT_TIMEOUT_S,
                                max_reconnect_attempts=-1 if forever else 2, allow_reconnect=True,
                                error_cb=_warn_error if forever else _log_error, **callbacks)
        connected.append(True)
        return nc
    except Exception as exc:  # noqa: BLE001 - nats-py raises several kinds; the user needs one line
        said = str(exc) or type(exc).__name__
        met = [m for m in dict.fromkeys(seen) if m not in said]  # (a wrong password said only the above: a walk)
        raise ClusterError(f"cannot reach the NATS servers {where}: {said}"
                           + (f" ({'; '.join(met[-2:])})" if met else "") + not_nats([said, *seen])) from None


async def _offers_no_tls(servers: tuple[str, ...]) -> str | None:
    """The first ``tls://`` server whose greeting (``INFO``) does not require TLS, else None. nats-py
    starts TLS only when the server requires it, whatever the URL's scheme: ``cluster init --cluster
    tls://...`` set a plain-text server up in plain text, without a word (a walk), where the docs
    promise TLS. A server out of reach or not speaking NATS is left to nats-py to report."""
    for server in servers:
        parts = urlsplit(server)
        if parts.scheme != "tls":
            continue
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 4222),
                                                    CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError):
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError):  # (ValueError: 64 KiB with no line end, not NATS)
            line = b""
        finally:
            writer.close()
        try:
            info = json.loads(line[len(b"INFO "):]) if line.startswith(b"INFO ") else None
        except ValueError:
            info = None
        if isinstance(info, dict) and not info.get("tls_required"):
            return server
    return None


def not_nats(errors: list[str]) -> str:
    """A hint when the tries met a listener that never spoke NATS: ``--cluster`` pointed at a node's
    MQTT port (1883) said only "no servers available for connection (TimeoutError)", its HTTP
    monitoring port "empty response from server when expecting INFO message", as "cannot reach"
    (a walk): the server was reached, on the wrong port."""
    if not any(error == "TimeoutError" or "expecting INFO" in error for error in errors):
        return ""
    return ("; no NATS server answered there: is it the client port (4222 by default), not the node's MQTT "
            "(1883) or HTTP monitoring (8222) port? (or a firewall dropping the connection)")


_ERRORS = RateLimiter(60.0)  # (one for the process: its connections share the quota)


def no_jetstream(exc: BaseException) -> str:
    """A hint when ``exc`` is nats-py's answer to a JetStream request nobody served: the server
    runs without JetStream. It read "ServiceUnavailableError: code=None err_code=None
    description='None'", every 5 s, and never said what was off (a walk)."""
    try:
        from nats.js.errors import ServiceUnavailableError
    except ImportError:  # (no nats-py: not cluster mode)
        return ""
    if isinstance(exc, ServiceUnavailableError) and not getattr(exc, "description", None):
        return ": no JetStream answered; start nats-server with JetStream on (-js, or jetstream {} in its config)"
    return ""
