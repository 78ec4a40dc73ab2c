"""Helpers for programs on this machine: a free loopback port, the Mosquitto binary.

One copy serves the demo (its embedded broker), the benchmarks and the tests' broker fixtures.

>>> 0 < free_port() < 65536
True
"""

from __future__ import annotations

import random
import shutil
import socket
from pathlib import Path

EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
PORTS_FROM = 20000  # above the registered ports most local services use
MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")  # Debian puts it outside PATH


def free_port() -> int:
    """A loopback TCP port nothing listens on now.

    Chosen outside the kernel's ephemeral range when it can be, because a port the OS hands out for
    ``bind(0)`` is also one it hands out as the local end of any outgoing connection: between this
    call and the caller's own bind, a scrape or a client connection anywhere on the machine could
    take it (a test run failed once on "Address already in use" that way).
    """
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, below the ephemeral range where it leaves room, else from the OS."""
    low = min(_ephemeral_low(), 65536)
    if low - PORTS_FROM >= 4 * n + 1000:
        chosen: list[int] = []
        pick = random.SystemRandom()
        for _ in range(200 * n):
            port = pick.randrange(PORTS_FROM, low)
            if port not in chosen and port_free(port):
                chosen.append(port)
                if len(chosen) == n:
                    return chosen
    socks = [socket.socket() for _ in range(n)]  # all bound at once, so the OS cannot hand one out twice
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _ephemeral_low() -> int:
    """The lowest port the kernel uses for ``bind(0)`` and outgoing connections (Linux); 0 if unknown."""
    try:
        return int(Path(EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def port_free(port: int) -> bool:
    """Whether ``port`` on the loopback address can be bound now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except (OSError, OverflowError):  # (a port past 65535 is an OverflowError)
            return False
        return True


def find_mosquitto() -> str | None:
    """The ``mosquitto`` broker binary: on PATH, else where Debian installs it; None when absent."""
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PLACES if Path(p).is_file()), None)
