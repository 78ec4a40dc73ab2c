"""Connecting to the NATS servers of cluster mode, and their refusals as one readable line.

nats-py says little when a connection fails ("no servers available for connection") and much
when a request does (``ServiceUnavailableError: code=None ...``): a command needs one line naming
the cause (a wrong password, a server without JetStream), and a daemon a warning at most once a
minute per kind while it keeps trying.
"""

from __future__ import annotations

import logging
from typing import Any

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
    where = ", ".join(hide_credentials(s) for s in servers)  # (a nats://user:secret@ URL is logged every 5 s)

    async def _warn_error(exc: Exception) -> None:
        """A daemon's error callback: a warning naming the servers, at most one a minute per kind (a
        worker that could not reach NATS at start, a wrong password, said nothing: the errors were
        debug lines; then only "nats: [Errno 111] Connect call failed", no server named: a walk)."""
        if (count := _ERRORS.hit(type(exc).__name__)) is not None:
            log.warning("NATS %s: %s (%d such error(s) in the last minute); trying again", where, first_line(exc),
                        count)

    async def _log_error(exc: Exception) -> None:
        """A command's error callback: a debug line (nats-py's default prints a traceback for every
        failed try), and the error kept for the one line a failure says."""
        log.debug("nats: %s", exc)
        seen.append(first_line(exc) or type(exc).__name__)

    try:
        return await nats.connect(servers=list(servers), connect_timeout=CONNECT_TIMEOUT_S,
                                  max_reconnect_attempts=-1 if forever else 2, allow_reconnect=True,
                                  error_cb=_warn_error if forever else _log_error, **callbacks)
    except Exception as exc:  # noqa: BLE001 - nats-py raises several kinds; the user needs one line
        said = str(exc) or type(exc).__name__
        met = [m for m in dict.fromkeys(seen) if m not in said]  # (a wrong password said only the above: a walk)
        raise ClusterError(f"cannot reach the NATS servers {where}: {said}"
                           + (f" ({'; '.join(met[-2:])})" if met else "")) from None


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
