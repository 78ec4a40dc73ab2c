"""Signal handlers that only wake a thread, which then does the work.

A Python signal handler runs on the main thread between two bytecodes, wherever that thread is.
``stop.set()`` there could deadlock: ``Event.wait`` holds the event's lock for a few bytecodes
before it sleeps, and ``set`` takes the same lock, which is not re-entrant. A SIGTERM landing in
that window left ``serve``, a worker or ``replay`` waiting on itself forever, so ``systemctl stop``
ended in SIGKILL without the drain (found by CI: a replay ignored SIGTERM for a minute). So the
handler here takes no lock: it writes the signal's number to a pipe, and a relay thread, which
holds nothing the main thread holds, calls the action.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def on_signals(actions: Mapping[int, Callable[[], object]]) -> None:
    """Call ``actions[signum]()`` on a relay thread each time the process gets ``signum``.

    Must run on the main thread (Python installs signal handlers only there). Each call has its
    own pipe and relay thread, kept for the life of the process (a command calls it once or
    twice), so a later call for the same signal replaces only the handler.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("signal handlers can only be installed on the main thread")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):  # 64 KiB of signals not relayed: this one's is due
            os.write(write_end, bytes([signum]))

    def relay() -> None:
        while True:
            got = os.read(read_end, 64)
            for signum in got:
                try:
                    actions[signum]()
                except Exception:  # one failed action must not deafen the process to the next signal
                    log.exception("handling signal %s failed", signal.Signals(signum).name)

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for signum in actions:
        signal.signal(signum, handler)


def pass_on(asked: threading.Event, action: Callable[[], object]) -> None:
    """Call ``action`` each time ``asked`` is set, for ever (run it on a daemon thread). For a
    request a handler installed early records before its target exists (``serve``'s SIGHUP during
    the model's load); requests that come together are asked once (a reload loads the newest model
    anyway)."""
    while True:
        asked.wait()
        asked.clear()
        action()
