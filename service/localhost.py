"""Helpers for programs on this machine: a free loopback port, the Mosquitto binary.

One copy serves the demo (its embedded broker), the benchmarks and the tests' broker fixtures.

>>> 0 < free_port() < 65536
True
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")  # Debian puts it outside PATH


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether ``port`` on the loopback address can be bound now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_mosquitto() -> str | None:
    """The ``mosquitto`` broker binary: on PATH, else where Debian installs it; None when absent."""
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PLACES if Path(p).is_file()), None)
